"""Health checks: is the server ready to serve, and the detail an operator needs (spec reference/system,
operations/health-and-monitoring). Each check reports its failure by name, never with a credential."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

import scaivault
from projections.runner import ProjectionRunner
from scaivault.crypto.keyring import KeyRing
from scaivault.ratelimit import RateLimiter, RedisState
from scaivault.workers import ALONE, WorkerRole

log = logging.getLogger(__name__)

CHECK_TIMEOUT = 2.0
ENCRYPTION_CHECK_TTL = 5.0


@dataclass(frozen=True)
class Check:
    ok: bool
    latency_ms: float
    error: str | None = None  # for operators (detailed health, logs): may name hosts and addresses
    public_error: str | None = None  # for anyone (readiness needs no token): the kind of failure only


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f": {text}" if text and isinstance(exc, (OSError, asyncio.TimeoutError)) else ""


def _kind(exc: Exception) -> str:
    """The failure without its text: an OSError's strerror (``Connection refused``) names no host or address."""
    strerror = exc.strerror if isinstance(exc, OSError) else None
    return f"{type(exc).__name__}: {strerror}" if strerror else type(exc).__name__


async def _timed(check: Callable[[], Awaitable[Any]]) -> Check:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), CHECK_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - a failed check is reported, not raised
        return Check(False, (time.perf_counter() - started) * 1000, type(exc).__name__ + _reason(exc), _kind(exc))
    return Check(True, (time.perf_counter() - started) * 1000)


FALLBACK = "rate limiting continues with in-process buckets (limits apply per server)"


def _redis_fallback(state: RedisState) -> str:
    return f"{state.error}; {FALLBACK}"


class HealthChecks:
    def __init__(
        self, pool: asyncpg.Pool, keyring: KeyRing, rate_limiter: RateLimiter, projections: ProjectionRunner,
        worker: WorkerRole = ALONE,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._rate_limiter = rate_limiter
        self._projections = projections
        self._worker = worker
        self._started_at = time.monotonic()
        self._encryption_checked_at = float("-inf")  # last successful root-key round trip

    async def _database(self) -> None:
        await self._pool.fetchval("SELECT 1")

    async def _encryption(self) -> None:
        # A probe every few seconds must not turn into a KMS call each time (billed, rate limited): an answer stays
        # good for a few seconds.
        if time.monotonic() - self._encryption_checked_at > ENCRYPTION_CHECK_TTL:
            await self._keyring.root.check()
            self._encryption_checked_at = time.monotonic()

    async def _checks(self) -> dict[str, Check]:
        database, encryption = await asyncio.gather(_timed(self._database), _timed(self._encryption))
        return {"database": database, "encryption": encryption}

    async def _redis(self) -> tuple[RedisState, float]:
        """Redis holds only rate-limit buckets, and the limiter falls back to in-process ones without it: a Redis
        outage is reported (check ``error``, ``errors.redis``) but leaves the server ready."""
        started = time.perf_counter()
        state = await self._rate_limiter.check_redis()
        return state, (time.perf_counter() - started) * 1000

    async def readiness(self) -> tuple[dict[str, Any], bool]:
        """The readiness document, and whether the server is ready. Anyone may ask (probes carry no token), so
        errors say what kind of failure it is and never the text that names hosts or addresses (in the server's
        log and in detailed health instead)."""
        checks, (redis_state, _) = await asyncio.gather(self._checks(), self._redis())
        body: dict[str, Any] = {
            "status": "ready" if all(check.ok for check in checks.values()) else "not_ready",
            "checks": {name: "ok" if check.ok else "error" for name, check in checks.items()},
        }
        body["checks"]["redis"] = (
            "not_configured" if not redis_state.configured else "ok" if redis_state.available else "error"
        )
        errors = {name: check.public_error for name, check in checks.items() if not check.ok}
        for name, check in checks.items():
            if not check.ok:
                log.warning("readiness check failed", extra={"check": name, "error": check.error})
        if redis_state.configured and not redis_state.available:
            body["errors"] = {**errors, "redis": f"unavailable; {FALLBACK}"}
        elif errors:
            body["errors"] = errors
        return body, not errors

    async def _redis_detail(self) -> tuple[dict[str, Any], bool]:
        """The detailed Redis check, and whether Redis is configured but down."""
        state, latency_ms = await self._redis()
        if not state.configured:
            return {"status": "not_configured", "rate_limit_buckets": state.mode}, False
        if not state.available:
            return {
                "status": "error",
                "error": _redis_fallback(state),
                "unavailable_since": state.unavailable_since,
                "rate_limit_buckets": state.mode,
            }, True
        memory = await self._rate_limiter.memory_used_mb()
        return {
            "status": "ok",
            "latency_ms": round(latency_ms, 2),
            **({"memory_used_mb": memory} if memory is not None else {}),
            "rate_limit_buckets": state.mode,
        }, False

    async def detailed(self, *, with_pid: bool = False) -> dict[str, Any]:
        """Every component, with pool statistics and projection positions, and which worker process answers (its
        pid only with ``with_pid``: for authenticated operators, not the internal address): for operators only."""
        checks, (redis_check, redis_down) = await asyncio.gather(self._checks(), self._redis_detail())
        database, encryption = checks["database"], checks["encryption"]
        projections: dict[str, Any]
        try:
            projections = await self._projections.status(self._pool)
        except (OSError, asyncpg.PostgresError) as exc:
            projections = {"error": type(exc).__name__}
        failed = any(entry.get("state") == "failed" for entry in projections.values() if isinstance(entry, dict))
        healthy = database.ok and encryption.ok and not failed
        return {
            "status": "unhealthy" if not healthy else "degraded" if redis_down else "healthy",
            "version": scaivault.__version__,
            "uptime_seconds": int(time.monotonic() - self._started_at),
            "worker": {**self._worker.describe(), **({"pid": os.getpid()} if with_pid else {})},
            "checks": {
                "database": {
                    "status": "ok" if database.ok else "error",
                    "latency_ms": round(database.latency_ms, 2),
                    "pool_size": self._pool.get_size(),
                    "pool_available": self._pool.get_idle_size(),
                    **({"error": database.error} if database.error else {}),
                },
                "redis": redis_check,
                "encryption": {
                    "status": "ok" if encryption.ok else "error",
                    "latency_ms": round(encryption.latency_ms, 2),
                    "provider": self._keyring.root.name,
                    "key_status": "active" if encryption.ok else "unavailable",
                    **({"error": encryption.error} if encryption.error else {}),
                },
            },
            "projections": projections,
        }
