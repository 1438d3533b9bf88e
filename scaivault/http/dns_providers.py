"""/v1/dns/providers: the DNS providers ACME DNS-01 challenges write their TXT records through (spec
reference/dns-providers, tutorials/acme-wildcard-cert step 1). Decisions where the spec is silent:
docs/dns-providers.md.

Reading needs ``pki:admin`` or ``pki:issue``; creating, changing, deleting and verifying need ``pki:admin`` and an
admin role for the tenant (``commands/dns_providers.py``). Everything acts in the caller's tenant (or
``/v1/t/{tenant_id}/`` for partner admins). No answer holds a credential: ``credential_fields`` names them.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool

from commands.dns_providers import DnsProviderChanges, DnsProviderCommands, NewDnsProvider
from projections.dns_providers.reader import DnsProviderReader
from scaivault.auth.caller import Caller
from scaivault.domain.dns_providers import MAX_ZONES, PROVIDER_TYPES
from scaivault.domain.errors import DnsProviderNotFound, ValidationFailed
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Flag, Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null

BASES = ("/v1/dns/providers", "/v1/t/{tenant_id}/dns/providers")
ADMIN_SCOPE = "pki:admin"
READ_SCOPES = ("pki:admin", "pki:issue")
DEFAULT_LIMIT = 100
_PATCHABLE = ("name", "description", "managed_zones", "config", "credentials", "is_active")


class DnsProviderListQuery(QueryModel):
    provider_type: str | None = Field(default=None, max_length=32)
    include_inactive: Flag = True
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


# Shapes only (422 validation_error); what each provider type's credentials and config hold is the domain's to say.
class DnsProviderIn(Strict):
    name: str
    provider_type: str
    credentials: dict[str, Any]
    managed_zones: list[str] = Field(max_length=MAX_ZONES)
    config: dict[str, Any] | None = None
    description: str | None = None
    is_active: StrictBool = True
    verify: StrictBool = False


class DnsProviderPatchIn(Strict):
    name: str | None = None
    description: str | None = None
    managed_zones: list[str] | None = Field(default=None, max_length=MAX_ZONES)
    config: dict[str, Any] | None = None  # null removes every config field
    credentials: dict[str, Any] | None = None
    is_active: StrictBool | None = None
    verify: StrictBool = False

    _not_null = refuse_null("name", "managed_zones", "credentials", "is_active",
                            message="may not be null (only description and config may be cleared)")

    def changes(self) -> DnsProviderChanges:
        given = self.model_fields_set
        return DnsProviderChanges(
            **{name: getattr(self, name) for name in _PATCHABLE if name in given}, verify=self.verify,
        )


def _provider_id(request: web.Request) -> str:
    return path_id(request, "provider_id", DnsProviderNotFound, key="dns_provider_id", max_length=64)


class DnsProvidersApi:
    def __init__(self, callers: Callers, commands: DnsProviderCommands, reader: DnsProviderReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            one = base + "/{provider_id}"
            table.add("GET", base, self.list_providers, action="dns_provider_read")
            table.add("POST", base, self.create_provider, action="dns_provider_create")
            table.add("GET", one, self.get_provider, action="dns_provider_read")
            table.add("PATCH", one, self.patch_provider, action="dns_provider_update")
            table.add("DELETE", one, self.delete_provider, action="dns_provider_delete")
            table.add("POST", one + "/verify", self.verify_provider, action="dns_provider_verify")

    async def _reading(self, request: web.Request) -> tuple[Caller, str]:
        who = await self._callers.with_any_scope(request, *READ_SCOPES)
        return who, who.require_tenant()

    async def list_providers(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        query = parse_query(DnsProviderListQuery, request)
        if query.provider_type is not None and query.provider_type not in PROVIDER_TYPES:
            message = f"one of {', '.join(PROVIDER_TYPES)}"
            raise ValidationFailed(fields=[{"field": "provider_type", "message": message}])
        return json_response(await self._reader.providers(
            tenant_id, provider_type=query.provider_type, active_only=not query.include_inactive, limit=query.limit,
            cursor=query.cursor,
        ))

    async def get_provider(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        return json_response(await self._reader.provider(tenant_id, _provider_id(request)))

    async def create_provider(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, ADMIN_SCOPE)
        body = parse_body(DnsProviderIn, await read_json_object(request))
        new = NewDnsProvider(
            name=body.name, provider_type=body.provider_type, credentials=body.credentials,
            managed_zones=body.managed_zones, config=body.config, description=body.description,
            is_active=body.is_active, verify=body.verify,
        )
        provider = await self._commands.create(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.provider(tenant_id, provider.provider_id)
        return committed_response(
            request, document, headers={"Location": f"/v1/dns/providers/{provider.provider_id}"}
        )

    async def patch_provider(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, ADMIN_SCOPE)
        provider_id = _provider_id(request)
        body = parse_body(DnsProviderPatchIn, await read_json_object(request))
        await self._commands.change(provider_id, body.changes(), actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.provider(tenant_id, provider_id))

    async def delete_provider(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, ADMIN_SCOPE)
        provider_id = _provider_id(request)
        await self._commands.delete(provider_id, actor_of(request, who), request[ACCESS])
        return committed_response(request)

    async def verify_provider(self, request: web.Request) -> web.Response:
        """Try the stored credentials now (any body is ignored); nothing is stored."""
        who, _ = await self._callers.in_tenant(request, ADMIN_SCOPE)
        provider_id = _provider_id(request)
        zones = await self._commands.verify(provider_id, actor_of(request, who), request[ACCESS])
        return json_response({"id": provider_id, "ok": True, "zones": zones})
