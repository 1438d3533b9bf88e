"""The front door every request passes: request id, error envelope, durable access record, access log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from scaivault.audit.access_records import AccessRecord, AccessRecorder
from scaivault.database import UNAVAILABLE, UNSTORABLE_TEXT
from scaivault.domain.errors import (
    InternalError,
    InvalidRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    ScaiVaultError,
    ServiceUnavailable,
)
from scaivault.domain.policies import IPNetwork
from scaivault.http.client_ip import client_ip
from scaivault.http.keys import ACCESS, CLIENT_IP, REQUEST_ID
from scaivault.http.responses import error_response
from scaivault.http.routing import UNKNOWN_ACTION, Handler, Unaudited
from scaivault.http.status import status_of_outcome
from scaivault.ids import new_request_id
from scaivault.metrics import Metrics, path_category
from scaivault.ratelimit.http import add_headers as add_rate_limit_headers

log = logging.getLogger("scaivault.http")
access_log = logging.getLogger("scaivault.access")


def _as_api_error(exc: web.HTTPException) -> ScaiVaultError:
    if exc.status == 404:
        return RouteNotFound()
    if exc.status == 405:
        return MethodNotAllowed()
    if exc.status == 413:
        return PayloadTooLarge()
    return InvalidRequest(exc.reason)


async def _answer(
    request: web.Request, handler: Handler, request_id: str
) -> tuple[web.StreamResponse, ScaiVaultError | None]:
    """The handler's response, or the error envelope for whatever it raised."""
    try:
        return await handler(request), None
    except ScaiVaultError as exc:
        error = exc
    except web.HTTPException as exc:
        error = _as_api_error(exc)
    except UNSTORABLE_TEXT:
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


class FrontDoor:
    """The middleware every request passes. ``actions``: the audit action of each route (scaivault/http/routing.py)."""

    def __init__(
        self,
        *,
        access_recorder: AccessRecorder,
        metrics: Metrics,
        trusted_proxies: tuple[IPNetwork, ...],
        actions: Mapping[AbstractRoute, str | Unaudited],
    ) -> None:
        self._access_recorder = access_recorder
        self._metrics = metrics
        self._trusted_proxies = trusted_proxies
        self._actions = actions

    def _access_record(self, request: web.Request, request_id: str, canonical: str) -> AccessRecord | None:
        action = self._actions.get(request.match_info.route, UNKNOWN_ACTION)
        if isinstance(action, Unaudited):
            return None
        return AccessRecord(
            recorded_at=datetime.now(UTC),
            request_id=request_id,
            method=request.method,
            route=canonical,
            action=action,
            source_ip=request[CLIENT_IP],
            user_agent=request.headers.get("User-Agent"),
            secret_path=request.match_info.get("path"),
            status_of=status_of_outcome,
        )

    @web.middleware
    async def handle(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        request_id = new_request_id()
        request[REQUEST_ID] = request_id
        request[CLIENT_IP] = client_ip(request, self._trusted_proxies)
        started = time.perf_counter()
        resource = request.match_info.route.resource
        canonical = resource.canonical if resource is not None else "unmatched"
        access = self._access_record(request, request_id, canonical)
        if access is not None:
            request[ACCESS] = access
        category = path_category(canonical)
        active = self._metrics.active_requests.labels(category)
        active.inc()
        try:
            response, error = await _answer(request, handler, request_id)
            if access is not None and not access.persisted:
                access.status = response.status
                access.error_code = error.code if error is not None else None
                access.duration_ms = int((time.perf_counter() - started) * 1000)
                try:
                    with self._metrics.stage["audit_durable"]:
                        await self._access_recorder.record(access)
                except ScaiVaultError as exc:  # fail closed: no durable record, no answer
                    error = exc
                    response = error_response(exc, request_id)
        finally:
            active.dec()
        elapsed = time.perf_counter() - started
        self._metrics.requests.labels(request.method, category, str(response.status)).inc()
        self._metrics.request_duration.labels(request.method, category).observe(elapsed)
        response.headers["X-Request-ID"] = request_id
        # Answers carry secret values, tokens and audit trails: no cache along the way may keep any of them.
        response.headers["Cache-Control"] = "no-store"
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
