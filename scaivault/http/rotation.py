"""/v1/rotation: rotation policies, attaching secrets, rotating now, history and what is due (spec
reference/rotation, api-guides/rotation, core-concepts/rotation). Decisions where the spec is silent:
docs/rotation.md.

Scopes as the spec names them: managing policies needs ``admin``; rotating now ``secrets:rotate``; history
``audit:read``; the due list ``secrets:rotate`` or ``admin`` (without ``admin`` it shows only the secrets the
caller may list). Rotation policies belong to a tenant.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field, StrictBool

from commands.rotation import PolicyOwner, RotationCommands
from projections.rotation.reader import HistoryStatus, RotationReader
from scaivault.auth.caller import Caller
from scaivault.domain.errors import InsufficientScope, RotationPolicyNotFound
from scaivault.domain.paths import parse_path
from scaivault.domain.secrets import SecretAddress
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Flag, Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null

BASES = ("/v1/rotation", "/v1/t/{tenant_id}/rotation")
ADMIN_SCOPE = "admin"
ROTATE_SCOPE = "secrets:rotate"
HISTORY_SCOPE = "audit:read"
DEFAULT_LIMIT = 100
MAX_WITHIN_HOURS = 24 * 366


class PolicyListQuery(QueryModel):
    active_only: Flag = False
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class HistoryQuery(QueryModel):
    status: HistoryStatus | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class DueQuery(QueryModel):
    within_hours: int = Field(default=24, ge=0, le=MAX_WITHIN_HOURS)
    include_overdue: Flag = True
    policy_id: str | None = Field(default=None, max_length=80)


# Durations and ids are checked by the domain (400 invalid_duration / invalid_request); shapes here (422).
class PolicyIn(Strict):
    name: str
    interval: str
    description: str | None = None
    grace_period: str = "48h"
    warn_before: str | list[str] | None = None
    auto_generate: StrictBool = False
    secret_policy_id: str | None = None
    webhook_ids: list[str] | None = None
    is_active: StrictBool = True


class PolicyPatchIn(Strict):
    name: str | None = None
    interval: str | None = None
    description: str | None = None
    grace_period: str | None = None
    warn_before: str | list[str] | None = None
    auto_generate: StrictBool | None = None
    secret_policy_id: str | None = None
    webhook_ids: list[str] | None = None
    is_active: StrictBool | None = None

    _not_null = refuse_null("name", "interval", "grace_period", "auto_generate", "is_active")


class AssignmentIn(Strict):
    secret_path: str = Field(max_length=600)


class RotateIn(Strict):
    secret_paths: list[str] | None = Field(default=None, max_length=1000)


def _policy_id(request: web.Request) -> str:
    return path_id(request, "policy_id", RotationPolicyNotFound, key="rotation_policy_id", max_length=80)


def _owner(who: Caller) -> PolicyOwner:
    return PolicyOwner(tenant_id=who.require_tenant(), partner_id=who.partner_id or "")


def _address(owner: PolicyOwner, raw_path: str) -> SecretAddress:
    return SecretAddress(owner=owner.tenant_id, partner_id=owner.partner_id, tenant_id=owner.tenant_id,
                         path=parse_path(raw_path))


class RotationApi:
    def __init__(self, callers: Callers, commands: RotationCommands, reader: RotationReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            policies = base + "/policies"
            one = policies + "/{policy_id}"
            table.add("GET", policies, self.list_policies, action="rotation_policy_read")
            table.add("POST", policies, self.create_policy, action="rotation_policy_create")
            table.add("GET", one, self.get_policy, action="rotation_policy_read")
            table.add("PATCH", one, self.patch_policy, action="rotation_policy_update")
            table.add("DELETE", one, self.delete_policy, action="rotation_policy_delete")
            table.add("POST", one + "/enable", self.enable_policy, action="rotation_policy_update")
            table.add("POST", one + "/disable", self.disable_policy, action="rotation_policy_update")
            table.add("POST", one + "/secrets", self.assign_secret, action="rotation_assign")
            table.add("DELETE", one + "/secrets/{secret_path:.+}", self.unassign_secret, action="rotation_unassign")
            table.add("POST", one + "/rotate", self.rotate_now, action="rotate")
            table.add("GET", one + "/history", self.history, action="rotation_read")
            table.add("GET", base + "/due", self.due, action="rotation_read")
            table.add("GET", base + "/pending", self.pending, action="rotation_read")

    async def _admin(self, request: web.Request) -> tuple[Caller, PolicyOwner]:
        who = await self._callers.with_scope(request, ADMIN_SCOPE)
        return who, _owner(who)

    # ---- policies -------------------------------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        _, owner = await self._admin(request)
        query = parse_query(PolicyListQuery, request)
        return json_response(await self._reader.policies(
            owner.tenant_id, active_only=query.active_only, limit=query.limit, cursor=query.cursor
        ))

    async def create_policy(self, request: web.Request) -> web.Response:
        who, owner = await self._admin(request)
        body = parse_body(PolicyIn, await read_json_object(request))
        policy = await self._commands.create(owner, body.model_dump(), actor_of(request, who), request[ACCESS])
        document = await self._reader.policy(owner.tenant_id, policy.policy_id)
        return committed_response(request, document,
                                  headers={"Location": f"/v1/rotation/policies/{policy.policy_id}"})

    async def get_policy(self, request: web.Request) -> web.Response:
        _, owner = await self._admin(request)
        return json_response(await self._reader.policy(owner.tenant_id, _policy_id(request)))

    async def patch_policy(self, request: web.Request) -> web.Response:
        who, owner = await self._admin(request)
        policy_id = _policy_id(request)
        body = parse_body(PolicyPatchIn, await read_json_object(request))
        changes = {name: getattr(body, name) for name in body.model_fields_set}
        await self._commands.change(owner, policy_id, changes, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.policy(owner.tenant_id, policy_id))

    async def enable_policy(self, request: web.Request) -> web.Response:
        return await self._set_active(request, True)

    async def disable_policy(self, request: web.Request) -> web.Response:
        return await self._set_active(request, False)

    async def _set_active(self, request: web.Request, active: bool) -> web.Response:
        who, owner = await self._admin(request)
        policy_id = _policy_id(request)
        await self._commands.change(owner, policy_id, {"is_active": active}, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.policy(owner.tenant_id, policy_id))

    async def delete_policy(self, request: web.Request) -> web.Response:
        who, owner = await self._admin(request)
        policy_id = _policy_id(request)
        detached = await self._commands.delete(owner, policy_id, actor_of(request, who), request[ACCESS])
        return json_response({"id": policy_id, "deleted": True, "detached_secrets": detached})

    # ---- attachments ----------------------------------------------------------------------------------------------

    async def assign_secret(self, request: web.Request) -> web.Response:
        who, owner = await self._admin(request)
        policy_id = _policy_id(request)
        body = parse_body(AssignmentIn, await read_json_object(request))
        address = _address(owner, body.secret_path)
        request[ACCESS].extra["path"] = address.path
        assignment = await self._commands.attach(owner, policy_id, address, actor_of(request, who), request[ACCESS])
        return committed_response(request, assignment)

    async def unassign_secret(self, request: web.Request) -> web.Response:
        who, owner = await self._admin(request)
        policy_id = _policy_id(request)
        address = _address(owner, request.match_info["secret_path"])
        await self._commands.detach(owner, policy_id, address, actor_of(request, who), request[ACCESS])
        return json_response({"rotation_policy_id": policy_id, "secret_path": address.path, "detached": True})

    # ---- rotating and reading what happened -----------------------------------------------------------------------

    async def rotate_now(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ROTATE_SCOPE)
        owner = _owner(who)
        policy_id = _policy_id(request)
        body = parse_body(RotateIn, await read_json_object(request)) if request.can_read_body else RotateIn()
        items = await self._commands.rotate_now(
            owner, policy_id, body.secret_paths, lambda path: _address(owner, path), actor_of(request, who),
            request[ACCESS],
        )
        return json_response(items)

    async def history(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, HISTORY_SCOPE)
        policy_id = _policy_id(request)
        query = parse_query(HistoryQuery, request)
        return json_response(await self._reader.history(
            who.require_tenant(), policy_id, status=query.status, limit=query.limit, cursor=query.cursor
        ))

    async def due(self, request: web.Request) -> web.Response:
        who = await self._callers.caller(request)
        if not (who.principal.has_scope(ROTATE_SCOPE) or who.principal.has_scope(ADMIN_SCOPE)):
            raise InsufficientScope(f"This request needs the scope {ROTATE_SCOPE} or {ADMIN_SCOPE}",
                                    required_scope=ROTATE_SCOPE)
        query = parse_query(DueQuery, request)
        return json_response(await self._reader.due(
            who, within_hours=query.within_hours, include_overdue=query.include_overdue, policy_id=query.policy_id,
        ))

    async def pending(self, request: web.Request) -> web.Response:
        """Deprecated alias of ``/v1/rotation/due``: the same answer, marked so (RFC 9745 ``Deprecation``)."""
        response = await self.due(request)
        response.headers["Deprecation"] = "true"
        response.headers["Link"] = '</v1/rotation/due>; rel="successor-version"'
        return response
