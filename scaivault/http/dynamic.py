"""/v1/dynamic: engines, roles, credentials and leases (spec core-concepts/dynamic-secrets, api-guides/dynamic-secrets;
the reference page is missing, so the layout is ScaiVault's: docs/dynamic-secrets.md).

Scopes: ``dynamic:read`` reads engines, roles and one's own leases; ``dynamic:generate`` obtains credentials and
renews or revokes one's own leases; ``dynamic:manage`` does all of that and manages engines and roles (with an admin
role for the tenant), reads and revokes everyone's leases, and revokes by prefix. A credential also needs ``read`` on
``dynamic/<engine>/creds/<role>`` by policy (an admin role covers it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field

from commands.dynamic import UNSET, DynamicCommands, EngineChanges, NewEngine
from projections.dynamic.reader import LEASE_STATES, DynamicReader
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.dynamic import check_engine_name, check_role_name
from scaivault.domain.errors import LeaseNotFound, ValidationFailed
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body

BASES = ("/v1/dynamic", "/v1/t/{tenant_id}/dynamic")
# The rate-limit table of the spec names lease operations at /v1/leases; they are served there too.
LEASE_BASES = ("/v1/dynamic/leases", "/v1/t/{tenant_id}/dynamic/leases", "/v1/leases", "/v1/t/{tenant_id}/leases")
READ, GENERATE, MANAGE = "dynamic:read", "dynamic:generate", "dynamic:manage"
DEFAULT_LIMIT = 100
_ENGINE_PATCHABLE = ("description", "config", "default_ttl", "max_ttl", "root_rotation_period")


class PageQuery(QueryModel):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class EngineListQuery(PageQuery):
    type: str | None = Field(default=None, max_length=32)


class LeaseListQuery(PageQuery):
    engine: str | None = Field(default=None, max_length=64)
    role: str | None = Field(default=None, max_length=64)
    state: str = Field(default="open", max_length=16)
    requested_by: str | None = Field(default=None, max_length=320)


class EngineIn(Strict):
    name: str
    type: str
    config: dict[str, Any] = Field(default_factory=dict)
    default_ttl: str | int | None = None
    max_ttl: str | int | None = None
    description: str | None = None
    root_rotation_period: str | int | None = None


class EnginePatchIn(Strict):
    description: str | None = None
    config: dict[str, Any] | None = None
    default_ttl: str | int | None = None
    max_ttl: str | int | None = None
    root_rotation_period: str | int | None = None

    def changes(self) -> EngineChanges:
        given = self.model_fields_set
        return EngineChanges(**{name: getattr(self, name) for name in _ENGINE_PATCHABLE if name in given})


class CredsIn(Strict):
    ttl: str | int | None = None
    public_key: str | None = Field(default=None, max_length=16384)
    valid_principals: list[str] | None = Field(default=None, max_length=64)


class RenewIn(Strict):
    increment: str | int | None = None


class RevokePrefixIn(Strict):
    prefix: str = Field(max_length=130)


def _engine(request: web.Request) -> str:
    return check_engine_name(request.match_info["engine"], "engine")


def _role(request: web.Request) -> str:
    return check_role_name(request.match_info["role"])


def _lease_id(request: web.Request) -> str:
    return path_id(request, "lease_id", LeaseNotFound, key="lease_id", max_length=64)


def _may_manage(caller: Caller) -> bool:
    return caller.principal.has_scope(MANAGE) and caller.principal.is_tenant_admin


async def _role_body(request: web.Request) -> dict[str, Any]:
    body = await read_json_object(request)
    if not isinstance(body, dict):
        raise ValidationFailed(fields=[{"field": "body", "message": "an object"}])
    return body


class DynamicApi:
    def __init__(self, callers: Callers, commands: DynamicCommands, reader: DynamicReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            engines = base + "/engines"
            one = engines + "/{engine}"
            roles = one + "/roles"
            table.add("GET", engines, self.list_engines, action="dynamic_engine_read")
            table.add("POST", engines, self.create_engine, action="dynamic_engine_create")
            table.add("GET", one, self.get_engine, action="dynamic_engine_read")
            table.add("PATCH", one, self.patch_engine, action="dynamic_engine_update")
            table.add("DELETE", one, self.delete_engine, action="dynamic_engine_delete")
            table.add("GET", one + "/health", self.engine_health, action="dynamic_engine_health")
            table.add("POST", one + "/health", self.engine_health, action="dynamic_engine_health")
            table.add("POST", one + "/rotate-root", self.rotate_root, action="dynamic_rotate_root")
            table.add("GET", one + "/public-key", self.public_key, action="dynamic_engine_read")
            table.add("GET", roles, self.list_roles, action="dynamic_role_read")
            table.add("POST", roles, self.create_role, action="dynamic_role_create")
            table.add("GET", roles + "/{role}", self.get_role, action="dynamic_role_read")
            table.add("PUT", roles + "/{role}", self.put_role, action="dynamic_role_write")
            table.add("PATCH", roles + "/{role}", self.patch_role, action="dynamic_role_update")
            table.add("DELETE", roles + "/{role}", self.delete_role, action="dynamic_role_delete")
            table.add("POST", one + "/creds/{role}", self.generate, action="dynamic_generate")
        for leases in LEASE_BASES:
            table.add("GET", leases, self.list_leases, action="dynamic_lease_read")
            table.add("POST", leases + "/revoke-prefix", self.revoke_prefix, action="dynamic_revoke")
            table.add("GET", leases + "/{lease_id}", self.get_lease, action="dynamic_lease_read")
            table.add("POST", leases + "/{lease_id}/renew", self.renew, action="dynamic_renew")
            table.add("POST", leases + "/{lease_id}/revoke", self.revoke, action="dynamic_revoke")

    # ---- engines ------------------------------------------------------------------------------------------------

    async def _reading(self, request: web.Request) -> tuple[Caller, str]:
        who = await self._callers.with_any_scope(request, READ, MANAGE)
        return who, who.require_tenant()

    async def list_engines(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        query = parse_query(EngineListQuery, request)
        engine_type = query.type
        if engine_type == "database":
            raise ValidationFailed(fields=[{"field": "type", "message": "name the plugin: database.postgresql, ..."}])
        return json_response(await self._reader.engines(tenant_id, engine_type=engine_type, limit=query.limit,
                                                        cursor=query.cursor))

    async def create_engine(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, MANAGE)
        body = parse_body(EngineIn, await read_json_object(request))
        engine = await self._commands.create_engine(NewEngine(
            name=body.name, engine_type=body.type, config=body.config, default_ttl=body.default_ttl,
            max_ttl=body.max_ttl, description=body.description, root_rotation_period=body.root_rotation_period,
        ), actor_of(request, who), request[ACCESS])
        document = await self._reader.engine(tenant_id, engine.name)
        return committed_response(request, document, headers={"Location": f"/v1/dynamic/engines/{engine.name}"})

    async def get_engine(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        return json_response(await self._reader.engine(tenant_id, _engine(request)))

    async def patch_engine(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, MANAGE)
        name = _engine(request)
        body = parse_body(EnginePatchIn, await read_json_object(request))
        changes = body.changes()
        if changes.config is not UNSET and changes.config is None:
            raise ValidationFailed(fields=[{"field": "config", "message": "may not be null"}])
        await self._commands.change_engine(name, changes, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.engine(tenant_id, name))

    async def delete_engine(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, MANAGE)
        await self._commands.delete_engine(_engine(request), actor_of(request, who), request[ACCESS])
        return committed_response(request)

    async def engine_health(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, MANAGE)
        name = _engine(request)
        request[ACCESS].extra["engine"] = name
        return json_response(await self._commands.health(name, actor_of(request, who)))

    async def rotate_root(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, MANAGE)
        name = _engine(request)
        version = await self._commands.rotate_root(name, actor_of(request, who), request[ACCESS])
        engine = await self._reader.engine(tenant_id, name)
        return committed_response(request, {
            "engine": name, "root_credentials_path": engine["config"].get("root_credentials_path"),
            "version": version, "rotated_at": engine["root_rotated_at"],
        })

    async def public_key(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        name = _engine(request)
        return json_response({"engine": name, "public_key": await self._commands.ca_public_key(tenant_id, name)})

    # ---- roles --------------------------------------------------------------------------------------------------

    async def list_roles(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        return json_response(await self._reader.roles(tenant_id, _engine(request)))

    async def get_role(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._reading(request)
        return json_response(await self._reader.role(tenant_id, _engine(request), _role(request)))

    async def create_role(self, request: web.Request) -> web.Response:
        body = await _role_body(request)
        return await self._write_role(request, body.pop("name", None), body, "create")

    async def put_role(self, request: web.Request) -> web.Response:
        body = await _role_body(request)
        name = _role(request)
        if body.pop("name", name) != name:
            raise ValidationFailed(fields=[{"field": "name", "message": "differs from the role in the path"}])
        return await self._write_role(request, name, body, "put")

    async def patch_role(self, request: web.Request) -> web.Response:
        body = await _role_body(request)
        name = _role(request)
        if body.pop("name", name) != name:
            raise ValidationFailed(fields=[{"field": "name", "message": "a role cannot be renamed"}])
        return await self._write_role(request, name, body, "patch")

    async def _write_role(self, request: web.Request, name: object, body: dict[str, Any], mode: str) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, MANAGE)
        engine = _engine(request)
        if name is None:
            raise ValidationFailed(fields=[{"field": "name", "message": "required"}])
        _, created = await self._commands.write_role(engine, name, body, actor_of(request, who), mode=mode,
                                                     access=request[ACCESS])
        document = await self._reader.role(tenant_id, engine, str(name))
        headers = {"Location": f"/v1/dynamic/engines/{engine}/roles/{name}"} if created else None
        return committed_response(request, document, headers=headers)

    async def delete_role(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, MANAGE)
        await self._commands.delete_role(_engine(request), _role(request), actor_of(request, who), request[ACCESS])
        return committed_response(request)

    # ---- credentials and leases ---------------------------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, GENERATE, MANAGE)
        who.require_tenant()
        engine, role = _engine(request), _role(request)
        raw = await read_json_object(request) if request.can_read_body else {}
        body = parse_body(CredsIn, raw)
        parameters = {key: value for key, value in (("public_key", body.public_key),
                                                    ("valid_principals", body.valid_principals)) if value is not None}
        issued = await self._commands.issue(engine, role, ttl=body.ttl, parameters=parameters,
                                            actor=actor_of(request, who), access=request[ACCESS])
        lease = issued.lease
        return json_response({
            "lease_id": lease.lease_id,
            "engine": engine,
            "role": role,
            "ttl": int((lease.expires_at - lease.issued_at).total_seconds()),
            "issued_at": lease.issued_at,
            "expires_at": lease.expires_at,
            "max_expires_at": lease.max_expires_at,
            "renewable": lease.renewable,
            "data": issued.data,
        }, status=201)

    async def _lease_reader(self, request: web.Request) -> tuple[Caller, str, str | None]:
        """The caller, its tenant, and whose leases it may see (None: everyone's)."""
        who = await self._callers.with_any_scope(request, READ, GENERATE, MANAGE)
        tenant_id = who.require_tenant()
        return who, tenant_id, None if _may_manage(who) else who.identity_id

    async def list_leases(self, request: web.Request) -> web.Response:
        who, tenant_id, only = await self._lease_reader(request)
        query = parse_query(LeaseListQuery, request)
        if query.state not in LEASE_STATES:
            raise ValidationFailed(fields=[{"field": "state", "message": f"one of {', '.join(LEASE_STATES)}"}])
        if only is not None and query.requested_by not in (None, only):
            raise ValidationFailed(fields=[{"field": "requested_by", "message": "others' leases need dynamic:manage "
                                                                               "and an admin role"}])
        return json_response(await self._reader.leases(
            tenant_id, engine=query.engine, role=query.role, state=query.state,
            requested_by=only or query.requested_by, limit=query.limit, cursor=query.cursor,
        ))

    async def get_lease(self, request: web.Request) -> web.Response:
        _, tenant_id, only = await self._lease_reader(request)
        return json_response(await self._reader.lease(tenant_id, _lease_id(request), requested_by=only))

    async def renew(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, GENERATE, MANAGE)
        lease_id = _lease_id(request)
        raw = await read_json_object(request) if request.can_read_body else {}
        body = parse_body(RenewIn, raw)
        lease = await self._commands.renew(lease_id, body.increment, actor_of(request, who), request[ACCESS])
        return committed_response(request, {
            "lease_id": lease.lease_id, "expires_at": lease.expires_at, "max_expires_at": lease.max_expires_at,
            "ttl": max(0, int((lease.expires_at - utcnow()).total_seconds())), "renewable": lease.renewable,
        })

    async def revoke(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, GENERATE, MANAGE)
        tenant_id = who.require_tenant()
        lease_id = _lease_id(request)
        await self._commands.revoke(lease_id, actor_of(request, who), request[ACCESS])
        document = await self._reader.lease(tenant_id, lease_id)
        return committed_response(request, document)

    async def revoke_prefix(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, MANAGE)
        body = parse_body(RevokePrefixIn, await read_json_object(request))
        totals = await self._commands.revoke_prefix(body.prefix, actor_of(request, who))
        request[ACCESS].extra.update(prefix=body.prefix, **totals)
        return json_response({"prefix": body.prefix, **totals})

