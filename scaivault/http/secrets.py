"""/v1/secrets and /v1/partner/secrets: the Secrets API (spec api-guides/secrets, core-concepts/secrets,
api-guides/batch-operations, and the spec README's decisions)."""

from __future__ import annotations

import base64
import logging
from datetime import datetime
from typing import Any

from aiohttp import web

from commands.secrets import Actor, SecretAddress, UpdateSecretMetadata, WriteSecret
from projections.secrets import history, queries
from scaivault.crypto.aead import DecryptionFailed, open_sealed, seal
from scaivault.crypto.aead import context as aead_context
from scaivault.crypto.keyring import KeyDestroyed
from scaivault.crypto.secret_values import open_value
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import (
    AccessDenied,
    InternalError,
    InvalidCursor,
    InvalidDuration,
    InvalidRequest,
    ScaiVaultError,
    SecretNotFound,
    VersionNotFound,
)
from scaivault.domain.globs import expand_pattern
from scaivault.domain.policies import ListingPlan
from scaivault.domain.paths import parse_path, parse_prefix
from scaivault.domain.secrets import check_secret_type
from scaivault.http.context import Caller, caller
from scaivault.http.cursors import decode_cursor, encode_cursor
from scaivault.http.keys import ACCESS, CONTAINER, REQUEST_ID
from scaivault.http.policies import request_context
from scaivault.http.responses import format_timestamp, json_response, read_json_object
from scaivault.ratelimit.http import charge_extra
from scaivault.http.schemas import (
    BatchReadIn,
    MetadataPatchIn,
    WriteSecretIn,
    check_metadata_patch,
    parse_body,
)

log = logging.getLogger(__name__)

DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000


# ---- where a request points --------------------------------------------------------------------------------------


def _partner_scoped(request: web.Request) -> bool:
    return request.match_info.route.resource is not None and "/partner/" in request.match_info.route.resource.canonical


async def _address(request: web.Request, scope: str) -> tuple[Caller, SecretAddress]:
    """The caller and the secret it addresses, once the scope (``secrets:<permission>``) and the caller's policies
    allow that permission on the path: effective rights are their intersection."""
    who = await caller(request)
    who.require_scope(scope)
    path = parse_path(request.match_info["path"])
    if _partner_scoped(request):
        partner_id = who.require_partner()
        return who, SecretAddress(owner=partner_id, partner_id=partner_id, tenant_id=None, path=path)
    tenant_id = who.require_tenant()
    await _authorize(request, who, path, scope.removeprefix("secrets:"))
    return who, SecretAddress(owner=tenant_id, partner_id=who.partner_id or "", tenant_id=tenant_id, path=path)


async def _authorize(request: web.Request, who: Caller, path: str, permission: str) -> None:
    """Raise the policy decision's error unless the caller may exercise ``permission`` on the tenant path ``path``.
    Partner secrets follow the spec's own rule instead (docs/policies.md): readable by every identity of the
    partner's tenants, changed only by partner admins."""
    if _partner_scoped(request):
        return
    await request.app[CONTAINER].authorizer.require(
        who.principal, who.tenant_id, who.partner_id, path, permission, request_context(request, who.principal)
    )


async def _listing_plan(request: web.Request, who: Caller, prefix: str) -> ListingPlan | None:
    """What the caller may list under ``prefix`` (None: everything)."""
    if _partner_scoped(request):
        return None
    return await request.app[CONTAINER].authorizer.listing(
        who.principal, who.tenant_id, who.partner_id, prefix, request_context(request, who.principal)
    )


def _require_partner_writer(request: web.Request, who: Caller) -> None:
    """Partner secrets are readable by every tenant of the partner and writable only by its partner admins."""
    if _partner_scoped(request) and not who.principal.is_partner_admin:
        raise AccessDenied("Only partner admins may change partner secrets")


def _actor(request: web.Request, who: Caller) -> Actor:
    return Actor(identity_id=who.principal.identity_id, request_id=request[REQUEST_ID])


def _owner(request: web.Request, who: Caller) -> str:
    return who.require_partner() if _partner_scoped(request) else who.require_tenant()


MAX_INT32 = 2**31 - 1


def _int_query(request: web.Request, name: str, *, minimum: int = 1, maximum: int = MAX_INT32) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10) or not minimum <= int(raw) <= maximum:
        raise InvalidRequest(
            f"'{name}' must be a whole number from {minimum} to {maximum}", parameter=name
        )
    return int(raw)


