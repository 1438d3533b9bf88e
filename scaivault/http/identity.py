"""/v1/identity: the identity mirror (spec reference/identity; decisions in docs/identity.md).

Reads need ``identity:read``; managing users, groups, memberships and roles needs ``identity:admin`` (and, for
users, groups and memberships, an administrator: tenant_admin or above; for roles, the spec's role rules). Users
and groups are always those of one tenant: the path's ``{tenant_id}``, else ``/v1/t/{tenant_id}/``,
``X-Tenant-ID`` or the token's tenant (scaivault/http/context.py). Another tenant's user or group answers exactly
like a missing one (404 ``identity_not_found``). Lists page with ``page``/``page_size`` and carry ``total``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from pydantic import Field

from commands.identities import IdentityCommands
from commands.secrets import Actor
from projections.identity import queries
from projections.identity.queries import PageRequest, SyncVisibility
from scaivault.domain.errors import (
    AccessDenied,
    IdentityNotFound,
    InvalidRequest,
    RouteNotFound,
    ScaiVaultError,
    TenantAccessDenied,
)
from scaivault.domain.identities import (
    ACTIVE,
    ROLES,
    SCAIVAULT,
    group_ref,
    identity_not_found,
    is_group_id,
    is_sync_id,
    is_user_id,
    parse_roles,
    parse_status,
    profile_of_group,
    profile_of_user,
)
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.audit.access_records import AccessRecord
from scaivault.http.context import Caller, caller
from scaivault.http.keys import ACCESS, CONTAINER, REQUEST_ID
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.schemas import Strict, parse_body
from scaivault.identity.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_delivery
from scaivault.identity.sync import SyncScope
from scaivault.identity.webhooks import WEBHOOK_ACTOR, Delivery, claim, release

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000
MAX_QUERY = 256
IDENTITY_TYPES = frozenset({"user", "group", "service_account"})


class CreateUserIn(Strict):
    email: str = Field(max_length=254)
    display_name: str | None = Field(default=None, max_length=256)
    status: str | None = Field(default=None, max_length=32)
    mfa_enabled: bool = False


class CreateGroupIn(Strict):
    name: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=1024)
    status: str | None = Field(default=None, max_length=32)


class RolesIn(Strict):
    roles: list[str] = Field(max_length=len(ROLES) * 4)


# --- request pieces ---------------------------------------------------------------------------------------------


def _number(request: web.Request, name: str, default: int, maximum: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    # Length first: a long run of digits would slip past a bound checked on a slice, or cost (and fail) int().
    if not (raw.isascii() and raw.isdigit() and len(raw) <= len(str(maximum))) or not 1 <= int(raw) <= maximum:
        raise InvalidRequest(f"'{name}' must be a whole number from 1 to {maximum}", parameter=name)
    return int(raw)


def _page(request: web.Request) -> PageRequest:
    return PageRequest(
        page=_number(request, "page", 1, MAX_PAGE),
        page_size=_number(request, "page_size", DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
    )


def _status(request: web.Request) -> str | None:
    raw = request.query.get("status")
    if raw is None:
        return None
    try:
        return parse_status(raw)
    except ScaiVaultError:
        raise InvalidRequest("'status' must be an upper-case word such as ACTIVE", parameter="status") from None


def _query_id(request: web.Request, name: str, parse: Any) -> str | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse(raw)
    except ScaiVaultError:
        raise InvalidRequest(f"'{name}' is not a valid id", parameter=name) from None


async def _reader(request: web.Request) -> Caller:
    who = await caller(request)
    who.require_scope("identity:read")
    return who


async def _tenant_reader(request: web.Request) -> tuple[Caller, str]:
    who = await _reader(request)
    return who, who.require_tenant()


async def _manager(request: web.Request) -> tuple[Caller, str]:
    """Managing users, groups and memberships: ``identity:admin`` and an administrator of the tenant."""
    who = await caller(request)
    who.require_scope("identity:admin")
    if not who.principal.is_tenant_admin:
        raise AccessDenied("Managing identities needs the tenant_admin, partner_admin or super_admin role")
    return who, who.require_tenant()


def _actor(request: web.Request, who: Caller) -> Actor:
    return Actor(identity_id=who.principal.identity_id, request_id=request[REQUEST_ID])


async def _managing(request: web.Request) -> tuple[IdentityCommands, str, Actor, AccessRecord]:
    """A manager's request (see ``_manager``): the commands, and the tenant, actor and access record to pass them."""
    who, tenant = await _manager(request)
    return request.app[CONTAINER].identity.commands, tenant, _actor(request, who), request[ACCESS]


