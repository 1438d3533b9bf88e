"""JSON in and out, and the spec's error envelope."""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from scaivault.domain.errors import (
    InternalError,
    InvalidRequest,
    PayloadTooLarge,
    ScaiVaultError,
    ValidationFailed,
)
from scaivault.http.keys import ACCESS
from scaivault.http.status import status_of
from scaivault.serialization import dumps

# Secret data is capped at 64 KiB; JSON escaping and metadata fit comfortably under this.
MAX_BODY_BYTES = 512 * 1024


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=dumps(body), status=status, content_type="application/json", headers=headers)


def committed_response(
    request: web.Request, body: Any = None, *, headers: dict[str, str] | None = None
) -> web.Response:
    """The answer to a request whose command committed: its status is the one the command's outcome gave the access
    record committed with it, so the client and the audit log always agree (204: no body)."""
    status = request[ACCESS].status
    if status == 204:
        return web.Response(status=204, headers=headers)
    return json_response(body, status=status, headers=headers)


def error_response(error: ScaiVaultError, request_id: str, headers: dict[str, str] | None = None) -> web.Response:
    if error.code == InternalError.code:  # whatever went wrong inside stays inside (our logs have it)
        body: dict[str, Any] = {"code": error.code, "message": InternalError.default_message, "request_id": request_id}
        return json_response({"error": body}, status=500, headers=headers)
    body = {"code": error.code, "message": _printable(error.message), "request_id": request_id}
    if error.details:
        body["details"] = _printable(error.details)
    return json_response({"error": body}, status=status_of(error.code), headers=headers)


def _printable(value: Any) -> Any:
    """Details echo what the request sent, which may hold lone surrogates (a header's bytes that are not UTF-8):
    escaped, so the envelope is always valid JSON."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(key): _printable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_printable(item) for item in value]
    return value


async def read_json_object(request: web.Request, *, opaque: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The request body as a JSON object; anything else is ``invalid_request``, and a value that could not be stored
    and given back exactly is 422 ``validation_error`` naming its field (see ``_check_storable``). ``opaque``: top-level
    fields that are sealed whole, never stored as text or JSON (a secret's ``data``), which may hold a NUL."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(max_bytes=MAX_BODY_BYTES) from None
    if not raw:
        raise InvalidRequest("The request needs a JSON body")
    try:
        # The standard library keeps integers exact (orjson would turn one beyond 64 bits into a float: a secret
        # value silently changed); NaN and Infinity are not JSON, nor is a number too large for a double (1e999
        # would come back as null).
        body = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise InvalidRequest("The body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object")
    for key, value in body.items():
        _check_text(key, key, nul_allowed=False)
        _check_storable(key, value, depth=1, nul_allowed=key in opaque)
    return body


MAX_JSON_DEPTH = 32
_INT64 = range(-(2**63), 2**63)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def _refuse(field: str, message: str) -> ValidationFailed:
    """The field is named as the caller sent it, made printable: the answer itself must be valid JSON."""
    label = field[:256].encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\u0000")
    return ValidationFailed(fields=[{"field": label or "body", "message": message}])


def _check_text(field: str, text: str, nul_allowed: bool) -> None:
    if not nul_allowed and "\x00" in text:
        raise _refuse(field, "contains a NUL character, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (\ud800): no UTF-8 text holds it
        raise _refuse(field, "contains an unpaired surrogate, which is not valid Unicode") from None


def _check_storable(field: str, value: Any, depth: int, nul_allowed: bool) -> None:
    """Refuse what cannot be stored and given back exactly: integers beyond 64 bits, deep nesting, text that is not
    valid Unicode, and NUL characters (PostgreSQL text and JSON cannot hold one) outside opaque fields."""
    if depth > MAX_JSON_DEPTH:
        raise _refuse("body", f"nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(field, value, nul_allowed)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(f"{field}.{key}", key, nul_allowed)
            _check_storable(f"{field}.{key}", item, depth + 1, nul_allowed)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_storable(f"{field}[{index}]", item, depth + 1, nul_allowed)
    elif isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise _refuse(field, "an integer is outside the 64-bit range")
