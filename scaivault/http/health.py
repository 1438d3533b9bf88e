"""Liveness, readiness, detailed health and version (spec reference/system, operations/health-and-monitoring)."""

from __future__ import annotations

import asyncio
import platform
import time
from datetime import datetime, timezone
from typing import Any

import asyncpg
from aiohttp import web

import scaivault
from scaivault.http.context import authenticated_principal
from scaivault.domain.errors import InsufficientScope
from scaivault.http.keys import CONTAINER
from scaivault.http.responses import json_response
from scaivault.ratelimit import RedisState

CHECK_TIMEOUT = 2.0
ENCRYPTION_CHECK_TTL = 5.0


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy", "timestamp": datetime.now(timezone.utc)})


async def _checks(request: web.Request) -> dict[str, tuple[bool, float, str | None]]:
    """Each component: (ok, latency in ms, error message). Messages name the failure, never a credential."""
    container = request.app[CONTAINER]

    async def timed(check: Any) -> tuple[bool, float, str | None]:
        started = time.perf_counter()
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except Exception as exc:  # a failed check is reported, not raised
            return False, (time.perf_counter() - started) * 1000, type(exc).__name__ + _reason(exc)
        return True, (time.perf_counter() - started) * 1000, None

    async def database() -> None:
        await container.pool.fetchval("SELECT 1")

    async def encryption() -> None:
        # A probe every few seconds must not turn into a KMS call each time (billed, rate limited): an answer
        # stays good for a few seconds.
        if time.monotonic() - container.encryption_checked_at > ENCRYPTION_CHECK_TTL:
            await container.keyring.root.check()
            container.encryption_checked_at = time.monotonic()

    database_result, encryption_result = await asyncio.gather(timed(database), timed(encryption))
    return {"database": database_result, "encryption": encryption_result}


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f": {text}" if text and isinstance(exc, (OSError, asyncio.TimeoutError)) else ""


async def _redis(request: web.Request) -> tuple[RedisState, float]:
    """Redis holds only rate-limit buckets, and the limiter falls back to in-process ones without it: a Redis
    outage is reported (check ``error``, ``errors.redis``) but leaves the server ready."""
    started = time.perf_counter()
    state = await request.app[CONTAINER].rate_limiter.check_redis()
    return state, (time.perf_counter() - started) * 1000


def _redis_fallback(state: RedisState) -> str:
    return f"{state.error}; rate limiting continues with in-process buckets (limits apply per server)"


async def ready(request: web.Request) -> web.Response:
    checks, (redis_state, _) = await asyncio.gather(_checks(request), _redis(request))
    body: dict[str, Any] = {
        "status": "ready" if all(ok for ok, _, _ in checks.values()) else "not_ready",
        "checks": {name: "ok" if ok else "error" for name, (ok, _, _) in checks.items()},
    }
    body["checks"]["redis"] = (
        "not_configured" if not redis_state.configured else "ok" if redis_state.available else "error"
    )
    errors = {name: error for name, (ok, _, error) in checks.items() if not ok}
    if redis_state.configured and not redis_state.available:
        body["errors"] = {**errors, "redis": _redis_fallback(redis_state)}
    elif errors:
        body["errors"] = errors
    return json_response(body, status=200 if not errors else 503)


async def _redis_detail(request: web.Request) -> tuple[dict[str, Any], bool]:
    """The detailed Redis check, and whether Redis is configured but down."""
    state, latency_ms = await _redis(request)
    if not state.configured:
        return {"status": "not_configured", "rate_limit_buckets": state.mode}, False
    if not state.available:
        return {
            "status": "error",
            "error": _redis_fallback(state),
            "unavailable_since": state.unavailable_since,
            "rate_limit_buckets": state.mode,
        }, True
    memory = await request.app[CONTAINER].rate_limiter.memory_used_mb()
    return {
        "status": "ok",
        "latency_ms": round(latency_ms, 2),
        **({"memory_used_mb": memory} if memory is not None else {}),
        "rate_limit_buckets": state.mode,
    }, False


async def detailed(request: web.Request) -> web.Response:
    principal = await authenticated_principal(request)
    if not principal.has_scope("admin"):
        raise InsufficientScope("This request needs the scope admin", required_scope="admin")
    container = request.app[CONTAINER]
    checks, (redis_check, redis_down) = await asyncio.gather(_checks(request), _redis_detail(request))
    pool = container.pool
    database_ok, database_ms, database_error = checks["database"]
    encryption_ok, encryption_ms, encryption_error = checks["encryption"]
    try:
        projections = await container.projections.status(pool)
    except (OSError, asyncpg.PostgresError) as exc:
        projections = {"error": type(exc).__name__}
    failed = any(entry.get("state") == "failed" for entry in projections.values() if isinstance(entry, dict))
    healthy = database_ok and encryption_ok and not failed
    body = {
        "status": "unhealthy" if not healthy else "degraded" if redis_down else "healthy",
        "version": scaivault.__version__,
        "uptime_seconds": int(time.monotonic() - container.started_at),
        "checks": {
            "database": {
                "status": "ok" if database_ok else "error",
                "latency_ms": round(database_ms, 2),
                "pool_size": pool.get_size(),
                "pool_available": pool.get_idle_size(),
                **({"error": database_error} if database_error else {}),
            },
            "redis": redis_check,
            "encryption": {
                "status": "ok" if encryption_ok else "error",
                "latency_ms": round(encryption_ms, 2),
                "provider": container.keyring.root.name,
                "key_status": "active" if encryption_ok else "unavailable",
                **({"error": encryption_error} if encryption_error else {}),
            },
        },
        "projections": projections,
    }
    return json_response(body)


async def version(request: web.Request) -> web.Response:
    return json_response(
        {
            "version": scaivault.__version__,
            "api_version": "v1",
            "python": platform.python_version(),
            "event_store": "postgresql",
        }
    )


for _handler in (health, ready, version):
    _handler.audited = False  # type: ignore[attr-defined]
detailed.audit_action = "health_detailed"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/health/ready", ready)
    app.router.add_get("/v1/health/detailed", detailed)
    app.router.add_get("/v1/version", version)
