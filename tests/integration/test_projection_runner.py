"""The projection runner on the real database: exactly once across crashes, one runner at a time, failures that
stop and report instead of skipping."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from eventsourcing.domain import Aggregate, event
from eventsourcing.utils import get_topic

from projections.runner import HOT_SECONDS, SCAN_WINDOW, AllTopicsExcept, Projection, ProjectionRunner
from scaivault.eventstore.append_functions import append_events
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from tests.helpers import eventually


class Tally(Aggregate):
    @event("Counted")
    def count(self, n: int) -> None:
        pass


COUNTED = get_topic(Tally.Counted)


class CountingProjection(Projection):
    """Writes one row per event; a row twice would violate the primary key."""

    name = "test_counting"
    topics = frozenset({COUNTED})
    tables = ("test_counted",)

    def __init__(self) -> None:
        self.poison: int | None = None  # the n that makes apply fail, until "fixed"
        self.crash_after: int | None = None  # rows written in a batch before the process "crashes"

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for written, (notification_id, domain_event) in enumerate(events):
            if self.crash_after is not None and written == self.crash_after:
                self.crash_after = None
                await conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
            if domain_event.n == self.poison:
                raise ValueError(f"cannot count {domain_event.n}")
            await conn.execute(
                "INSERT INTO test_counted (notification_id, n) VALUES ($1, $2)", notification_id, domain_event.n
            )


@pytest.fixture
async def counted(pool: asyncpg.Pool) -> asyncpg.Pool:
    await pool.execute("CREATE TABLE IF NOT EXISTS test_counted (notification_id bigint PRIMARY KEY, n int NOT NULL)")
    await pool.execute("TRUNCATE test_counted")
    return pool


async def write_events(pool: asyncpg.Pool, count: int, *, start: int = 0) -> None:
    repository = Repository(PostgresEventStore(), create_mapper())
    tally = Tally()
    for n in range(start, start + count):
        tally.count(n=n)
    async with pool.acquire() as conn, conn.transaction():
        await repository.save(conn, tally.collect_events(), [tally])


NOT_STARTED = "not started"


def runner(database_url: str, projection: Projection, **options: Any) -> ProjectionRunner:
    options = {"poll_seconds": 0.05, "batch_size": 50, **options}
    worker = ProjectionRunner(database_url, PostgresEventStore(), create_mapper(), [projection], **options)
    # A runner's state starts as "standby", what a refused lock also sets: starting from another state, "standby"
    # shows that the runner tried the lock and was refused.
    for state in worker.states.values():
        state.state = NOT_STARTED
    return worker


def state_of(worker: ProjectionRunner) -> str:
    return worker.states[CountingProjection.name].state


async def counted_ns(pool: asyncpg.Pool) -> list[int]:
    return [row["n"] for row in await pool.fetch("SELECT n FROM test_counted ORDER BY notification_id")]


async def test_every_event_applied_exactly_once_across_a_crash_mid_batch(
    counted: asyncpg.Pool, database_url: str
) -> None:
    projection = CountingProjection()
    projection.crash_after = 20  # the connection dies in the middle of the first batch
    await write_events(counted, 120)
    first = runner(database_url, projection)
    await first.start()
    try:
        await eventually(lambda: _length_is(counted, 120))
    finally:
        await first.stop()
    assert await counted_ns(counted) == list(range(120))
    status = await first.status(counted)
    assert status["test_counting"]["position"] == status["test_counting"]["head"]
    assert status["test_counting"]["lag"] == 0


async def test_a_failing_event_stops_the_projection_which_resumes_after_a_fix(
    counted: asyncpg.Pool, database_url: str
) -> None:
    projection = CountingProjection()
    projection.poison = 37
    await write_events(counted, 80)
    worker = runner(database_url, projection)
    await worker.start()
    try:
        await eventually(lambda: _failed(worker, counted))
        status = (await worker.status(counted))["test_counting"]
        assert status["state"] == "failed" and "cannot count 37" in status["error"]
        bad = await counted.fetchval(
            "SELECT notification_id FROM scaivault_events WHERE topic = $1 ORDER BY notification_id OFFSET 37 LIMIT 1",
            COUNTED,
        )
        assert status["failed_notification_id"] == bad
        assert await counted_ns(counted) == list(range(37))  # everything before it, nothing after: no skipping
        assert status["lag"] > 0

        projection.poison = None  # the fix
        await eventually(lambda: _length_is(counted, 80))
        assert await counted_ns(counted) == list(range(80))
        assert (await worker.status(counted))["test_counting"]["state"] == "running"
    finally:
        await worker.stop()


async def test_one_runner_at_a_time_and_another_takes_over(counted: asyncpg.Pool, database_url: str) -> None:
    first, second = runner(database_url, CountingProjection()), runner(database_url, CountingProjection())
    await first.start()
    await write_events(counted, 50)
    await eventually(lambda: _length_is(counted, 50))
    await second.start()
    try:
        await eventually(lambda: state_of(second) == "standby", message="the second runner was not refused the lock")
        await write_events(counted, 50, start=50)  # applied by the first alone: a second would break the primary key
        await eventually(lambda: _length_is(counted, 100))
        assert (state_of(first), state_of(second)) == ("running", "standby")
        await first.stop()  # the process dies: its session, and with it the advisory lock, goes away
        await write_events(counted, 50, start=100)
        await eventually(lambda: _length_is(counted, 150))
        assert state_of(second) == "running"
        assert await counted_ns(counted) == list(range(150))
    finally:
        await first.stop()
        await second.stop()


async def test_two_runners_racing_from_the_start_apply_each_event_once(
    counted: asyncpg.Pool, database_url: str
) -> None:
    runners = [runner(database_url, CountingProjection()) for _ in range(2)]
    await asyncio.gather(*(r.start() for r in runners))
    try:
        for start in range(0, 300, 30):
            await write_events(counted, 30, start=start)
        await eventually(lambda: _length_is(counted, 300))
        assert await counted_ns(counted) == list(range(300))
        assert sorted(state_of(r) for r in runners) == ["running", "standby"]
    finally:
        for r in runners:
            await r.stop()


class Noise(Aggregate):
    @event("Made")
    def make(self, n: int) -> None:
        pass


class EverythingButTallies(CountingProjection):
    name = "test_everything_but_tallies"
    topics = AllTopicsExcept({COUNTED, get_topic(Tally.Created), get_topic(Noise.Created)})


async def write_noise(pool: asyncpg.Pool, count: int) -> None:
    repository = Repository(PostgresEventStore(), create_mapper())
    noise = Noise()
    for n in range(count):
        noise.make(n=n)
    async with pool.acquire() as conn, conn.transaction():
        await repository.save(conn, noise.collect_events(), [noise])


async def test_events_a_projection_skips_are_not_read_yet_move_it_on(
    counted: asyncpg.Pool, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL filters out the topics a projection does not consume; its position still passes them, a long run
    of them included (longer than the scan window), and a projection of every topic but one sees the rest."""
    read: list[str] = []
    select = PostgresEventStore.select_event_rows

    async def spying(self: PostgresEventStore, *args: Any, **kwargs: Any) -> Any:
        notifications = await select(self, *args, **kwargs)
        read.extend(n.topic for n in notifications)
        return notifications

    monkeypatch.setattr(PostgresEventStore, "select_event_rows", spying)
    await write_events(counted, 30)
    await write_noise(counted, SCAN_WINDOW * 50 + 70)  # past one scan window of the runner's batches (50)
    await write_events(counted, 30, start=30)
    await write_noise(counted, 10)  # the log ends on events the counting projection skips
    worker = runner(database_url, CountingProjection())
    await worker.start()
    try:
        await eventually(lambda: _length_is(counted, 60))
        await eventually(lambda: _lag_is_zero(worker, counted, "test_counting"))
    finally:
        await worker.stop()
    assert await counted_ns(counted) == list(range(60))
    assert set(read) == {COUNTED}

    await counted.execute("TRUNCATE test_counted")
    read.clear()
    others = runner(database_url, EverythingButTallies())
    await others.start()
    try:
        await eventually(lambda: _length_is(counted, SCAN_WINDOW * 50 + 80))
        await eventually(lambda: _lag_is_zero(others, counted, "test_everything_but_tallies"))
    finally:
        await others.stop()
    assert await counted_ns(counted) == [*range(SCAN_WINDOW * 50 + 70), *range(10)]
    assert COUNTED not in set(read)


