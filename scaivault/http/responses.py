"""JSON in and out, and the spec's error envelope."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

import orjson
from aiohttp import web

from scaivault.domain.errors import (
    InternalError,
    InvalidRequest,
    ValidationFailed,
    PayloadTooLarge,
    ScaiVaultError,
)

# HTTP status of every error code (spec reference/error-codes and the spec README's decisions).
STATUS_BY_CODE: dict[str, int] = {
    "authentication_required": 401,
    "token_expired": 401,
    "token_invalid": 401,
    "token_revoked": 401,
    "token_issuer_invalid": 401,
    "token_algorithm_not_allowed": 401,
    "token_audience_invalid": 401,
    "signature_invalid": 401,
    "signature_expired": 401,
    "access_denied": 403,
    "insufficient_scope": 403,
    "mfa_required": 403,
    "ip_not_allowed": 403,
    "time_window_violation": 403,
    "tenant_access_denied": 403,
    "forbidden": 403,
    "invalid_request": 400,
    "invalid_path": 400,
    "invalid_secret_type": 400,
    "invalid_duration": 400,
    "invalid_cursor": 400,
    "invalid_config": 400,
    "invalid_role": 400,
    "invalid_policy": 400,
    "invalid_glob": 400,
    "validation_error": 422,
    "not_found": 404,
    "secret_not_found": 404,
    "version_not_found": 404,
    "tenant_not_found": 404,
    "export_not_found": 404,
    "identity_not_found": 404,
    "policy_not_found": 404,
    "binding_not_found": 404,
    "method_not_allowed": 405,
    "secret_exists": 409,
    "version_conflict": 409,
    "identity_exists": 409,
    "policy_in_use": 409,
    "binding_exists": 409,
    "payload_too_large": 413,
    "rate_limited": 429,
    "internal_error": 500,
    "service_unavailable": 503,
}


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC with microseconds and Z, as every timestamp of the API (isoformat: several times strftime's
    speed, and responses carry many timestamps)."""
    if value.utcoffset() != _ZERO:
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_ZERO = timedelta(0)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, (UUID, frozenset, set, tuple)):
        return str(value) if isinstance(value, UUID) else list(value)
    raise TypeError(type(value).__name__)


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json", headers=headers)


def error_response(error: ScaiVaultError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    if error.code == InternalError.code:  # whatever went wrong inside stays inside (our logs have it)
        body: dict[str, Any] = {"code": error.code, "message": InternalError.default_message, "request_id": request_id}
        return json_response({"error": body}, status=500, headers=headers)
    body = {"code": error.code, "message": error.message, "request_id": request_id}
    if error.details:
        body["details"] = error.details
    return json_response({"error": body}, status=STATUS_BY_CODE.get(error.code, 500), headers=headers)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object; anything else is ``invalid_request``."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(max_bytes=request.app._client_max_size) from None  # noqa: SLF001
    if not raw:
        raise InvalidRequest("The request needs a JSON body")
    try:
        # The standard library keeps integers exact (orjson would turn one beyond 64 bits into a float: a secret
        # value silently changed); NaN and Infinity are not JSON.
        body = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidRequest("The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object")
    _check_storable(body, depth=0)
    return body


MAX_JSON_DEPTH = 32
_INT64 = range(-(2**63), 2**63)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _check_storable(value: Any, depth: int) -> None:
    """Refuse what cannot be stored and given back exactly: integers beyond 64 bits, deep nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValidationFailed(fields=[{"field": "body", "message": f"nested deeper than {MAX_JSON_DEPTH} levels"}])
    if isinstance(value, dict):
        for item in value.values():
            _check_storable(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_storable(item, depth + 1)
    elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise ValidationFailed(fields=[{"field": "body", "message": "an integer is outside the 64-bit range"}])