def _as_of_query(request: web.Request) -> datetime | None:
    """``as_of`` (a forensic read: answered from the event history), noted in the request's access record."""
    raw = request.query.get("as_of")
    if raw is None:
        return None
    as_of = history.parse_as_of(raw)
    request[ACCESS].extra["as_of"] = format_timestamp(as_of)
    return as_of


def _bool_query(request: web.Request, name: str) -> bool:
    raw = request.query.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidRequest(f"'{name}' must be true or false", parameter=name)
    return raw in ("true", "1")


# ---- reads -------------------------------------------------------------------------------------------------------


async def _decrypt(request: web.Request, row: Any) -> dict[str, Any]:
    container = request.app[CONTAINER]
    owner, path, version = row["owner"], row["path"], row["version"]
    try:
        key = await container.keyring.unwrap_data_key(owner, row["data_key_id"], row["wrapped_data_key"], conn=container.pool)
        return open_value(key, row["ciphertext"], owner=owner, path=path, version=version)
    except KeyDestroyed:
        raise VersionNotFound("That version was destroyed", path=path, version=version) from None
    except DecryptionFailed:
        # Stored data no longer matches its place: a tampered or swapped row. Never answer with it.
        log.error("integrity: a secret version failed authentication", extra={"path": path, "version": version})
        raise InternalError() from None


def _missing_version(row: Any, requested: int | None) -> ScaiVaultError | None:
    if row["version"] is None:
        return VersionNotFound(path=row["path"], version=requested or row["current_version"])
    if row["ciphertext"] is None or row["wrapped_data_key"] is None:
        return VersionNotFound("That version was destroyed", path=row["path"], version=row["version"], destroyed=True)
    return None


def _not_found_or_deleted(path: str, row: Any) -> ScaiVaultError | None:
    if row is None:
        return SecretNotFound(path=path)
    if row["deleted_at"] is not None:
        return SecretNotFound(
            "The secret is deleted; it can be restored", path=path, deleted=True, recoverable_until=row["recoverable_until"]
        )
    return None


