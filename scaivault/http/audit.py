"""/v1/audit: the tenant's audit log, per-secret and per-identity trails, summaries and chain verification
(spec reference/audit, api-guides/audit-logs). The log is a projection: entries appear once the projection has
applied their events (a lone request's at once, under sustained load within about a second: see
projections/runner.py GATHER_SECONDS; the lag is in /v1/health/detailed)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp import web

from projections.audit import queries
from projections.audit.verification import verify_audit_chain
from scaivault.domain.errors import InvalidCursor, InvalidRequest
from scaivault.domain.paths import parse_path, parse_prefix
from scaivault.domain.timestamps import parse_timestamp
from scaivault.http.context import Caller, caller
from scaivault.http.cursors import decode_cursor, encode_cursor
from scaivault.http.keys import CONTAINER
from scaivault.http.responses import json_response

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
ACTIONS = frozenset(
    {
        "read", "write", "delete", "list", "rotate", "policy_create", "policy_update", "policy_delete", "policy_bind",
        "policy_unbind", "pki_issue", "pki_sign", "pki_revoke", "pki_ca_create", "dynamic_generate", "dynamic_renew",
        "dynamic_revoke", "webhook_delivery", "subscription_event", "federation_sync", "identity_sync",
        "identity_read", "identity_write",
        "policy_read",
        "export_created", "auth_whoami", "auth_introspect", "health_detailed", "metrics_read", "audit_read",
        "audit_verify",
    }
)
IDENTITY_TYPES = frozenset({"user", "service_account", "group"})


async def _auditor(request: web.Request) -> tuple[Caller, str]:
    who = await caller(request)
    who.require_scope("audit:read")
    return who, who.require_tenant()


def _timestamp(request: web.Request, name: str) -> datetime | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_timestamp(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be an ISO 8601 timestamp", parameter=name) from None


def _choice(request: web.Request, name: str, allowed: frozenset[str]) -> str | None:
    raw = request.query.get(name)
    if raw is not None and raw not in allowed:
        raise InvalidRequest(f"'{name}' must be one of {', '.join(sorted(allowed))}", parameter=name)
    return raw


def _filters(request: web.Request) -> queries.AuditFilter:
    actions = None
    if "action" in request.query:
        actions = [action.strip() for action in request.query["action"].split(",") if action.strip()]
        unknown = [action for action in actions if action not in ACTIONS]
        if unknown or not actions:
            raise InvalidRequest("Unknown action", parameter="action", allowed=sorted(ACTIONS))
    success = request.query.get("success")
    if success not in (None, "true", "false"):
        raise InvalidRequest("'success' must be true or false", parameter="success")
    return queries.AuditFilter(
        since=_timestamp(request, "from"),
        until=_timestamp(request, "to"),
        actions=actions,
        identity_id=request.query.get("identity_id"),
        identity_type=_choice(request, "identity_type", IDENTITY_TYPES),
        path_prefix=parse_prefix(request.query["path_prefix"]) if "path_prefix" in request.query else None,
        success=None if success is None else success == "true",
        source_ip=request.query.get("source_ip"),
        request_id=request.query.get("request_id"),
    )


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(DEFAULT_LIMIT))
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 4) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}", parameter="limit")
    return int(raw)


def _encode_cursor(seq: int) -> str:
    return encode_cursor({"seq": seq})


def _decode_cursor(request: web.Request) -> int | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    seq = decode_cursor(raw).get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise InvalidCursor()
    return seq


def _entry(row: Any) -> dict[str, Any]:
    return {
        "id": f"log_{row['seq']}",
        "sequence": row["seq"],
        "timestamp": row["recorded_at"],
        "action": row["action"],
        "identity_type": row["identity_type"],
        "identity_id": row["identity_id"],
        "secret_path": row["secret_path"],
        "source_ip": row["source_ip"],
        "user_agent": row["user_agent"],
        "success": row["success"],
        "status": row["status"],
        "error_code": row["error_code"],
        "duration_ms": row["duration_ms"],
        "request_id": row["request_id"],
        "method": row["method"],
        "route": row["route"],
        "extra_data": row["extra"],
        "hash": bytes(row["hash"]).hex(),
    }


async def _page(request: web.Request, tenant: str, audit_filter: queries.AuditFilter) -> dict[str, Any]:
    limit = _limit(request)
    rows = await queries.audit_entries(
        request.app[CONTAINER].pool, tenant, audit_filter, before_seq=_decode_cursor(request), limit=limit + 1
    )
    has_more = len(rows) > limit
    rows = rows[:limit]
    return {
        "logs": [_entry(row) for row in rows],
        "cursor": _encode_cursor(rows[-1]["seq"]) if has_more else None,
        "has_more": has_more,
    }


async def audit_logs(request: web.Request) -> web.Response:
    _, tenant = await _auditor(request)
    return json_response(await _page(request, tenant, _filters(request)))


async def secret_trail(request: web.Request) -> web.Response:
    """Every entry for one secret, with a summary of its last 30 days."""
    _, tenant = await _auditor(request)
    path = parse_path(request.match_info["path"])
    audit_filter = _filters(request)
    audit_filter.secret_path = path
    page = await _page(request, tenant, audit_filter)
    window = queries.AuditFilter(secret_path=path, since=datetime.now(timezone.utc) - timedelta(days=30))
    summary = await queries.audit_summary(request.app[CONTAINER].pool, tenant, window)
    return json_response({"path": path, **page, "summary": {"period_days": 30, **summary}})


async def identity_trail(request: web.Request) -> web.Response:
    _, tenant = await _auditor(request)
    identity_id = request.match_info["identity_id"]
    if not 3 <= len(identity_id) <= 320 or ":" not in identity_id:
        raise InvalidRequest("An identity is kind:name, e.g. user:alice@acme.example or sa:reporting")
    audit_filter = _filters(request)
    audit_filter.identity_id = identity_id
    page = await _page(request, tenant, audit_filter)
    summary = await queries.audit_summary(request.app[CONTAINER].pool, tenant, queries.AuditFilter(identity_id=identity_id))
    return json_response({"identity_id": identity_id, **page, "summary": summary})


async def audit_summary(request: web.Request) -> web.Response:
    _, tenant = await _auditor(request)
    audit_filter = queries.AuditFilter(since=_timestamp(request, "from"), until=_timestamp(request, "to"))
    summary = await queries.audit_summary(request.app[CONTAINER].pool, tenant, audit_filter)
    return json_response({"from": audit_filter.since, "to": audit_filter.until, **summary})


async def verify(request: web.Request) -> web.Response:
    """Recompute the tenant's chain; report the first entry altered, removed or reordered."""
    _, tenant = await _auditor(request)
    container = request.app[CONTAINER]
    report = await verify_audit_chain(container.pool, container.keyring, tenant)
    return json_response({"tenant_id": tenant, **report})


for _handler in (audit_logs, secret_trail, identity_trail, audit_summary):
    _handler.audit_action = "audit_read"  # type: ignore[attr-defined]
verify.audit_action = "audit_verify"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    for base in ("/v1/audit", "/v1/t/{tenant_id}/audit"):
        app.router.add_get(base + "/logs", audit_logs)
        app.router.add_get(base + "/secrets/{path:.+}", secret_trail)
        app.router.add_get(base + "/identities/{identity_id}", identity_trail)
        app.router.add_get(base + "/summary", audit_summary)
        app.router.add_get(base + "/verify", verify)
