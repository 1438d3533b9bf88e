"""Sync runs over HTTP: start one from ScaiKey (``identity:admin``; the synchronizer confines it to the caller's
reach), and read the history (``identity:read``; which runs a caller sees is the directory's rule)."""

from __future__ import annotations

from aiohttp import web

from projections.identity.directory import IdentityDirectory
from scaivault.http.context import Callers, actor_of
from scaivault.http.identity.parameters import PageQuery, SyncScopeQuery
from scaivault.http.keys import ACCESS
from scaivault.http.query import parse_query
from scaivault.http.responses import committed_response, json_response
from scaivault.http.routing import RouteTable
from scaivault.identity.sync import IdentitySynchronizer, SyncScope

ADMIN_SCOPE = "identity:admin"
READ_SCOPE = "identity:read"


class IdentitySyncApi:
    def __init__(self, callers: Callers, synchronizer: IdentitySynchronizer, directory: IdentityDirectory) -> None:
        self._callers = callers
        self._synchronizer = synchronizer
        self._directory = directory

    def add_routes(self, table: RouteTable) -> None:
        table.add("POST", "/v1/identity/sync", self.start_sync, action="identity_sync")
        # Before /sync/{sync_id}, which would take "history" for an id.
        table.add("GET", "/v1/identity/sync/history", self.sync_history, action="identity_read")
        table.add("GET", "/v1/identity/sync/{sync_id}", self.get_sync, action="identity_read")

    async def start_sync(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN_SCOPE)
        query = parse_query(SyncScopeQuery, request)
        requested = SyncScope(partner_id=query.partner_id, tenant_id=query.tenant_id)
        run = await self._synchronizer.start(requested, actor_of(request, who), access=request[ACCESS])
        return committed_response(
            request,
            {"sync_id": run.sync_id, "status": run.status, "started_at": run.started_at,
             "partner_id": run.partner_id, "tenant_id": run.tenant_id},
            headers={"Location": f"/v1/identity/sync/{run.sync_id}"},
        )

    async def sync_history(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        query = parse_query(PageQuery, request)
        return json_response((await self._directory.sync_runs(who, query.page_request())).document())

    async def get_sync(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        return json_response(await self._directory.sync_run(who, request.match_info["sync_id"]))