def _paged(key: str, items: list[dict[str, Any]], total: int, page: PageRequest) -> web.Response:
    return json_response(
        {key: items, "total": total, "page": page.page, "page_size": page.page_size,
         "has_more": page.offset + len(items) < total}
    )


# --- documents --------------------------------------------------------------------------------------------------


def _user_document(row: Any) -> dict[str, Any]:
    return {
        "id": row["user_id"],
        "tenant_id": row["tenant_id"],
        "email": row["email"],
        "display_name": row["display_name"],
        "status": row["status"],
        "mfa_enabled": row["mfa_enabled"],
        "groups": list(row["groups"]),
        "roles": list(row["roles"]),
        "source": row["source"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_synced_at": row["last_synced_at"],
    }


def _group_document(row: Any) -> dict[str, Any]:
    return {
        "id": row["group_id"],
        "tenant_id": row["tenant_id"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "member_count": row["member_count"],
        "source": row["source"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_synced_at": row["last_synced_at"],
    }


def _directory_document(row: Any) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}


def _sync_document(row: Any) -> dict[str, Any]:
    return {
        "sync_id": row["sync_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "partner_id": row["partner_id"],
        "tenant_id": row["tenant_id"],
        "requested_by": row["requested_by"],
        "started_at": row["started_at"],
        "completed_at": row["finished_at"],
        "stats": row["stats"],
        "error": row["error"],
    }


async def _user(request: web.Request, tenant_id: str, reference: str) -> Any:
    return await queries.existing_user(request.app[CONTAINER].pool, tenant_id, reference)


async def _group(request: web.Request, tenant_id: str, reference: str) -> Any:
    return await queries.existing_group(request.app[CONTAINER].pool, tenant_id, reference)


def _path_id(request: web.Request, kind: str, well_formed: Callable[[object], bool]) -> str:
    identity_id = request.match_info[f"{kind}_id"]
    if not well_formed(identity_id):  # a malformed id names no user or group: the same answer as a missing one
        raise identity_not_found(kind, identity_id)
    return identity_id


def _user_id(request: web.Request) -> str:
    return _path_id(request, "user", is_user_id)


def _group_id(request: web.Request) -> str:
    return _path_id(request, "group", is_group_id)


async def _new_profile(
    request: web.Request, schema: type[CreateUserIn | CreateGroupIn], profile_of: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    body = parse_body(schema, await read_json_object(request))
    return profile_of(body.model_dump(exclude_none=True) | {"status": body.status or ACTIVE})


# --- partners and tenants ---------------------------------------------------------------------------------------


async def list_partners(request: web.Request) -> web.Response:
    """Every partner for a super_admin; the caller's own partner for everyone else."""
    who = await _reader(request)
    page = _page(request)
    only = None if who.principal.has_role("super_admin") else [who.require_partner()]
    rows, total = await queries.partner_rows(request.app[CONTAINER].pool, page, only=only, status=_status(request))
    return _paged("partners", [_directory_document(row) for row in rows], total, page)


async def list_tenants(request: web.Request) -> web.Response:
    """A super_admin sees every tenant (``partner_id`` filters), a partner admin its partner's, anyone else its own
    tenant."""
    who = await _reader(request)
    page = _page(request)
    partner_id = _query_id(request, "partner_id", parse_partner_id)
    only: list[str] | None = None
    if not who.principal.has_role("super_admin"):
        own = who.require_partner()
        if partner_id is not None and partner_id != own:
            raise TenantAccessDenied("The partner is not yours", partner_id=partner_id)
        partner_id = own
        if not who.principal.is_partner_admin:
            only = [who.require_tenant()]
    rows, total = await queries.tenant_rows(
        request.app[CONTAINER].pool, page, partner_id=partner_id, only=only, status=_status(request)
    )
    return _paged("tenants", [_directory_document(row) for row in rows], total, page)


# --- users and groups -------------------------------------------------------------------------------------------


async def list_users(request: web.Request) -> web.Response:
    _, tenant = await _tenant_reader(request)
    page = _page(request)
    query = request.query.get("q")
    if query is not None and not 0 < len(query) <= MAX_QUERY:
        raise InvalidRequest(f"'q' must be 1-{MAX_QUERY} characters", parameter="q")
    rows, total = await queries.user_rows(
        request.app[CONTAINER].pool, tenant, page, status=_status(request), query=query
    )
    return _paged("users", [_user_document(row) for row in rows], total, page)


async def create_user(request: web.Request) -> web.Response:
    commands, tenant, actor, access = await _managing(request)
    user_id = await commands.create_user(
        tenant, await _new_profile(request, CreateUserIn, profile_of_user), actor, access
    )
    return json_response(_user_document(await _user(request, tenant, user_id)), status=201)


async def get_user(request: web.Request) -> web.Response:
    _, tenant = await _tenant_reader(request)
    return json_response(_user_document(await _user(request, tenant, _user_id(request))))


async def delete_user(request: web.Request) -> web.Response:
    commands, tenant, actor, access = await _managing(request)
    await commands.remove_user(tenant, _user_id(request), actor, access)
    return web.Response(status=204)


async def list_groups(request: web.Request) -> web.Response:
    _, tenant = await _tenant_reader(request)
    page = _page(request)
    rows, total = await queries.group_rows(request.app[CONTAINER].pool, tenant, page, status=_status(request))
    return _paged("groups", [_group_document(row) for row in rows], total, page)


async def create_group(request: web.Request) -> web.Response:
    commands, tenant, actor, access = await _managing(request)
    group_id = await commands.create_group(
        tenant, await _new_profile(request, CreateGroupIn, profile_of_group), actor, access
    )
    return json_response(_group_document(await _group(request, tenant, group_id)), status=201)


async def delete_group(request: web.Request) -> web.Response:
    commands, tenant, actor, access = await _managing(request)
    await commands.remove_group(tenant, _group_id(request), actor, access)
    return web.Response(status=204)


async def list_members(request: web.Request) -> web.Response:
    _, tenant = await _tenant_reader(request)
    page = _page(request)
    group = await _group(request, tenant, _group_id(request))
    rows, total = await queries.member_rows(request.app[CONTAINER].pool, tenant, group["group_id"], page)
    return _paged("members", [dict(row) for row in rows], total, page)


async def _change_membership(request: web.Request, *, adding: bool) -> bool:
    commands, tenant, actor, access = await _managing(request)
    return await commands.change_membership(
        tenant, _group_id(request), _user_id(request), actor, adding=adding, access=access
    )


async def put_member(request: web.Request) -> web.Response:
    added = await _change_membership(request, adding=True)
    return json_response(
        {"group_id": request.match_info["group_id"], "user_id": request.match_info["user_id"], "added": added},
        status=201 if added else 200,
    )


async def delete_member(request: web.Request) -> web.Response:
    removed = await _change_membership(request, adding=False)
    if not removed:
        raise IdentityNotFound("The user is not a member of this group", identity_type="membership")
    return web.Response(status=204)


async def resolve(request: web.Request) -> web.Response:
    """One identity of the tenant with its group memberships. ``identity_id``: an id (``usr_``/``grp_``), or the
    form tokens carry (``user:<email>``, ``group:<name>``), or the bare e-mail address or group name."""
    _, tenant = await _tenant_reader(request)
    kind, reference = request.match_info["identity_type"], request.match_info["identity_id"]
    if kind not in IDENTITY_TYPES:
        raise InvalidRequest(
            f"identity_type must be one of {', '.join(sorted(IDENTITY_TYPES))}", parameter="identity_type"
        )
    if "\x00" in reference:  # no identity is named with a NUL (nor can PostgreSQL hold one): a missing one
        raise identity_not_found(kind, reference.replace("\x00", ""))
    pool = request.app[CONTAINER].pool
    if kind == "user":
        row = await _user(request, tenant, reference)
        groups = [await queries.find_group(pool, tenant, group_id) for group_id in row["groups"]]
        return json_response(
            {
                "id": row["user_id"],
                "type": "user",
                "identity_ref": row["principal_ref"],
                **{key: value for key, value in _user_document(row).items() if key not in ("id", "groups")},
                "groups": [
                    {"id": g["group_id"], "name": g["name"], "identity_ref": group_ref(g["name"]),
                     "status": g["status"]}
                    for g in groups if g is not None
                ],
                "effective_groups": await queries.groups_of(pool, tenant, row["user_id"]),
            }
        )
    if kind == "group":
        group = await _group(request, tenant, reference)
        return json_response(
            {"id": group["group_id"], "type": "group", "identity_ref": group_ref(group["name"]),
             **{key: value for key, value in _group_document(group).items() if key != "id"}}
        )
    raise IdentityNotFound(  # service accounts live in ScaiKey and are not mirrored (docs/identity.md)
        "Service accounts are not mirrored", identity_type=kind, identity_id=reference[:80]
    )


# --- roles ------------------------------------------------------------------------------------------------------


async def list_roles(request: web.Request) -> web.Response:
    await caller(request)
    return json_response({"roles": [{"name": name, "description": text} for name, text in ROLES.items()]})


async def get_user_roles(request: web.Request) -> web.Response:
    _, tenant = await _tenant_reader(request)
    row = await _user(request, tenant, _user_id(request))
    return json_response(
        {"user_id": row["user_id"], "roles": list(row["roles"]),
         "managed_by": SCAIVAULT if row["roles_set_locally"] else row["source"]}
    )


async def put_user_roles(request: web.Request) -> web.Response:
    who = await caller(request)
    who.require_scope("identity:admin")
    tenant = who.require_tenant()
    roles = parse_roles(parse_body(RolesIn, await read_json_object(request)).roles)
    user_id = _user_id(request)
    now = await request.app[CONTAINER].identity.commands.set_roles(
        tenant, user_id, roles, _actor(request, who), changer_roles=who.principal.roles, access=request[ACCESS]
    )
    return json_response({"user_id": user_id, "roles": now, "managed_by": SCAIVAULT})


# --- sync -------------------------------------------------------------------------------------------------------


async def _sync_scope(request: web.Request, who: Caller) -> SyncScope:
    """What the caller may sync: anything (super_admin), its partner or one of its tenants (partner admins), its
    own tenant (anyone else). Naming something outside that is ``tenant_access_denied``."""
    partner_id = _query_id(request, "partner_id", parse_partner_id)
    tenant_id = _query_id(request, "tenant_id", parse_tenant_id)
    principal, directory = who.principal, request.app[CONTAINER].tenants
    tenant_partner = await directory.partner_of(tenant_id) if tenant_id is not None else None
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


async def start_sync(request: web.Request) -> web.Response:
    who = await caller(request)
    who.require_scope("identity:admin")
    scope = await _sync_scope(request, who)
    run = await request.app[CONTAINER].identity.synchronizer.start(scope, _actor(request, who), access=request[ACCESS])
    return json_response(
        {"sync_id": run.sync_id, "status": run.status, "started_at": run.started_at,
         "partner_id": run.partner_id, "tenant_id": run.tenant_id},
        status=202,
        headers={"Location": f"/v1/identity/sync/{run.sync_id}"},
    )


def _sync_visibility(who: Caller) -> SyncVisibility:
    if who.principal.has_role("super_admin"):
        return SyncVisibility(everything=True)
    if who.principal.is_partner_admin:
        return SyncVisibility(partner_id=who.require_partner())
    return SyncVisibility(partner_id=who.partner_id, tenant_id=who.require_tenant())


async def sync_history(request: web.Request) -> web.Response:
    """Newest first: the runs the caller may see (see ``SyncVisibility``)."""
    who = await _reader(request)
    page = _page(request)
    rows, total = await queries.sync_rows(request.app[CONTAINER].pool, _sync_visibility(who), page)
    return _paged("syncs", [_sync_document(row) for row in rows], total, page)


async def get_sync(request: web.Request) -> web.Response:
    who = await _reader(request)
    sync_id = request.match_info["sync_id"]
    row = await queries.sync_row(request.app[CONTAINER].pool, sync_id) if is_sync_id(sync_id) else None
    visibility = _sync_visibility(who)
    visible = row is not None and (
        visibility.everything
        or (visibility.tenant_id is None and row["partner_id"] == visibility.partner_id)
        or (visibility.tenant_id is not None and (
            row["tenant_id"] == visibility.tenant_id
            or (row["tenant_id"] is None and row["partner_id"] == visibility.partner_id)))
    )
    if not visible:  # another partner's run answers like a missing one
        raise RouteNotFound("No sync run with that id", sync_id=sync_id[:80])
    return json_response(_sync_document(row))


# --- the ScaiKey webhook receiver -------------------------------------------------------------------------------


async def scaikey_webhook(request: web.Request) -> web.Response:
    """Verify the raw delivery before reading it (scaivault/identity/signatures.py), then apply it once
    (scaivault/identity/webhooks.py). Without ``SCAIKEY_WEBHOOK_SECRET`` there is no receiver (404)."""
    container = request.app[CONTAINER]
    secrets = container.identity.webhook_secrets
    if not secrets:
        raise RouteNotFound("No ScaiKey webhook receiver is configured (SCAIKEY_WEBHOOK_SECRET)")
    raw = await request.read()
    verify_delivery(
        secrets=secrets,
        signature_header=request.headers.get(SIGNATURE_HEADER),
        timestamp_header=request.headers.get(TIMESTAMP_HEADER),
        body=raw,
        now=time.time(),
    )
    access = request[ACCESS]
    access.identity_id, access.identity_type = WEBHOOK_ACTOR, "system"
    delivery = Delivery.parse(await read_json_object(request))
    access.extra.update(event_id=delivery.event_id, event_type=delivery.event_type)
    if not await claim(container.pool, delivery.event_id, datetime.now(timezone.utc)):
        return json_response({"ok": True, "event_id": delivery.event_id, "applied": False, "duplicate": True})
    try:
        ignored = await container.identity.webhooks.apply(delivery, access)
    except BaseException:
        await release(container.pool, delivery.event_id)  # not applied: ScaiKey's retry must get through
        raise
    answer: dict[str, Any] = {"ok": True, "event_id": delivery.event_id, "applied": ignored is None, "duplicate": False}
    if ignored is not None:
        answer["ignored"] = ignored
    return json_response(answer)


_READS = (list_partners, list_tenants, list_users, get_user, list_groups, list_members, resolve, list_roles,
          get_user_roles, sync_history, get_sync)
_WRITES = (create_user, delete_user, create_group, delete_group, put_member, delete_member, put_user_roles)
for _handler in _READS:
    _handler.audit_action = "identity_read"  # type: ignore[attr-defined]
for _handler in _WRITES:
    _handler.audit_action = "identity_write"  # type: ignore[attr-defined]
start_sync.audit_action = "identity_sync"  # type: ignore[attr-defined]
scaikey_webhook.audit_action = "identity_sync"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/v1/identity/partners", list_partners)
    router.add_get("/v1/identity/tenants", list_tenants)
    router.add_get("/v1/identity/tenants/{tenant_id}/users", list_users)
    router.add_post("/v1/identity/tenants/{tenant_id}/users", create_user)
    router.add_get("/v1/identity/tenants/{tenant_id}/groups", list_groups)
    router.add_post("/v1/identity/tenants/{tenant_id}/groups", create_group)
    router.add_get("/v1/identity/roles", list_roles)
    router.add_post("/v1/identity/sync", start_sync)
    router.add_get("/v1/identity/sync/history", sync_history)
    router.add_get("/v1/identity/sync/{sync_id}", get_sync)
    router.add_post("/v1/identity/webhooks/scaikey", scaikey_webhook)
    for base in ("/v1/identity", "/v1/t/{tenant_id}/identity"):
        router.add_get(base + "/users/{user_id}", get_user)
        router.add_delete(base + "/users/{user_id}", delete_user)
        router.add_get(base + "/users/{user_id}/roles", get_user_roles)
        router.add_put(base + "/users/{user_id}/roles", put_user_roles)
        router.add_delete(base + "/groups/{group_id}", delete_group)
        router.add_get(base + "/groups/{group_id}/members", list_members)
        router.add_put(base + "/groups/{group_id}/members/{user_id}", put_member)
        router.add_delete(base + "/groups/{group_id}/members/{user_id}", delete_member)
        router.add_get(base + "/resolve/{identity_type}/{identity_id}", resolve)