async def test_an_append_without_a_wakeup_is_applied_while_the_runner_still_polls(
    counted: asyncpg.Pool, database_url: str
) -> None:
    """The group commit of access records leaves out the NOTIFY within WAKEUP_COVERS_SECONDS of its last one: a
    runner that found events keeps polling that long, so such appends are applied without a wake-up (the idle poll
    here is a minute: only a wake-up or that polling can find anything)."""
    store, mapper = PostgresEventStore(), create_mapper()
    worker = runner(database_url, CountingProjection(), poll_seconds=60)
    await worker.start()
    try:
        await eventually(lambda: state_of(worker) == "running")
        await eventually(lambda: _listening(counted), message="the runner is not listening for wake-ups")
        await write_events(counted, 5)  # wakes it
        await eventually(lambda: _length_is(counted, 5), timeout=5)
        tally = Tally()
        for n in range(5, 10):
            tally.count(n=n)
        stored = [mapper.to_stored_event(e) for e in tally.collect_events()]
        async with counted.acquire() as conn, conn.transaction():
            await append_events(conn, store.events_table, stored, wake=False)
        await eventually(lambda: _length_is(counted, 10), timeout=HOT_SECONDS)
    finally:
        await worker.stop()
    assert await counted_ns(counted) == list(range(10))


async def _listening(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval(
        """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
           AND application_name = 'scaivault-listener' AND query LIKE 'LISTEN %'"""
    ))


async def _lag_is_zero(worker: ProjectionRunner, pool: asyncpg.Pool, name: str) -> bool:
    return (await worker.status(pool))[name]["lag"] == 0


async def _length_is(pool: asyncpg.Pool, count: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM test_counted") == count


async def _failed(worker: ProjectionRunner, pool: asyncpg.Pool) -> bool:
    return (await worker.status(pool))["test_counting"]["state"] == "failed"


