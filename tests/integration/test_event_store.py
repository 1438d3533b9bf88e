from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from eventsourcing.persistence import Notification, StoredEvent

from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.migrations import apply_migrations, migration_scripts
from scaivault.eventstore.recorder import (
    EventStoreConflict,
    EventStoreListener,
    PostgresEventStore,
)
from scaivault.eventstore.repository import Repository
from tests.helpers import Counter

TOPIC = "tests:Thing"


class CountingStore(PostgresEventStore):
    """Counts the event rows that reads return, to check what snapshots save."""

    def __init__(self) -> None:
        super().__init__()
        self.rows_read = 0

    async def read_stream(self, conn: Any, originator_id: UUID, **kwargs: Any) -> list[StoredEvent]:
        events = await super().read_stream(conn, originator_id, **kwargs)
        self.rows_read += len(events)
        return events


def stored(originator_id: UUID, version: int, state: bytes = b"{}", topic: str = TOPIC) -> StoredEvent:
    return StoredEvent(originator_id=originator_id, originator_version=version, topic=topic, state=state)


@pytest.fixture
async def connect(database_url: str) -> AsyncIterator[Callable[[], Any]]:
    """Dedicated connections (one per concurrent task), closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_one(**kwargs: Any) -> asyncpg.Connection:
        conn = await asyncpg.connect(database_url, **kwargs)
        opened.append(conn)
        return conn

    yield open_one
    for conn in opened:
        await conn.close()


async def table_rows(pool: asyncpg.Pool) -> list[tuple[int, UUID, int]]:
    rows = await pool.fetch(
        "SELECT notification_id, originator_id, originator_version FROM scaivault_events ORDER BY notification_id"
    )
    return [(r[0], r[1], r[2]) for r in rows]


# --- recorder --------------------------------------------------------------------------------------------------------


async def test_append_read_and_notifications(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore()
    a, b = uuid4(), uuid4()
    assert await store.max_notification_id(pool) == 0
    assert await store.select_notifications(pool, 1, 10) == []

    async with pool.acquire() as conn:
        assert await store.append(conn, []) == []  # no transaction needed: nothing is locked
        with pytest.raises(AssertionError):
            await store.append(conn, [stored(a, 1)])
        async with conn.transaction():
            first = await store.append(conn, [stored(a, 1, b"a1"), stored(a, 2, b"a2"), stored(b, 1, b"b1", "tests:B")])
        async with conn.transaction():
            second = await store.append(conn, [stored(a, 3, b"a3")])
    assert len(first) == 3 and first == sorted(first) and second[0] > first[-1]

    assert [e.state for e in await store.read_stream(pool, a)] == [b"a1", b"a2", b"a3"]
    assert await store.read_stream(pool, a) == [stored(a, 1, b"a1"), stored(a, 2, b"a2"), stored(a, 3, b"a3")]
    assert [e.originator_version for e in await store.read_stream(pool, a, desc=True)] == [3, 2, 1]
    assert [e.originator_version for e in await store.read_stream(pool, a, gt=1, lte=2)] == [2]
    assert [e.originator_version for e in await store.read_stream(pool, a, desc=True, limit=1)] == [3]
    assert await store.read_stream(pool, uuid4()) == []

    ids = first + second
    everything = await store.select_notifications(pool, 1, 10)
    assert [n.id for n in everything] == ids
    assert everything[2] == Notification(id=ids[2], originator_id=b, originator_version=1, topic="tests:B", state=b"b1")
    assert type(everything[0].originator_id) is UUID
    assert [n.id for n in await store.select_notifications(pool, ids[1], 2)] == ids[1:3]
    assert [n.id for n in await store.select_notifications(pool, ids[1], 10, inclusive_of_start=False)] == ids[2:]
    assert [n.id for n in await store.select_notifications(pool, 1, 10, stop=ids[1])] == ids[:2]
    assert [n.id for n in await store.select_notifications(pool, 1, 10, topics=["tests:B"])] == [ids[2]]
    assert [n.id for n in await store.select_notifications(pool, 1, 10, exclude_topics=["tests:B"])] == [
        *ids[:2], ids[3]]
    assert await store.max_notification_id(pool) == ids[-1]

    rows = await store.select_event_rows(pool, 1, 10, exclude_topics=["tests:B"])
    assert [(r.id, r.originator_id, r.originator_version, r.topic, r.state) for r in rows] == [
        (n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in everything if n.topic != "tests:B"]
    assert all(type(r.originator_id) is UUID for r in rows)  # never asyncpg's own UUID type


async def test_conflict_keeps_nothing_from_the_transaction(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore()
    a, b, c = uuid4(), uuid4(), uuid4()
    async with pool.acquire() as conn:
        async with conn.transaction():
            await store.append(conn, [stored(a, 1, b"original")])
        with pytest.raises(EventStoreConflict):
            async with conn.transaction():
                await store.write_snapshot(conn, stored(c, 1))
                await store.append(conn, [stored(b, 1), stored(a, 1, b"usurper")])
        with pytest.raises(EventStoreConflict):  # a duplicate within one batch
            async with conn.transaction():
                await store.append(conn, [stored(b, 1), stored(b, 1)])
    assert await store.read_stream(pool, a) == [stored(a, 1, b"original")]
    assert await store.read_stream(pool, b) == []
    assert await store.latest_snapshot(pool, c) is None
    assert len(await table_rows(pool)) == 1


async def test_lock_blocks_writers_not_readers(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore()
    impatient = PostgresEventStore(lock_timeout_seconds=0.1)
    async with pool.acquire() as holder, holder.transaction():
        await store.append(holder, [stored(uuid4(), 1)])  # holds the EXCLUSIVE lock until this block ends
        assert await store.select_notifications(pool, 1, 10) == []  # readers go on (uncommitted rows unseen)
        async with pool.acquire() as other:
            with pytest.raises(asyncpg.LockNotAvailableError):
                async with other.transaction():
                    await impatient.append(other, [stored(uuid4(), 1)])


async def test_snapshots_store(pool: asyncpg.Pool) -> None:
    store = PostgresEventStore()
    a = uuid4()
    for version in (10, 20, 30):
        await store.write_snapshot(pool, stored(a, version, str(version).encode()))
    await store.write_snapshot(pool, stored(a, 20, b"ignored"))  # already there: kept as it was
    assert await store.latest_snapshot(pool, a) == stored(a, 30, b"30")
    assert await store.latest_snapshot(pool, a, lte=29) == stored(a, 20, b"20")
    assert await store.latest_snapshot(pool, a, lte=9) is None
    assert await store.latest_snapshot(pool, uuid4()) is None


@pytest.mark.slow
async def test_no_reader_ever_skips_a_committed_event(pool: asyncpg.Pool, connect: Any) -> None:
    # Writers hold their notification IDs uncommitted for a random while. Without the table lock, a later ID commits
    # first, the tailing reader moves past the earlier one, and never sees it.
    store = PostgresEventStore()
    writers, transactions_each = 16, 120
    written: list[int] = []
    writers_done = asyncio.Event()

    async def writer(seed: int) -> None:
        rng = random.Random(seed)
        conn = await connect()
        for _ in range(transactions_each):
            batch = [stored(uuid4(), 1) for _ in range(rng.choice((1, 1, 2, 3)))]
            async with conn.transaction():
                await asyncio.sleep(rng.uniform(0, 0.002))
                ids = await store.append(conn, batch)
                await asyncio.sleep(rng.uniform(0, 0.002))
            written.extend(ids)

    async def reader() -> list[int]:
        conn = await connect()
        seen: list[int] = []
        last = 0
        while True:
            finished = writers_done.is_set()  # read before polling, so the last poll follows every commit
            page = await store.select_notifications(conn, last + 1, 50)
            for notification in page:
                assert notification.id > last
                seen.append(notification.id)
                last = notification.id
            if not page:
                if finished:
                    return seen
                await asyncio.sleep(0)

    reading = asyncio.create_task(reader())
    await asyncio.gather(*(writer(seed) for seed in range(writers)))
    writers_done.set()
    seen = await reading

    in_table = [row[0] for row in await table_rows(pool)]
    assert len(in_table) >= 2 * writers * transactions_each // 2
    assert seen == in_table
    assert sorted(written) == in_table


async def test_concurrent_writers_to_one_stream(pool: asyncpg.Pool, connect: Any) -> None:
    store = PostgresEventStore()
    stream = uuid4()
    writers, wins_each = 8, 15
    everyone_read = asyncio.Barrier(writers)
    committed: list[bytes] = []
    conflicts = 0

    async def writer(number: int) -> None:
        nonlocal conflicts
        conn = await connect()
        wins, first_round = 0, True
        while wins < wins_each:
            state = f"{number}:{wins}".encode()
            try:
                async with conn.transaction():
                    head = await store.read_stream(conn, stream, desc=True, limit=1)
                    version = head[0].originator_version + 1 if head else 1
                    if first_round:  # all read the same head, so all but one must lose this round
                        first_round = False
                        await everyone_read.wait()
                    await store.append(conn, [stored(stream, version, state)])
            except EventStoreConflict:
                conflicts += 1
                continue
            committed.append(state)
            wins += 1

    await asyncio.gather(*(writer(n) for n in range(writers)))

    events = await store.read_stream(pool, stream)
    assert [e.originator_version for e in events] == list(range(1, writers * wins_each + 1))
    assert sorted(e.state for e in events) == sorted(committed)
    assert len(set(committed)) == writers * wins_each
    assert conflicts >= writers - 1


# --- repository ------------------------------------------------------------------------------------------------------


async def test_repository_save_get_history(pool: asyncpg.Pool) -> None:
    repository = Repository(PostgresEventStore(), create_mapper(), snapshot_interval=100)
    counter = Counter("c")
    for _ in range(149):  # one save spanning version 100: snapshot at the version the aggregate then has
        counter.increment()
    events = counter.collect_events()
    async with pool.acquire() as conn, conn.transaction():
        ids = await repository.save(conn, events, [counter])
    assert len(ids) == 150

    assert await repository.get(pool, counter.id) == counter
    snapshot = await repository.store.latest_snapshot(pool, counter.id)
    assert snapshot is not None and snapshot.originator_version == 150
    assert await repository.get(pool, uuid4()) is None
    assert await repository.history(pool, counter.id) == events
    old = await repository.get(pool, counter.id, version=3)
    assert isinstance(old, Counter) and old.count == 2 and old.version == 3

    # Two commands on the same loaded version: the second save loses and keeps nothing.
    first, second = await repository.get(pool, counter.id), await repository.get(pool, counter.id)
    assert isinstance(first, Counter) and isinstance(second, Counter)
    first.increment(10)
    second.increment(20)
    async with pool.acquire() as conn:
        async with conn.transaction():
            await repository.save(conn, first.collect_events(), [first])
        with pytest.raises(EventStoreConflict):
            async with conn.transaction():
                await repository.save(conn, second.collect_events(), [second])
    latest = await repository.get(pool, counter.id)
    assert isinstance(latest, Counter) and latest.count == 159


@pytest.mark.slow
async def test_snapshots_bound_the_events_read(pool: asyncpg.Pool) -> None:
    store = CountingStore()
    repository = Repository(store, create_mapper(), snapshot_interval=100)
    counter = Counter("big")
    pending = counter.collect_events()
    async with pool.acquire() as conn:
        while counter.version < 10_000:
            while len(pending) < 50:
                counter.increment()
                pending += counter.collect_events()
            async with conn.transaction():
                await repository.save(conn, pending, [counter])
            pending = []
        for _ in range(30):
            counter.increment()
        async with conn.transaction():
            await repository.save(conn, counter.collect_events(), [counter])
    assert await pool.fetchval("SELECT count(*) FROM scaivault_events") == 10_030
    assert await pool.fetchval("SELECT count(*) FROM scaivault_snapshots") == 100

    store.rows_read = 0
    latest = await repository.get(pool, counter.id)
    assert latest == counter
    assert store.rows_read == 30

    for version in (1, 99, 100, 101, 5_050, 9_999, 10_000, 10_015):
        store.rows_read = 0
        historical = await repository.get(pool, counter.id, version=version)
        assert isinstance(historical, Counter)
        assert (historical.version, historical.count) == (version, version - 1)
        assert store.rows_read <= repository.snapshot_interval


# --- listener --------------------------------------------------------------------------------------------------------


async def test_listener_wakes_on_commit_and_reconnects(pool: asyncpg.Pool, database_url: str) -> None:
    channel = "scaivault_events_listener_test"  # not the real channel: other tests' writes must not wake us
    store = PostgresEventStore(channel=channel)

    async def append_one() -> None:
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, [stored(uuid4(), 1)])

    async with EventStoreListener(database_url, channel=channel) as listener:
        assert await listener.wait(0.05) is False
        await append_one()
        assert await listener.wait(30) is True
        assert await listener.wait(0.05) is False  # one NOTIFY, one wake-up

        killed = listener.backend_pid
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", killed)
        assert await listener.wait(30) is True  # the drop itself wakes the poller: notifications may be lost
        while listener.backend_pid is None:  # wait() reconnects; its answers meanwhile are hints only
            await listener.wait(1)
        assert listener.backend_pid != killed
        await append_one()
        while True:
            assert await listener.wait(30) is True
            if await listener.wait(0.05) is False:
                break


# --- migrations ------------------------------------------------------------------------------------------------------


async def test_concurrent_migrations_are_safe_and_idempotent(pool: asyncpg.Pool, connect: Any) -> None:
    schema = f"migrate_{uuid4().hex[:12]}"  # a fresh, empty schema: the shared one is migrated already
    await pool.execute(f"CREATE SCHEMA {schema}")
    try:
        first, second = [await connect(server_settings={"search_path": schema}) for _ in range(2)]
        results = await asyncio.gather(apply_migrations(first), apply_migrations(second))
        every_migration = [name for name, _ in migration_scripts()]
        assert "0001_event_store.sql" in every_migration
        assert sorted(results, key=len) == [[], every_migration]
        assert await apply_migrations(first) == []
        tables = await pool.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        assert {"scaivault_events", "scaivault_snapshots", "scaivault_tracking"} <= {t[0] for t in tables}
    finally:
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