def _secret_document(row: Any, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "path": row["path"],
        "secret_type": row["secret_type"],
        "version": row["version"],
        "current_version": row["current_version"],
        "data": data,
        "metadata": row["metadata"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "expires_at": row["version_expires_at"],
        "last_accessed_at": row["last_accessed_at"],
        "rotation_policy_id": row["rotation_policy_id"],
        "secret_policy_id": row["secret_policy_id"],
        "version_created_at": row["version_created_at"],
        "version_created_by": row["version_created_by"],
    }


async def read_secret(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:read")
    version = _int_query(request, "version")
    container, as_of = request.app[CONTAINER], _as_of_query(request)
    if as_of is not None:
        row = await history.secret_value_row_as_of(
            container.pool, container.repository, address.owner, address.path, version, as_of
        )
    else:
        row = await queries.secret_value_row(container.pool, address.owner, address.path, version)
    problem = _not_found_or_deleted(address.path, row) or _missing_version(row, version)
    if problem is not None:
        raise problem
    data = await _decrypt(request, row)
    request.app[CONTAINER].metrics.secret_reads.labels(address.owner, row["secret_type"]).inc()
    request[ACCESS].accessed_streams.append(row["stream_id"])
    request[ACCESS].extra["version"] = row["version"]
    document = _secret_document(row, data)
    if as_of is not None:
        document["as_of"] = as_of
    return json_response(document)


async def read_metadata(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:list")
    container, as_of = request.app[CONTAINER], _as_of_query(request)
    if as_of is not None:
        row = await history.secret_metadata_row_as_of(
            container.pool, container.repository, address.owner, address.path, as_of
        )
    else:
        row = await queries.secret_metadata_row(container.pool, address.owner, address.path)
    if row is None:
        raise SecretNotFound(path=address.path)
    document = queries.metadata_document(row)
    if as_of is not None:
        document["as_of"] = as_of
    return json_response(document)


async def list_versions(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:list")
    pool = request.app[CONTAINER].pool
    as_of = _as_of_query(request)
    if as_of is not None:
        found = await history.secret_versions_as_of(
            pool, request.app[CONTAINER].repository, address.owner, address.path, as_of
        )
        row, version_rows = found if found is not None else (None, [])
    else:
        row = await queries.secret_metadata_row(pool, address.owner, address.path)
    if row is None:
        raise SecretNotFound(path=address.path)
    if as_of is None:
        version_rows = await queries.version_rows(pool, row["stream_id"])
    versions = [
        {
            "version": v["version"],
            "created_at": v["created_at"],
            "created_by": v["created_by"],
            "expires_at": v["expires_at"],
            "destroyed": v["destroyed_at"] is not None,
            "destroyed_at": v["destroyed_at"],
            "current": v["version"] == row["current_version"],
        }
        for v in version_rows
    ]
    return json_response(
        {
            "path": address.path,
            "current_version": row["current_version"],
            "versions": versions,
            "cursor": None,
            "has_more": False,
            **({"as_of": as_of} if as_of is not None else {}),
        }
    )


# The path a listing resumes after is sealed in its cursor: when most secrets are hidden from the caller, a page
# cut short by the scan budget resumes after a path the caller may not see, and a readable cursor would name it.
CURSOR_KEY = "list-cursor"


def _cursor_aad(owner: str, prefix: str) -> bytes:
    return aead_context("list-cursor", owner, prefix)


async def _encode_cursor(request: web.Request, owner: str, prefix: str, after: str) -> str:
    key = await request.app[CONTAINER].keyring.system_key(request.app[CONTAINER].pool, CURSOR_KEY)
    sealed = seal(key, after.encode(), _cursor_aad(owner, prefix))
    return encode_cursor({"v": 2, "prefix": prefix, "after": base64.urlsafe_b64encode(sealed).decode()})


async def _decode_cursor(request: web.Request, owner: str, cursor: str, prefix: str) -> str:
    """The last path of the previous page; the cursor must come from a listing of this same prefix and owner."""
    state = decode_cursor(cursor)
    sealed = state.get("after")
    if state.get("v") != 2 or state.get("prefix") != prefix or not isinstance(sealed, str):
        raise InvalidCursor(details_hint="Start again without a cursor")
    key = await request.app[CONTAINER].keyring.system_key(request.app[CONTAINER].pool, CURSOR_KEY)
    try:
        after = open_sealed(key, base64.urlsafe_b64decode(sealed), _cursor_aad(owner, prefix)).decode()
        if not after.startswith(prefix):
            raise InvalidCursor()
        return parse_path(after)
    except (ValueError, DecryptionFailed, ScaiVaultError):  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidCursor(details_hint="Start again without a cursor") from None


async def list_secrets(request: web.Request) -> web.Response:
    who = await caller(request)
    who.require_scope("secrets:list")
    owner = _owner(request, who)
    prefix = parse_prefix(request.query.get("prefix"))
    limit = _int_query(request, "limit", maximum=MAX_LIST_LIMIT) or DEFAULT_LIST_LIMIT
    cursor = request.query.get("cursor")
    after = await _decode_cursor(request, owner, cursor, prefix) if cursor else None
    include_deleted = _bool_query(request, "include_deleted")
    plan = await _listing_plan(request, who, prefix)
    rows, resume_after = await _listed_rows(
        request.app[CONTAINER].pool, owner, plan, prefix=prefix, after=after, limit=limit,
        include_deleted=include_deleted,
    )
    return json_response(
        {
            "secrets": [queries.metadata_document(row) for row in rows],
            "cursor": await _encode_cursor(request, owner, prefix, resume_after) if resume_after is not None else None,
            "has_more": resume_after is not None,
        }
    )


# A policy-aware page examines at most this many secrets; when most are hidden, a page may end short (even empty)
# with has_more and a cursor from which the next page goes on.
LIST_SCAN_BUDGET = 10_000


async def _listed_rows(
    pool: Any, owner: str, plan: ListingPlan | None, *, prefix: str, after: str | None, limit: int,
    include_deleted: bool,
) -> tuple[list[Any], str | None]:
    """Up to ``limit`` listable rows after ``after`` in path order, and the path to resume after (None: no more).

    With a plan, only the plan's ranges are scanned (each a path prefix; disjoint, in path order, so the pages of
    all ranges together are in path order) and a row is kept only if the plan shows it."""
    if plan is None:
        rows = await queries.list_secret_rows(
            pool, owner, prefix=prefix, after=after, limit=limit + 1, include_deleted=include_deleted
        )
        return rows[:limit], rows[limit - 1]["path"] if len(rows) > limit else None
    kept: list[Any] = []
    scanned = 0
    batch = min(max(limit + 1, 100), MAX_LIST_LIMIT + 1)
    for start in plan.ranges:
        if after is not None and after >= start + "~":  # the whole range lies before the cursor
            continue
        position = after if after is not None and after >= start else None
        while True:
            rows = await queries.list_secret_rows(
                pool, owner, prefix=start, after=position, limit=batch, include_deleted=include_deleted
            )
            for row in rows:
                if plan.visible(row["path"]):
                    if len(kept) == limit:
                        return kept, kept[-1]["path"]
                    kept.append(row)
                position = row["path"]
                scanned += 1
                if scanned >= LIST_SCAN_BUDGET:
                    return kept, position
            if len(rows) < batch:
                break
    return kept, None


async def batch_read(request: web.Request) -> web.Response:
    who = await caller(request)
    who.require_scope("secrets:read")
    body = parse_body(BatchReadIn, await read_json_object(request))
    owner = _owner(request, who)
    options = body.options
    secrets_out: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    valid_paths: list[str] = []
    for raw in dict.fromkeys(body.paths):  # de-duplicated, order kept
        try:
            path = parse_path(raw)
            await _authorize(request, who, path, "read")  # per path: a batch never bypasses access control
            valid_paths.append(path)
        except ScaiVaultError as exc:
            if options.fail_fast:
                raise
            errors[str(raw)[:512]] = {"code": exc.code, "message": exc.message}
    pool = request.app[CONTAINER].pool
    rows = {row["path"]: row for row in await queries.secret_value_rows(pool, owner, valid_paths, options.version)}
    access = request[ACCESS]
    for path in valid_paths:
        row = rows.get(path)
        try:
            problem = _not_found_or_deleted(path, row) or _missing_version(row, options.version)
            if problem is not None:
                raise problem
            data = await _decrypt(request, row)
        except ScaiVaultError as exc:
            if options.fail_fast:
                raise
            errors[path] = {"code": exc.code, "message": exc.message}
            continue
        item: dict[str, Any] = {"data": data, "version": row["version"], "secret_type": row["secret_type"]}
        if options.include_metadata:
            item["metadata"] = row["metadata"]
            item["created_at"] = row["created_at"]
            item["updated_at"] = row["updated_at"]
            item["expires_at"] = row["version_expires_at"]
        secrets_out[path] = item
        access.accessed_streams.append(row["stream_id"])
        request.app[CONTAINER].metrics.secret_reads.labels(owner, row["secret_type"]).inc()
    access.extra.update({"paths": list(secrets_out), "errors": len(errors)})
    await charge_extra(request, "secrets_read", len(secrets_out))  # spec: one read unit per returned secret
    return json_response({"secrets": secrets_out, "errors": errors})


async def batch_metadata(request: web.Request) -> web.Response:
    """Metadata of many secrets (no values); ``secrets:list`` suffices. With ``expand_wildcards``, each entry may be
    a glob (``*`` one segment, ``**`` any number) that expands to the matching paths."""
    who = await caller(request)
    who.require_scope("secrets:list")
    body = parse_body(BatchReadIn, await read_json_object(request))
    owner = _owner(request, who)
    pool = request.app[CONTAINER].pool
    found: dict[str, Any] = {}
    errors: dict[str, Any] = {}
    for raw in dict.fromkeys(body.paths):
        try:
            if body.options.expand_wildcards and "*" in raw:
                prefix, matches = expand_pattern(raw)
                plan = await _listing_plan(request, who, prefix)
                rows, _ = await _listed_rows(
                    pool, owner, plan, prefix=prefix, after=None, limit=MAX_LIST_LIMIT, include_deleted=False
                )
                for row in rows:
                    if matches(row["path"]):
                        found[row["path"]] = queries.metadata_document(row)
                continue
            path = parse_path(raw)
            await _authorize(request, who, path, "list")
            row = await queries.secret_metadata_row(pool, owner, path)
            problem = _not_found_or_deleted(path, row)
            if problem is not None:
                raise problem
            found[path] = queries.metadata_document(row)
        except ScaiVaultError as exc:
            if body.options.fail_fast:
                raise
            errors[str(raw)[:512]] = {"code": exc.code, "message": exc.message}
    return json_response({"secrets": found, "errors": errors})


# ---- writes ------------------------------------------------------------------------------------------------------


def _duration(value: str | None, field: str) -> Any:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except InvalidDuration as exc:
        raise InvalidDuration(value, field=field) from exc


async def write_secret(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:write")
    _require_partner_writer(request, who)
    body = parse_body(WriteSecretIn, await read_json_object(request))
    options = body.options
    command = WriteSecret(
        address=address,
        data=body.data,
        secret_type=check_secret_type(body.secret_type) if body.secret_type is not None else None,
        metadata=body.metadata.document() if body.metadata is not None else None,
        max_versions=options.max_versions if options else None,
        expires_in=_duration(options.expires_in if options else None, "options.expires_in"),
        rotation_policy_id=options.rotation_policy_id if options else None,
        cas=options.cas if options else None,
    )
    secret, created = await request.app[CONTAINER].secret_commands.write(command, _actor(request, who), request[ACCESS])
    request.app[CONTAINER].metrics.secret_writes.labels(address.owner).inc()
    return json_response(_state_document(secret), status=201 if created else 200)


async def update_metadata(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:write")
    _require_partner_writer(request, who)
    body = parse_body(MetadataPatchIn, await read_json_object(request))
    check_metadata_patch(body.metadata)
    command = UpdateSecretMetadata(
        address=address,
        metadata_patch=body.metadata,
        secret_type=check_secret_type(body.secret_type) if body.secret_type is not None else None,
        max_versions=body.max_versions,
        expires_in=_duration(body.expires_in, "expires_in"),
        clear_expiry="expires_at" in body.model_fields_set,
        rotation_policy_id=body.rotation_policy_id,
        secret_policy_id=body.secret_policy_id,
    )
    secret = await request.app[CONTAINER].secret_commands.update_metadata(command, _actor(request, who), request[ACCESS])
    return json_response(_state_document(secret))


async def delete_secret(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:delete")
    _require_partner_writer(request, who)
    permanent = _bool_query(request, "permanent")
    version = _int_query(request, "version")
    commands = request.app[CONTAINER].secret_commands
    actor, access = _actor(request, who), request[ACCESS]
    if version is not None:
        if not permanent:
            raise InvalidRequest("Deleting one version destroys it: add permanent=true", parameter="permanent")
        secret = await commands.destroy_version(address, version, actor, access)
        return json_response({"path": address.path, "permanent": True, "destroyed_versions": [version]})
    if permanent:
        destroyed = await commands.destroy(address, actor, access)
        return json_response({"path": address.path, "permanent": True, "destroyed_versions": destroyed})
    secret = await commands.delete(address, actor, access)
    return json_response(
        {
            "path": address.path,
            "permanent": False,
            "deleted_at": secret.deleted_at,
            "recoverable_until": secret.recoverable_until,
        }
    )


async def restore_secret(request: web.Request) -> web.Response:
    who, address = await _address(request, "secrets:delete")
    _require_partner_writer(request, who)
    secret = await request.app[CONTAINER].secret_commands.restore(address, _actor(request, who), request[ACCESS])
    return json_response(_state_document(secret))


def _state_document(secret: Any) -> dict[str, Any]:
    """A write's answer: the secret's metadata and its new version, never the value."""
    return {
        "path": secret.path,
        "secret_type": secret.secret_type,
        "version": secret.current_version,
        "current_version": secret.current_version,
        "version_count": len(secret.versions),
        "max_versions": secret.max_versions,
        "metadata": secret.metadata,
        "created_at": secret.created_at,
        "updated_at": secret.updated_at,
        "expires_at": secret.expires_at,
        "rotation_policy_id": secret.rotation_policy_id,
        "secret_policy_id": secret.secret_policy_id,
        "deleted": secret.deleted_at is not None,
    }


def add_routes(app: web.Application) -> None:
    """The Secrets API for the token's tenant, under /v1/t/{tenant_id}/ for partner admins, and for partner
    secrets under /v1/partner/secrets. Sub-resources are registered before the catch-all secret path."""
    for base in ("/v1/secrets", "/v1/t/{tenant_id}/secrets", "/v1/partner/secrets"):
        router = app.router
        router.add_route("POST", base + "/batch", batch_read)
        router.add_route("POST", base + "/batch/metadata", batch_metadata)
        router.add_route("GET", base, list_secrets)
        router.add_route("GET", base + "/{path:.+}/versions", list_versions)
        router.add_route("GET", base + "/{path:.+}/metadata", read_metadata)
        router.add_route("PATCH", base + "/{path:.+}/metadata", update_metadata)
        router.add_route("POST", base + "/{path:.+}/restore", restore_secret)
        router.add_route("GET", base + "/{path:.+}", read_secret)
        router.add_route("PUT", base + "/{path:.+}", write_secret)
        router.add_route("DELETE", base + "/{path:.+}", delete_secret)


# Audit action of each handler (spec reference/audit lists the actions).
for _handler, _action in (
    (read_secret, "read"),
    (batch_read, "read"),
    (write_secret, "write"),
    (update_metadata, "write"),
    (restore_secret, "write"),
    (delete_secret, "delete"),
    (read_metadata, "list"),
    (list_versions, "list"),
    (list_secrets, "list"),
    (batch_metadata, "list"),
):
    _handler.audit_action = _action  # type: ignore[attr-defined]
