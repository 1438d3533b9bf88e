"""Token-bucket arithmetic and the in-process limiter, on a clock the test moves."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.metrics import Metrics
from scaivault.ratelimit import RateLimiter
from scaivault.ratelimit.buckets import Charge, LocalBuckets
from scaivault.ratelimit.categories import DEFAULT_LIMITS, Limit, parse_limits
from tests.helpers import Clock

TEN_PER_MINUTE = Limit(10, 60.0)


def charge(key: str = "k", limit: Limit = TEN_PER_MINUTE, cost: float = 1.0, need: float = 1.0) -> Charge:
    return Charge(key, "secrets_read", limit, cost, need)


def test_a_burst_up_to_the_bucket_size_then_refusal_with_the_wait_until_a_token() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    levels = [buckets.take([charge()])[0] for _ in range(10)]
    assert all(outcome.allowed for outcome in levels)
    assert [outcome.level for outcome in levels] == [float(n) for n in range(9, -1, -1)]
    refused = buckets.take([charge()])[0]
    assert not refused.allowed
    assert refused.level == 0.0
    assert refused.retry_after == 6  # one token every 6 s
    assert refused.seconds_until_full == 60.0


def test_tokens_refill_continuously_and_never_beyond_the_bucket_size() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    for _ in range(10):
        buckets.take([charge()])
    clock.now += 5.9
    assert not buckets.take([charge()])[0].allowed
    clock.now += 0.1
    outcome = buckets.take([charge()])[0]
    assert outcome.allowed and abs(outcome.level) < 1e-9
    clock.now += 3600
    assert buckets.take([charge()])[0].level == 9.0  # refilled to 10, not 600


def test_retry_after_is_at_least_one_second_and_rounds_up() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    fast = Limit(100, 1.0)
    for _ in range(100):
        buckets.take([charge(limit=fast)])
    assert buckets.take([charge(limit=fast)])[0].retry_after == 1
    slow = Limit(1, 3600.0)
    buckets.take([charge("s", slow)])
    clock.now += 1
    assert buckets.take([charge("s", slow)])[0].retry_after == 3599


def test_charges_are_all_or_nothing() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    for _ in range(10):
        buckets.take([charge("b")])
    outcomes = buckets.take([charge("a"), charge("b")])
    assert [o.allowed for o in outcomes] == [False, False]
    assert buckets.take([charge("a")])[0].level == 9.0  # "a" was not charged by the refused pair


def test_a_charge_needing_nothing_may_leave_a_debt_that_later_charges_wait_out() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    debt = buckets.take([charge(cost=13, need=0)])[0]
    assert debt.allowed and debt.level == -3.0
    refused = buckets.take([charge()])[0]
    assert not refused.allowed
    assert refused.retry_after == 24  # (1 - -3) tokens at 1 per 6 s
    clock.now += 24
    assert buckets.take([charge()])[0].allowed


def test_a_gate_checks_a_bucket_without_taking_from_it() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    gate = charge("gate", cost=0)
    for _ in range(5):
        assert buckets.take([charge("main"), gate])[1].level == 10.0
    buckets.take([charge("gate", cost=10, need=0)])
    outcomes = buckets.take([charge("main"), gate])
    assert not outcomes[0].allowed and outcomes[1].level == 0.0


def test_refilled_buckets_are_swept_so_idle_identities_cost_no_memory() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock)
    buckets.take([charge("idle")])  # full again 6 s later
    clock.now += 50
    buckets.take([charge("busy", cost=10)])  # full again 60 s later
    assert len(buckets) == 2
    clock.now += 10  # the first sweep is due: "idle" has refilled, "busy" has not
    buckets.take([charge("other")])
    assert len(buckets) == 2
    assert buckets.take([charge("busy")])[0].level < 9


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(min_value=0, max_value=20), st.integers(min_value=1, max_value=5)), max_size=80))
def test_never_more_than_the_bucket_plus_what_refilled(steps: list[tuple[float, int]]) -> None:
    """Over any sequence of waits and requests, the tokens granted stay within capacity + rate x elapsed, and a
    refusal only happens when the bucket really holds less than one token."""
    clock = Clock()
    buckets = LocalBuckets(clock)
    granted, elapsed = 0, 0.0
    for wait, requests in steps:
        clock.now += wait
        elapsed += wait
        for _ in range(requests):
            outcome = buckets.take([charge()])[0]
            if outcome.allowed:
                granted += 1
            else:
                assert outcome.level < 1.0
        assert granted <= TEN_PER_MINUTE.capacity + TEN_PER_MINUTE.rate * elapsed + 1e-6


# ---- the limiter with in-process buckets ---------------------------------------------------------------------------


async def test_limiter_keeps_one_bucket_per_identity_and_category() -> None:
    limiter = RateLimiter(parse_limits("secrets_read=2/m,secrets_write=1/m"), clock=Clock())
    assert (await limiter.charge("alice", "secrets_read")).allowed
    assert (await limiter.charge("alice", "secrets_read")).allowed
    refused = await limiter.charge("alice", "secrets_read")
    assert not refused.allowed and refused.charge.category == "secrets_read" and refused.retry_after == 30
    assert (await limiter.charge("bob", "secrets_read")).allowed
    assert (await limiter.charge("alice", "secrets_write")).allowed


async def test_limiter_batch_gate_and_debt() -> None:
    limiter = RateLimiter(parse_limits("secrets_read=5/m,batch_read=10/m"), clock=Clock())
    first = await limiter.charge("alice", "batch_read")
    assert first.allowed and first.charge.category == "batch_read" and first.level == 9
    await limiter.charge_extra("alice", "secrets_read", 4)  # four secrets returned
    assert (await limiter.charge("alice", "batch_read")).allowed  # one read token left: the gate opens
    await limiter.charge_extra("alice", "secrets_read", 4)  # the bucket is now 3 in debt
    refused = await limiter.charge("alice", "batch_read")
    assert not refused.allowed
    assert refused.charge.category == "secrets_read" and refused.retry_after == 48  # 4 tokens at 1 per 12 s
    assert not (await limiter.charge("alice", "secrets_read")).allowed
    assert (await limiter.charge("alice", "batch_metadata")).allowed


async def test_unlimited_categories_and_a_disabled_limiter_charge_nothing() -> None:
    limiter = RateLimiter(parse_limits("secrets_read=off"))
    assert limiter.enabled
    assert await limiter.charge("alice", "secrets_read") is None
    await limiter.charge_extra("alice", "secrets_read", 100)
    disabled = RateLimiter(parse_limits("off"))
    assert not disabled.enabled
    assert await disabled.charge("alice", "secrets_write") is None


async def test_refusals_are_counted_by_category() -> None:
    metrics = Metrics()
    limiter = RateLimiter(parse_limits("audit_export=1/m"), metrics=metrics)
    for _ in range(3):
        await limiter.charge("alice", "audit_export")
    exposition = metrics.exposition().decode()
    assert 'scaivault_rate_limit_hits_total{category="audit_export"} 2.0' in exposition


async def test_without_redis_the_limiter_reports_in_process_buckets(caplog) -> None:  # noqa: ANN001
    limiter = RateLimiter(DEFAULT_LIMITS)
    with caplog.at_level(logging.INFO, logger="scaivault.ratelimit"):
        state = await limiter.check_redis()
        await limiter.start()
        await limiter.close()
    assert (state.configured, state.mode) == (False, "in_process")
    assert caplog.records == []


# ---- in-process buckets shared out between the workers of `serve --workers N` ---------------------------------------


def test_workers_each_hold_their_share_of_a_bucket_and_report_it() -> None:
    clock = Clock()
    buckets = LocalBuckets(clock, shared_by=2)
    outcomes = [buckets.take([charge()])[0] for _ in range(6)]
    assert [outcome.allowed for outcome in outcomes] == [True] * 5 + [False]
    refused = outcomes[-1]
    assert refused.charge.limit == Limit(10, 60.0, shared_by=2) and refused.charge.limit.reported == 5
    assert refused.retry_after == 12  # half the refill too: one token every 12 s
    assert refused.seconds_until_full == 60.0
    clock.now += 12
    assert buckets.take([charge()])[0].allowed


@given(st.integers(1, 10_000), st.integers(1, 64))
def test_shares_never_add_up_to_more_than_the_limit_but_each_holds_one_request(requests: int, workers: int) -> None:
    share = Limit(requests, 60.0).shared(workers)
    assert share.rate * workers == pytest.approx(requests / 60.0)  # together, the limit's sustained rate
    assert share.capacity == max(1.0, requests / workers)  # a bucket that could never hold one would refuse all
    assert share.reported == max(1, requests // workers)


def test_one_worker_holds_the_whole_limit_as_before() -> None:
    assert Limit(10, 60.0).shared(1) == Limit(10, 60.0)
    assert Limit(10, 60.0).reported == 10 and Limit(10, 60.0).capacity == 10.0


async def test_a_limiter_of_one_worker_of_several_holds_its_share_in_process() -> None:
    limiter = RateLimiter(parse_limits("secrets_read=4/m"), clock=Clock(), processes=2)
    outcomes = [await limiter.charge("alice", "secrets_read") for _ in range(3)]
    assert [outcome.allowed for outcome in outcomes] == [True, True, False]
    assert outcomes[0].charge.limit.reported == 2 and outcomes[-1].retry_after == 30
