"""Rate-limit buckets in the machine's real Redis (127.0.0.1:6379): shared between limiters, refilled by Redis's
clock, one EVALSHA per charge, and the fall-back to in-process buckets when Redis goes away and back when it returns.

Each test uses its own key prefix and deletes its keys afterwards. "Redis goes away" is a TCP proxy in front of the
real Redis being shut (refusing new connections and cutting open ones): tests/redis_helpers.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as redis

from scaivault.ratelimit import RateLimiter
from scaivault.ratelimit.buckets import Charge
from scaivault.ratelimit.categories import Limit, parse_limits
from scaivault.ratelimit.redis_buckets import RedisBuckets
from tests.redis_helpers import REDIS_URL, RedisProxy, requires_redis

# `.ci/run` starts the machine's Redis; elsewhere, without one, these tests say why they did not run.
pytestmark = requires_redis


@contextlib.asynccontextmanager
async def limiter(limits: str, url: str, prefix: str) -> AsyncIterator[RateLimiter]:
    limiter = RateLimiter(parse_limits(limits), redis_url=url, key_prefix=prefix)
    await limiter.start()
    try:
        yield limiter
    finally:
        await limiter.close()


def bucket_key(prefix: str, identity: str, category: str) -> str:
    return f"{prefix}rl:{{{identity}}}:{category}"


async def test_two_limiters_share_one_bucket(redis_prefix: str) -> None:
    async with limiter("secrets_read=3/h", REDIS_URL, redis_prefix) as first, \
            limiter("secrets_read=3/h", REDIS_URL, redis_prefix) as second:
        assert (await first.charge("alice", "secrets_read")).level == 2
        assert (await second.charge("alice", "secrets_read")).level == pytest.approx(1, abs=0.01)
        assert (await first.charge("alice", "secrets_read")).allowed
        refused_here, refused_there = await first.charge("alice", "secrets_read"), await second.charge(
            "alice", "secrets_read"
        )
        assert not refused_here.allowed and not refused_there.allowed
        assert refused_there.retry_after in (1200, 1199)  # one token per 20 min, a little of it already back
        assert (await second.charge("bob", "secrets_read")).allowed
        assert first.redis_state.mode == second.redis_state.mode == "redis"


async def test_refill_follows_the_time_stored_with_the_bucket(redis_prefix: str, raw_redis: redis.Redis) -> None:
    async with limiter("secrets_write=6/h", REDIS_URL, redis_prefix) as shared:
        for _ in range(6):
            assert (await shared.charge("alice", "secrets_write")).allowed
        assert not (await shared.charge("alice", "secrets_write")).allowed
        key = bucket_key(redis_prefix, "alice", "secrets_write")
        seconds, micros = await raw_redis.time()
        # As if the bucket had been emptied 30 min ago: 3 tokens (one per 10 min) have come back since.
        await raw_redis.hset(key, mapping={"level": "0", "at": repr(seconds + micros / 1e6 - 1800)})
        outcome = await shared.charge("alice", "secrets_write")
        assert outcome.allowed and outcome.level == pytest.approx(2, abs=0.01)
        await raw_redis.hset(key, mapping={"level": "0", "at": repr(seconds + micros / 1e6 - 86400)})
        assert (await shared.charge("alice", "secrets_write")).level == pytest.approx(5, abs=0.01)  # capped at 6


async def test_a_bucket_expires_when_it_would_be_full_again(redis_prefix: str, raw_redis: redis.Redis) -> None:
    async with limiter("audit_export=5/h", REDIS_URL, redis_prefix) as shared:
        await shared.charge("alice", "audit_export")
        await shared.charge("alice", "audit_export")
        ttl_ms = await raw_redis.pttl(bucket_key(redis_prefix, "alice", "audit_export"))
        assert 1_430_000 < ttl_ms <= 1_441_000  # 2 tokens at 1 per 12 min, plus a second of slack


async def test_batch_gate_and_debt_in_redis(redis_prefix: str) -> None:
    async with limiter("secrets_read=5/h,batch_read=10/h", REDIS_URL, redis_prefix) as shared:
        assert (await shared.charge("alice", "batch_read")).allowed
        await shared.charge_extra("alice", "secrets_read", 8)
        refused = await shared.charge("alice", "batch_read")
        assert not refused.allowed and refused.charge.category == "secrets_read"
        assert refused.level == pytest.approx(-3, abs=0.01)
        assert refused.retry_after in (2880, 2879)  # 4 tokens at 1 per 12 min


class CountingRedis(redis.Redis):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands.append(str(args[0]).upper())
        return await super().execute_command(*args, **options)


async def test_one_charge_is_one_evalsha(redis_prefix: str) -> None:
    client = CountingRedis.from_url(REDIS_URL)
    try:
        buckets = RedisBuckets(client)
        limit = Limit(10, 60)
        charges = [Charge(bucket_key(redis_prefix, "alice", c), c, limit) for c in ("batch_read", "secrets_read")]
        await buckets.take(charges)  # may load the script first (NOSCRIPT)
        client.commands.clear()
        for _ in range(3):
            await buckets.take(charges)
        assert client.commands == ["EVALSHA"] * 3
    finally:
        await client.aclose()


async def test_concurrent_charges_go_out_together_and_each_is_counted_once(
    redis_prefix: str, raw_redis: redis.Redis
) -> None:
    client = CountingRedis.from_url(REDIS_URL)
    try:
        buckets = RedisBuckets(client)
        await raw_redis.script_flush()  # the pipelined path must load the script itself (NOSCRIPT)
        charge = Charge(bucket_key(redis_prefix, "alice", "secrets_read"), "secrets_read", Limit(10, 3600))
        outcomes = await asyncio.gather(*(buckets.take([charge]) for _ in range(12)))
        assert "EVALSHA" not in client.commands  # none went out alone
        allowed = sorted(round(outcome.level) for [outcome] in outcomes if outcome.allowed)
        assert allowed == list(range(10))
        assert sum(not outcome.allowed for [outcome] in outcomes) == 2
    finally:
        await client.aclose()


async def test_redis_down_falls_back_to_in_process_buckets_and_recovers(
    redis_prefix: str, raw_redis: redis.Redis, redis_proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="scaivault.ratelimit")
    async with limiter("secrets_read=2/h", redis_proxy.url, redis_prefix) as shared:
        assert (await shared.charge("alice", "secrets_read")).allowed
        assert await raw_redis.exists(bucket_key(redis_prefix, "alice", "secrets_read"))
        await redis_proxy.shut()
        outcomes = [await shared.charge("alice", "secrets_read") for _ in range(3)]
        # The in-process bucket starts full: each server enforces the limit alone while Redis is away.
        assert [outcome.allowed for outcome in outcomes] == [True, True, False]
        state = await shared.check_redis()
        assert (state.configured, state.available, state.mode) == (True, False, "in_process")
        assert state.error and state.unavailable_since is not None
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "in-process" in warnings[0].getMessage()  # once per outage

        await redis_proxy.open()
        await raw_redis.delete(bucket_key(redis_prefix, "bob", "secrets_read"))
        assert (await shared.charge("bob", "secrets_read")).allowed
        assert not await raw_redis.exists(bucket_key(redis_prefix, "bob", "secrets_read"))  # still in-process
        state = await shared.check_redis()
        assert (state.available, state.mode, state.error) == (True, "redis", None)
        assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO] == [
            "Redis available again: rate limiting uses the shared Redis buckets"
        ]
        # Back on the shared bucket, which still remembers alice's first request.
        outcome = await shared.charge("alice", "secrets_read")
        assert outcome.allowed and outcome.level == pytest.approx(0, abs=0.01)
        assert not (await shared.charge("alice", "secrets_read")).allowed


async def test_a_limiter_starting_while_redis_is_down_serves_in_process(
    redis_prefix: str, redis_proxy: RedisProxy
) -> None:
    await redis_proxy.shut()
    async with limiter("secrets_read=1/m", redis_proxy.url, redis_prefix) as shared:
        assert shared.redis_state.mode == "in_process"
        assert (await shared.charge("alice", "secrets_read")).allowed
        assert not (await shared.charge("alice", "secrets_read")).allowed
        await redis_proxy.open()
        assert (await shared.check_redis()).mode == "redis"
        assert (await shared.charge("alice", "secrets_read")).allowed  # a fresh shared bucket
