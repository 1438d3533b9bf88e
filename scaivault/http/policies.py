"""/v1/policies: access policies and their bindings (spec reference/policies, api-guides/policies,
core-concepts/policies-and-permissions). Decisions where the spec is silent: docs/policies.md.

Reading needs ``policies:read``; changing needs ``policies:write`` *and* an admin role (``tenant_admin`` for the
caller's tenant's policies, ``partner_admin`` for partner-scoped ones): otherwise anyone allowed to write policies
could bind themselves a policy granting ``admin`` on ``**``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool, field_validator

from commands.policies import UNSET, PolicyAccess, PolicyChanges, PolicyOwner
from commands.secrets import Actor
from commands.unit_of_work import utcnow
from projections.policies import queries
from scaivault.auth.authorization import role_decision
from scaivault.auth.principal import Principal
from scaivault.domain.errors import AccessDenied, InvalidCursor, InvalidRequest, PolicyNotFound
from scaivault.domain.paths import parse_path
from scaivault.domain.policies import PERMISSIONS, RequestContext, Subject, canonical_identity, parse_ip
from scaivault.domain.timestamps import in_utc
from scaivault.http.client_ip import client_ip
from scaivault.http.context import Caller, caller
from scaivault.http.cursors import decode_cursor, encode_cursor
from scaivault.http.keys import ACCESS, CONTAINER, REQUEST_ID
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.schemas import Strict, parse_body

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
Permission = Literal[PERMISSIONS]  # type: ignore[valid-type]


# ---- bodies: shapes here (422 validation_error); rule semantics in the domain (400 invalid_policy/invalid_glob) ----


class TimeWindowIn(Strict):
    days: list[str] | None = None
    start: str
    end: str
    timezone: str | None = None


class ConditionsIn(Strict):
    ip_ranges: list[str] | None = None
    require_mfa: StrictBool | None = None
    mfa_max_age: str | None = None
    time_windows: list[TimeWindowIn] | None = None


class RuleIn(Strict):
    path_pattern: str
    permissions: list[str]
    conditions: ConditionsIn | None = None


class PolicyIn(Strict):
    name: str
    description: str | None = None
    rules: list[RuleIn]
    scope: Literal["tenant", "partner"] = "tenant"
    is_active: StrictBool = True


class PolicyPatchIn(Strict):
    name: str | None = None
    description: str | None = None
    rules: list[RuleIn] | None = None
    scope: Literal["tenant", "partner"] | None = None
    is_active: StrictBool | None = None

    @field_validator("name", "rules", "scope", "is_active")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("may not be null (only description may be cleared)")
        return value


def _in_utc(value: datetime | None) -> datetime | None:
    return None if value is None else in_utc(value)


class BindingIn(Strict):
    identity_type: str
    identity_id: str = Field(max_length=320)
    expires_at: datetime | None = None

    _utc = field_validator("expires_at")(_in_utc)


class DryRunContextIn(Strict):
    source_ip: str | None = Field(default=None, max_length=64)
    mfa_verified: StrictBool = False
    mfa_verified_at: datetime | None = None  # how long ago, for rules with mfa_max_age (default: at `timestamp`)
    timestamp: datetime | None = None

    _utc = field_validator("mfa_verified_at", "timestamp")(_in_utc)


class DryRunIn(Strict):
    identity_id: str = Field(max_length=320)
    path: str
    permission: Permission
    context: DryRunContextIn = DryRunContextIn()


def _rules(rules: list[RuleIn]) -> list[dict[str, Any]]:
    return [rule.model_dump(exclude_none=True) for rule in rules]


# ---- who may see and change what ----------------------------------------------------------------------------------


def _access(who: Caller) -> PolicyAccess:
    """Visible: the caller's tenant's policies and its partner's. Manageable: by role (see the module doc)."""
    visible = frozenset(owner for owner in (who.tenant_id, who.partner_id) if owner is not None)
    principal = who.principal
    if principal.is_partner_admin:
        manageable = visible
    elif "tenant_admin" in principal.roles and who.tenant_id is not None and who.tenant_id == principal.tenant_id:
        manageable = frozenset({who.tenant_id})
    else:
        manageable = frozenset()
    return PolicyAccess(visible=visible, manageable=manageable)


