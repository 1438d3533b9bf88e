"""Sync runs over HTTP: start one from ScaiKey (``identity:admin``, within the caller's reach), and read the history
(``identity:read``; which runs a caller sees is the directory's rule)."""

from __future__ import annotations

from aiohttp import web

from projections.identity.directory import IdentityDirectory
from projections.tenant_directory import TenantDirectory
from scaivault.auth.caller import Caller
from scaivault.domain.errors import InvalidRequest, TenantAccessDenied
from scaivault.http.context import Callers
from scaivault.http.identity.parameters import PageQuery, SyncScopeQuery, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.query import parse_query
from scaivault.http.responses import committed_response, json_response
from scaivault.http.routing import RouteTable
from scaivault.identity.sync import IdentitySynchronizer, SyncScope

ADMIN_SCOPE = "identity:admin"
READ_SCOPE = "identity:read"


class IdentitySyncApi:
    def __init__(
        self,
        callers: Callers,
        synchronizer: IdentitySynchronizer,
        directory: IdentityDirectory,
        tenants: TenantDirectory,
    ) -> None:
        self._callers = callers
        self._synchronizer = synchronizer
        self._directory = directory
        self._tenants = tenants

    def add_routes(self, table: RouteTable) -> None:
        table.add("POST", "/v1/identity/sync", self.start_sync, action="identity_sync")
        # Before /sync/{sync_id}, which would take "history" for an id.
        table.add("GET", "/v1/identity/sync/history", self.sync_history, action="identity_read")
        table.add("GET", "/v1/identity/sync/{sync_id}", self.get_sync, action="identity_read")

    async def _scope(self, who: Caller, query: SyncScopeQuery) -> SyncScope:
        """What the caller may sync: anything (super_admin), its partner or one of its tenants (partner admins), its
        own tenant (anyone else). Naming something outside that is ``tenant_access_denied``."""
        partner_id, tenant_id, principal = query.partner_id, query.tenant_id, who.principal
        tenant_partner = await self._tenants.partner_of(tenant_id) if tenant_id is not None else None
        if tenant_id is not None and partner_id is not None and tenant_partner not in (None, partner_id):
            raise InvalidRequest("The tenant does not belong to that partner", parameter="tenant_id")
        if principal.has_role("super_admin"):
            return SyncScope(partner_id=partner_id or tenant_partner, tenant_id=tenant_id)
        own_partner = who.require_partner()
        if partner_id not in (None, own_partner):
            raise TenantAccessDenied("The partner is not yours", partner_id=partner_id)
        if principal.is_partner_admin:
            if tenant_id is not None and tenant_partner != own_partner:
                raise TenantAccessDenied("The tenant is not one of your partner's tenants", tenant_id=tenant_id)
            return SyncScope(partner_id=own_partner, tenant_id=tenant_id)
        own_tenant = who.require_tenant()
        if tenant_id not in (None, own_tenant) or (partner_id is not None and tenant_id is None):
            raise TenantAccessDenied("Only partner admins may sync beyond their own tenant", tenant_id=tenant_id)
        return SyncScope(partner_id=own_partner, tenant_id=own_tenant)

    async def start_sync(self, request: web.Request) -> web.Response:
        who = await self._callers.caller(request)
        who.require_scope(ADMIN_SCOPE)
        scope = await self._scope(who, parse_query(SyncScopeQuery, request))
        run = await self._synchronizer.start(scope, actor_of(request, who), access=request[ACCESS])
        return committed_response(
            request,
            {"sync_id": run.sync_id, "status": run.status, "started_at": run.started_at,
             "partner_id": run.partner_id, "tenant_id": run.tenant_id},
            headers={"Location": f"/v1/identity/sync/{run.sync_id}"},
        )

    async def _reader(self, request: web.Request) -> Caller:
        who = await self._callers.caller(request)
        who.require_scope(READ_SCOPE)
        return who

    async def sync_history(self, request: web.Request) -> web.Response:
        who = await self._reader(request)
        query = parse_query(PageQuery, request)
        return json_response((await self._directory.sync_runs(who, query.page_request())).document())

    async def get_sync(self, request: web.Request) -> web.Response:
        who = await self._reader(request)
        return json_response(await self._directory.sync_run(who, request.match_info["sync_id"]))
