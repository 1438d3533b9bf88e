"""The rate limiter: one token bucket per (identity, category), in Redis when REDIS_URL is set, else in-process.

When Redis fails, the limiter keeps limiting with in-process buckets (each server then enforces the limits on its
own) and logs that once; a background probe (and every readiness check) tries Redis again, and the first success
switches back and logs that once. No request waits for a Redis that is known to be down.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import redis.asyncio as redis
from prometheus_client import Counter, Histogram
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from scaivault.metrics import LATENCY_BUCKETS, Metrics
from scaivault.ratelimit.buckets import Charge, LocalBuckets, Outcome
from scaivault.ratelimit.categories import DEFAULT_LIMITS, GATES, Limit, parse_limits
from scaivault.ratelimit.redis_buckets import RedisBuckets
from scaivault.tasks import cancel_and_wait

if TYPE_CHECKING:
    from scaivault.config import Settings

log = logging.getLogger(__name__)

REDIS_TIMEOUT_SECONDS = 0.5
PROBE_SECONDS = 2.0
REDIS_FAILURES = (RedisError, OSError, asyncio.TimeoutError)


@dataclass(frozen=True)
class RedisState:
    """What readiness reports: ``mode`` is where buckets live now (``redis`` or ``in_process``)."""

    configured: bool
    available: bool
    error: str | None = None
    unavailable_since: datetime | None = None

    @property
    def mode(self) -> str:
        return "redis" if self.configured and self.available else "in_process"


class RateLimiter:
    def __init__(
        self,
        limits: Mapping[str, Limit | None] | None = DEFAULT_LIMITS,
        *,
        redis_url: str | None = None,
        key_prefix: str = "scaivault:",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        processes: int = 1,
    ) -> None:
        """``limits`` None disables limiting; a category mapped to None is not limited. ``processes``: how many
        serving processes keep in-process buckets for the same clients (``serve --workers N``): each holds 1/N of
        every limit (``LocalBuckets``); Redis buckets are shared, and hold the whole limit."""
        self.enabled = limits is not None
        self._limits = dict(limits or {})
        self._gates: dict[str, tuple[tuple[str, Limit], ...]] = {
            category: tuple((gate, limit) for gate in gates if (limit := self._limits.get(gate)) is not None)
            for category, gates in GATES.items()
        }
        self._prefix = key_prefix + "rl:"
        self._local = LocalBuckets(clock, shared_by=processes)
        self._client: redis.Redis | None = None
        self._redis: RedisBuckets | None = None
        if redis_url and self.enabled:
            self._client = redis.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 1),  # one immediate retry covers a pooled connection the server closed
            )
            self._redis = RedisBuckets(self._client)
        self._redis_up = True
        self._redis_error: str | None = None
        self._down_since: datetime | None = None
        self._probe: asyncio.Task[None] | None = None
        self._hits: Counter | None = None
        self._redis_latency: Histogram | None = None
        if metrics is not None:
            self._hits = Counter(
                "scaivault_rate_limit_hits_total", "Requests refused with 429", ["category"], registry=metrics.registry
            )
            self._redis_latency = Histogram(
                "scaivault_redis_latency_seconds", "Redis round trips of the rate limiter",
                buckets=LATENCY_BUCKETS, registry=metrics.registry,
            )

    @classmethod
    def from_settings(cls, settings: Settings, metrics: Metrics | None = None, *, processes: int = 1) -> RateLimiter:
        return cls(
            parse_limits(settings.rate_limits),
            redis_url=settings.redis_url,
            key_prefix=settings.redis_key_prefix,
            metrics=metrics,
            processes=processes,
        )

    # ---- charging ------------------------------------------------------------------------------------------------

    async def charge(self, identity: str, category: str) -> Outcome | None:
        """Take one token of ``identity``'s ``category`` bucket (and check its gates). None when the category is
        not limited; otherwise the outcome to report: on refusal, the bucket that refused."""
        limit = self._limits.get(category)
        if limit is None:
            return None
        charges = [Charge(self._key(identity, category), category, limit)]
        for gate, gate_limit in self._gates.get(category, ()):
            charges.append(Charge(self._key(identity, gate), gate, gate_limit, cost=0.0))
        outcomes = self._local.take(charges) if self._redis is None or not self._redis_up else await self._take(charges)
        if outcomes[0].allowed:
            return outcomes[0]
        if self._hits is not None:
            self._hits.labels(category).inc()
        return next(outcome for outcome in outcomes if outcome.level < outcome.charge.need)

    async def charge_extra(self, identity: str, category: str, cost: int) -> None:
        """Take ``cost`` tokens after the fact, never refusing: the bucket may go into debt, which the identity's
        next requests in that category wait out."""
        limit = self._limits.get(category)
        if limit is not None and cost > 0:
            charges = [Charge(self._key(identity, category), category, limit, cost=float(cost), need=0.0)]
            self._local.take(charges) if self._redis is None or not self._redis_up else await self._take(charges)

    def _key(self, identity: str, category: str) -> str:
        # The identity is the hash tag, so one request's buckets share a Redis Cluster slot (one script may use them).
        return f"{self._prefix}{{{identity}}}:{category}"

    async def _take(self, charges: list[Charge]) -> list[Outcome]:
        """From the Redis buckets; from the in-process ones should Redis fail."""
        assert self._redis is not None
        started = time.perf_counter()
        try:
            outcomes = await self._redis.take(charges)
        except REDIS_FAILURES as exc:
            self._went_down(exc)
            return self._local.take(charges)
        if self._redis_latency is not None:
            self._redis_latency.observe(time.perf_counter() - started)
        return outcomes

    # ---- Redis availability ----------------------------------------------------------------------------------------

    @property
    def redis_state(self) -> RedisState:
        return RedisState(
            configured=self._client is not None,
            available=self._redis_up,
            error=self._redis_error,
            unavailable_since=self._down_since,
        )

    async def check_redis(self) -> RedisState:
        """Ping Redis now; a success after an outage switches back to Redis buckets."""
        if self._client is None:
            return self.redis_state
        try:
            await asyncio.wait_for(self._client.ping(), REDIS_TIMEOUT_SECONDS * 4)
        except REDIS_FAILURES as exc:
            self._went_down(exc)
        else:
            self._came_back()
        return self.redis_state

    async def memory_used_mb(self) -> float | None:
        if self._client is None or not self._redis_up:
            return None
        try:
            info = await asyncio.wait_for(self._client.info("memory"), REDIS_TIMEOUT_SECONDS * 4)
        except REDIS_FAILURES:
            return None
        return round(int(info.get("used_memory", 0)) / 1024 / 1024, 1)

    def _went_down(self, exc: BaseException) -> None:
        self._redis_error = _describe(exc)
        if self._redis_up:
            self._redis_up = False
            self._down_since = datetime.now(UTC)
            log.warning(
                "Redis unavailable: rate limiting continues with in-process buckets (limits now apply per server)",
                extra={"error": self._redis_error},
            )

    def _came_back(self) -> None:
        if not self._redis_up:
            log.info(
                "Redis available again: rate limiting uses the shared Redis buckets",
                extra={"unavailable_since": self._down_since.isoformat() if self._down_since else None},
            )
        self._redis_up, self._redis_error, self._down_since = True, None, None

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._client is not None and self._probe is None:
            await self.check_redis()
            self._probe = asyncio.create_task(self._probe_while_down(), name="redis-probe")

    async def _probe_while_down(self) -> None:
        while True:
            await asyncio.sleep(PROBE_SECONDS)
            if not self._redis_up:
                await self.check_redis()

    async def close(self) -> None:
        if self._probe is not None:
            await cancel_and_wait([self._probe])
            self._probe = None
        if self._redis is not None:
            await self._redis.close()
        if self._client is not None:
            await self._client.aclose()


def _describe(exc: BaseException) -> str:
    """The failure's kind and first line (Redis errors name host and port, never the URL's password)."""
    text = str(exc).splitlines()[0][:200] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
