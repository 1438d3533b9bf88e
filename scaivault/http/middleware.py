"""The front door every request passes: request id, error envelope, durable access record, access log line."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone

import asyncpg
from aiohttp import web

from scaivault.audit.access_records import AccessRecord
from scaivault.domain.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    ScaiVaultError,
    ServiceUnavailable,
)
from scaivault.ids import new_id
from scaivault.http.client_ip import client_ip
from scaivault.http.keys import ACCESS, CONTAINER, REQUEST_ID
from scaivault.http.responses import error_response
from scaivault.metrics import path_category
from scaivault.ratelimit.http import add_headers as add_rate_limit_headers

log = logging.getLogger("scaivault.http")
access_log = logging.getLogger("scaivault.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# A handler's ``audit_action`` names its audit action; handlers marked ``audited = False`` (liveness, readiness,
# version, metrics: nothing about a tenant happens there) leave no access record.
UNKNOWN_ACTION = "unknown"

UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)

def new_request_id() -> str:
    return new_id("req_")


def _as_api_error(exc: web.HTTPException) -> ScaiVaultError:
    if exc.status == 404:
        return RouteNotFound()
    if exc.status == 405:
        return MethodNotAllowed()
    if exc.status == 413:
        return PayloadTooLarge()
    return InvalidRequest(exc.reason)


def _access_record(request: web.Request, request_id: str, canonical: str) -> AccessRecord | None:
    handler_function = request.match_info.handler
    if not getattr(handler_function, "audited", True):
        return None
    return AccessRecord(
        recorded_at=datetime.now(timezone.utc),
        request_id=request_id,
        method=request.method,
        route=canonical,
        action=getattr(handler_function, "audit_action", UNKNOWN_ACTION),
        source_ip=client_ip(request),
        user_agent=request.headers.get("User-Agent"),
        secret_path=request.match_info.get("path"),
    )


async def _answer(request: web.Request, handler: Handler, request_id: str) -> tuple[web.StreamResponse, ScaiVaultError | None]:
    """The handler's response, or the error envelope for whatever it raised."""
    try:
        return await handler(request), None
    except ScaiVaultError as exc:
        error = exc
    except web.HTTPException as exc:
        error = _as_api_error(exc)
    except asyncpg.CharacterNotInRepertoireError:
        # A NUL (or other unstorable character) in a value the request sent, met by PostgreSQL before any check of
        # ours: nothing stored can hold it, so it can match nothing and be written nowhere. The transaction, if
        # any, rolled back.
        error = InvalidRequest("A value in the request contains a character that cannot be stored (NUL)")
    except UNAVAILABLE as exc:  # the database is down, overloaded or locked up: transient, and the client may retry
        log.warning("dependency unavailable", extra={"request_id": request_id, "error": type(exc).__name__})
        error = ServiceUnavailable()
    except Exception:  # the client gets a plain 500; the traceback stays in our logs
        log.exception("unhandled error", extra={"request_id": request_id})
        error = InternalError()
    return error_response(error, request_id), error


@web.middleware
async def front_door(request: web.Request, handler: Handler) -> web.StreamResponse:
    request_id = new_request_id()
    request[REQUEST_ID] = request_id
    started = time.perf_counter()
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else "unmatched"
    access = _access_record(request, request_id, canonical)
    if access is not None:
        request[ACCESS] = access
    container = request.app[CONTAINER]
    category = path_category(canonical)
    active = container.metrics.active_requests.labels(category)
    active.inc()
    try:
        response, error = await _answer(request, handler, request_id)
        if access is not None and not access.persisted:
            access.status = response.status
            access.error_code = error.code if error is not None else None
            access.duration_ms = int((time.perf_counter() - started) * 1000)
            try:
                await container.access_recorder.record(access)
            except ScaiVaultError as exc:  # fail closed: no durable record, no answer
                error = exc
                response = error_response(exc, request_id)
    finally:
        active.dec()
    elapsed = time.perf_counter() - started
    container.metrics.requests.labels(request.method, category, str(response.status)).inc()
    container.metrics.request_duration.labels(request.method, category).observe(elapsed)
    response.headers["X-Request-ID"] = request_id
    add_rate_limit_headers(request, response)
    access_log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": request.method,
            "route": canonical,
            "status": response.status,
            "error_code": error.code if error is not None else None,
            "duration_ms": round(elapsed * 1000, 2),
        },
    )
    return response