async def _reader(request: web.Request) -> tuple[Caller, PolicyAccess]:
    who = await caller(request)
    who.require_scope("policies:read")
    return who, _access(who)


async def _writer(request: web.Request) -> tuple[Caller, PolicyAccess]:
    who = await caller(request)
    who.require_scope("policies:write")
    access = _access(who)
    if not access.manageable:
        raise AccessDenied("Changing policies needs the tenant_admin or partner_admin role")
    return who, access


def _actor(request: web.Request, who: Caller) -> Actor:
    return Actor(identity_id=who.principal.identity_id, request_id=request[REQUEST_ID])


def _policy_id(request: web.Request) -> str:
    policy_id = request.match_info["policy_id"]
    if "\x00" in policy_id:  # no policy id holds a NUL (nor can PostgreSQL store one): a missing policy
        raise PolicyNotFound(policy_id=policy_id.replace("\x00", "")[:64])
    request[ACCESS].extra["policy_id"] = policy_id[:64]
    return policy_id


# ---- documents ----------------------------------------------------------------------------------------------------


def _binding_document(row: Any, at: datetime) -> dict[str, Any]:
    return {
        "id": row["binding_id"],
        "policy_id": row["policy_id"],
        "identity_type": row["identity_type"],
        "identity_id": row["identity_id"],
        "expires_at": row["expires_at"],
        "expired": row["expires_at"] is not None and row["expires_at"] <= at,
        "created_at": row["created_at"],
        "created_by": row["created_by"],
    }


def _summary(row: Any) -> dict[str, Any]:
    return {
        "id": row["policy_id"],
        "name": row["name"],
        "scope": row["scope"],
        "rule_count": row["rule_count"],
        "binding_count": row["binding_count"],
        "is_active": row["is_active"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


async def _policy_document(request: web.Request, access: PolicyAccess, policy_id: str) -> dict[str, Any]:
    pool, at = request.app[CONTAINER].pool, utcnow()
    row = await queries.policy_row(pool, list(access.visible), policy_id, at=at)
    if row is None:  # another tenant's policy answers exactly like a missing one
        raise PolicyNotFound(policy_id=policy_id[:64])
    bindings = await queries.binding_rows(pool, policy_id, after=None, limit=MAX_LIMIT)
    return {
        **_summary(row),
        "description": row["description"],
        "rules": row["rules"],
        "bindings": [_binding_document(b, at) for b in bindings],
        "created_by": row["created_by"],
        "updated_by": row["updated_by"],
    }


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}", parameter="limit")
    return int(raw)


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false"):
        raise InvalidRequest(f"'{name}' must be true or false", parameter=name)
    return raw == "true"


def _after(request: web.Request, bound_to: dict[str, Any]) -> str | None:
    """The last id of the previous page; the cursor must come from a listing with the same parameters."""
    raw = request.query.get("cursor")
    if raw is None:
        return None
    state = decode_cursor(raw)
    after = state.pop("after", None)
    if state != bound_to or not isinstance(after, str) or len(after) > 64:
        raise InvalidCursor("The cursor belongs to another listing; start again without it")
    return after


# ---- handlers -----------------------------------------------------------------------------------------------------


async def list_policies(request: web.Request) -> web.Response:
    who, access = await _reader(request)
    scope = request.query.get("scope")
    if scope not in (None, "tenant", "partner"):
        raise InvalidRequest("'scope' must be tenant or partner", parameter="scope")
    owners = {"tenant": [who.tenant_id], "partner": [who.partner_id], None: list(access.visible)}[scope]
    owners = [owner for owner in owners if owner is not None]
    include_inactive = _bool_query(request, "include_inactive")
    limit = _limit(request)
    bound_to = {"v": 1, "scope": scope, "include_inactive": include_inactive}
    rows = await queries.policy_rows(
        request.app[CONTAINER].pool, owners, at=utcnow(), include_inactive=include_inactive,
        after=_after(request, bound_to), limit=limit + 1,
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response({
        "policies": [_summary(row) for row in rows],
        "cursor": encode_cursor({**bound_to, "after": rows[-1]["policy_id"]}) if has_more else None,
        "has_more": has_more,
    })


async def create_policy(request: web.Request) -> web.Response:
    who, access = await _writer(request)
    body = parse_body(PolicyIn, await read_json_object(request))
    if body.scope == "partner":
        owner = PolicyOwner("partner", who.require_partner(), None, who.require_partner())
    else:
        tenant_id = who.require_tenant()
        owner = PolicyOwner("tenant", tenant_id, tenant_id, who.partner_id or "")
    if owner.owner not in access.manageable:
        raise AccessDenied("Only partner admins may create partner-scoped policies")
    policy = await request.app[CONTAINER].policy_commands.create(
        owner, name=body.name, description=body.description, rules=_rules(body.rules), is_active=body.is_active,
        actor=_actor(request, who), access=request[ACCESS],
    )
    document = await _policy_document(request, access, policy.policy_id)
    return json_response(document, status=201, headers={"Location": f"/v1/policies/{policy.policy_id}"})


async def get_policy(request: web.Request) -> web.Response:
    _, access = await _reader(request)
    return json_response(await _policy_document(request, access, _policy_id(request)))


async def _change(request: web.Request, changes: PolicyChanges, who: Caller, access: PolicyAccess) -> web.Response:
    policy_id = _policy_id(request)
    await request.app[CONTAINER].policy_commands.change(
        policy_id, changes, access, _actor(request, who), request[ACCESS]
    )
    return json_response(await _policy_document(request, access, policy_id))


async def replace_policy(request: web.Request) -> web.Response:
    """Rules and metadata replaced; bindings kept; ``is_active`` kept unless given (it is state, not content)."""
    who, access = await _writer(request)
    body = parse_body(PolicyIn, await read_json_object(request))
    changes = PolicyChanges(
        name=body.name, description=body.description, rules=_rules(body.rules),
        is_active=body.is_active if "is_active" in body.model_fields_set else UNSET,
        scope=body.scope if "scope" in body.model_fields_set else UNSET,
    )
    return await _change(request, changes, who, access)


async def patch_policy(request: web.Request) -> web.Response:
    who, access = await _writer(request)
    body = parse_body(PolicyPatchIn, await read_json_object(request))
    given = body.model_fields_set
    changes = PolicyChanges(**{
        name: (_rules(body.rules) if name == "rules" and body.rules is not None else getattr(body, name))
        for name in ("name", "description", "rules", "is_active", "scope") if name in given
    })
    return await _change(request, changes, who, access)


async def delete_policy(request: web.Request) -> web.Response:
    who, access = await _writer(request)
    policy_id = _policy_id(request)
    removed = await request.app[CONTAINER].policy_commands.delete(
        policy_id, force=_bool_query(request, "force"), who=access, actor=_actor(request, who), access=request[ACCESS]
    )
    return json_response({"id": policy_id, "deleted": True, "removed_bindings": removed})


async def list_bindings(request: web.Request) -> web.Response:
    _, access = await _reader(request)
    policy_id = _policy_id(request)
    pool, at = request.app[CONTAINER].pool, utcnow()
    if await queries.policy_row(pool, list(access.visible), policy_id, at=at) is None:
        raise PolicyNotFound(policy_id=policy_id[:64])
    limit = _limit(request)
    bound_to = {"v": 1, "policy_id": policy_id}
    rows = await queries.binding_rows(pool, policy_id, after=_after(request, bound_to), limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response({
        "bindings": [_binding_document(row, at) for row in rows],
        "cursor": encode_cursor({**bound_to, "after": rows[-1]["binding_id"]}) if has_more else None,
        "has_more": has_more,
    })


async def create_binding(request: web.Request) -> web.Response:
    who, access = await _writer(request)
    policy_id = _policy_id(request)
    body = parse_body(BindingIn, await read_json_object(request))
    binding = await request.app[CONTAINER].policy_commands.bind(
        policy_id, identity_type=body.identity_type, identity_id=body.identity_id, expires_at=body.expires_at,
        who=access, actor=_actor(request, who), access=request[ACCESS],
    )
    return json_response(
        _binding_document(binding, utcnow()), status=201,
        headers={"Location": f"/v1/policies/{policy_id}/bindings/{binding['binding_id']}"},
    )


async def delete_binding(request: web.Request) -> web.Response:
    who, access = await _writer(request)
    policy_id, binding_id = _policy_id(request), request.match_info["binding_id"]
    request[ACCESS].extra["binding_id"] = binding_id[:64]
    await request.app[CONTAINER].policy_commands.unbind(
        policy_id, binding_id, who=access, actor=_actor(request, who), access=request[ACCESS]
    )
    return json_response({"id": binding_id, "policy_id": policy_id, "deleted": True})


async def dry_run_policy(request: web.Request) -> web.Response:
    """A dry run: would this identity be allowed? Reads policies fresh, changes nothing, leaves no audit record
    (spec). The identity's groups are those the identity mirror knows (plus the token's, when testing oneself); a
    group id is evaluated as a member of that group; roles count only when testing oneself (a token carries them,
    the directory does not)."""
    who = await caller(request)
    who.require_scope("policies:read")
    body = parse_body(DryRunIn, await read_json_object(request))
    tenant_id = who.require_tenant()
    path = parse_path(body.path)
    identity_id = canonical_identity(body.identity_id)
    at = body.context.timestamp or utcnow()
    mfa_at = (body.context.mfa_verified_at or at) if body.context.mfa_verified else None
    source_ip = parse_ip(body.context.source_ip)
    if body.context.source_ip is not None and source_ip is None:
        raise InvalidRequest("context.source_ip is not an IP address", field="context.source_ip")
    context = RequestContext(at=at, source_ip=source_ip, mfa_verified_at=mfa_at)
    authorizer = request.app[CONTAINER].authorizer
    testing_myself = identity_id == canonical_identity(who.principal.identity_id)
    token_groups = who.principal.groups if testing_myself else ()
    groups = await authorizer.groups(tenant_id, identity_id, token_groups)
    if identity_id.startswith("group:"):  # "would this group be allowed?": as any member of it
        groups |= {identity_id}
    decision = None
    if testing_myself:
        decision = role_decision(who.principal, tenant_id, path, body.permission)
    if decision is None:
        decision = await authorizer.dry_run(
            tenant_id, who.partner_id, Subject.of(identity_id, groups), path, body.permission, context
        )
    return json_response({"identity_id": identity_id, "evaluated_at": at, **decision.document()})


def request_context(request: web.Request, principal: Principal) -> RequestContext:
    """What policy conditions see of a live request (the client address as its access record has it)."""
    access = request.get(ACCESS)
    source_ip = access.source_ip if access is not None else client_ip(request)
    return RequestContext(at=utcnow(), source_ip=parse_ip(source_ip), mfa_verified_at=principal.mfa_verified_at)


for _handler, _action in (
    (list_policies, "policy_read"),
    (get_policy, "policy_read"),
    (list_bindings, "policy_read"),
    (create_policy, "policy_create"),
    (replace_policy, "policy_update"),
    (patch_policy, "policy_update"),
    (delete_policy, "policy_delete"),
    (create_binding, "policy_bind"),
    (delete_binding, "policy_unbind"),
):
    _handler.audit_action = _action  # type: ignore[attr-defined]
dry_run_policy.audited = False  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    for base in ("/v1/policies", "/v1/t/{tenant_id}/policies"):
        router = app.router
        router.add_route("GET", base, list_policies)
        router.add_route("POST", base, create_policy)
        router.add_route("POST", base + "/test", dry_run_policy)
        router.add_route("GET", base + "/{policy_id}", get_policy)
        router.add_route("PUT", base + "/{policy_id}", replace_policy)
        router.add_route("PATCH", base + "/{policy_id}", patch_policy)
        router.add_route("DELETE", base + "/{policy_id}", delete_policy)
        router.add_route("GET", base + "/{policy_id}/bindings", list_bindings)
        router.add_route("POST", base + "/{policy_id}/bindings", create_binding)
        router.add_route("DELETE", base + "/{policy_id}/bindings/{binding_id}", delete_binding)
