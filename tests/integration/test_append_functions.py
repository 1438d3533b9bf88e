"""The SQL functions that append (``scaivault/eventstore/append_functions.py``) against the reference: eventsourcing's
own ``PostgresApplicationRecorder.insert_events``, into tables it creates itself in a schema of their own. Every
function, on the event store's own table (statements planned once) and on another (dynamic SQL), must write the
rows the reference writes (stream, version, topic, state bytes, in the same notification order), refuse what it
refuses, and write rows that eventsourcing reads back as its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg
import pytest
from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import (
    DatetimeAsISO,
    IntegrityError,
    JSONTranscoder,
    Mapper,
    Notification,
    StoredEvent,
    UUIDAsHex,
)
from eventsourcing.postgres import (
    PostgresAggregateRecorder,
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresTrackingRecorder,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from scaivault.audit.access_encoding import stored_access_event
from scaivault.audit.access_records import (
    AccessRecord,
    last_access_times,
    touch_last_access,
)
from scaivault.database import Queryable
from scaivault.domain.access import ACCESS_TOPIC
from scaivault.eventstore.append_functions import (
    EventsTable,
    append_and_commit_sql,
    append_events,
    record_access,
)
from scaivault.eventstore.locks import EXCLUSIVE_READ_MODEL_LOCK, READ_MODEL_SWAP_KEY
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from tests.helpers import Counter

MAPPER = create_mapper()
OUR_TABLES = ("scaivault_events", "other_events")  # the function's planned path, and its dynamic one
CHANNEL = "append_functions_test"  # not the store's channel: nothing else wakes a listener on it

Row = tuple[int, UUID, int, str, bytes]  # notification id, stream, version, topic, state


def _datastore(database_url: str, schema: str = "") -> PostgresDatastore:
    params = conninfo_to_dict(database_url)
    return PostgresDatastore(
        dbname=str(params["dbname"]),
        host=str(params.get("host", "localhost")),
        port=str(params.get("port", 5432)),
        user=str(params.get("user", "postgres")),
        password=str(params.get("password", "")),
        schema=schema,
    )


@dataclass
class Reference:
    """eventsourcing's recorders: one writing its own tables (in ``schema``), one per table of ours reading it."""

    schema: str
    recorder: PostgresApplicationRecorder
    readers: dict[str, PostgresApplicationRecorder]


@pytest.fixture
async def reference(pool: asyncpg.Pool, database_url: str) -> AsyncIterator[Reference]:
    schema = f"es_reference_{uuid4().hex[:12]}"
    await pool.execute(f"CREATE SCHEMA {schema}")
    await pool.execute("CREATE TABLE IF NOT EXISTS other_events (LIKE scaivault_events INCLUDING ALL)")
    theirs, ours = _datastore(database_url, schema), _datastore(database_url)

    def create_their_tables() -> PostgresApplicationRecorder:
        PostgresAggregateRecorder(theirs, events_table_name="scaivault_snapshots").create_table()
        PostgresTrackingRecorder(theirs, tracking_table_name="scaivault_tracking").create_table()
        recorder = PostgresApplicationRecorder(theirs, events_table_name="scaivault_events")
        recorder.create_table()
        return recorder

    try:
        recorder = await asyncio.to_thread(create_their_tables)
        yield Reference(schema, recorder, {
            table: PostgresApplicationRecorder(ours, events_table_name=table) for table in OUR_TABLES})
    finally:
        theirs.close()
        ours.close()
        await pool.execute(f"DROP SCHEMA {schema} CASCADE")
        await pool.execute("DROP TABLE IF EXISTS other_events")


def _table(name: str, channel: str = CHANNEL) -> EventsTable:
    return PostgresEventStore(events_table=name, channel=channel).events_table


async def _rows(conn: Queryable, table: str, after: int) -> list[Row]:
    rows = await conn.fetch(
        f"SELECT notification_id, originator_id, originator_version, topic, state FROM {table} "
        "WHERE notification_id > $1 ORDER BY notification_id", after)
    return [(r[0], UUID(bytes=r[1].bytes), r[2], r[3], r[4]) for r in rows]


async def _head(conn: Queryable, table: str) -> int:
    return int(await conn.fetchval(f"SELECT COALESCE(MAX(notification_id), 0) FROM {table}"))


def _relative(rows: list[Row]) -> list[tuple[int, UUID, int, str, bytes]]:
    """Rows with their notification ids counted from the batch's first: sequences differ between tables."""
    return [(row[0] - rows[0][0], *row[1:]) for row in rows]


Append = Callable[[asyncpg.Pool, EventsTable, Sequence[StoredEvent]], Awaitable[list[int] | None]]


async def _append_waking(pool: asyncpg.Pool, table: EventsTable, events: Sequence[StoredEvent]) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        return await append_events(conn, table, events)


async def _append_quietly(pool: asyncpg.Pool, table: EventsTable, events: Sequence[StoredEvent]) -> list[int]:
    async with pool.acquire() as conn, conn.transaction():
        return await append_events(conn, table, events, wake=False)


async def _record_access(pool: asyncpg.Pool, table: EventsTable, events: Sequence[StoredEvent]) -> None:
    async with pool.acquire() as conn:
        await record_access(conn, READ_MODEL_SWAP_KEY, ([], []), table, events, wake=True)


async def _append_and_commit(pool: asyncpg.Pool, table: EventsTable, events: Sequence[StoredEvent]) -> None:
    """A command's last message: the append (its values written as literals) and the COMMIT."""
    async with pool.acquire() as conn:
        await conn.execute("BEGIN")
        try:
            await conn.execute(append_and_commit_sql(table, events))
        finally:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")


APPENDS: dict[str, Append] = {"append": _append_waking, "append without wake-up": _append_quietly,
                              "record access": _record_access, "append and commit": _append_and_commit}


def _access_state(**fields: Any) -> bytes:
    record = AccessRecord(recorded_at=datetime(2026, 1, 1, 12, 0, 0, 1, tzinfo=UTC), request_id="req_1",
                          method="GET", route="/v1/secrets/{path}", action="read", status=200, **fields)
    return MAPPER.to_stored_event(record.event()).state


# Batches: (stream number, version, topic, state); streams get fresh ids in each example. The functions never look
# into states: any bytes, and a few access events' own.
STATES = st.binary(max_size=200) | st.sampled_from([
    _access_state(),
    _access_state(tenant_id="tnt_ü", secret_path="a/" + "b" * 500, extra={"version": 3}, accessed_streams=[uuid4()]),
    _access_state(user_agent="\x00\x1f\u2028", extra={"nested": [{"at": datetime(999, 1, 1, tzinfo=UTC)}]}),
])
TOPICS = st.just(ACCESS_TOPIC) | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                                         max_size=60)  # text PostgreSQL can hold
BATCHES = st.lists(st.tuples(st.integers(0, 3), st.integers(1, 2**63 - 1), TOPICS, STATES), min_size=1, max_size=12,
                   unique_by=lambda item: item[:2])


def _stored(batch: list[tuple[int, int, str, bytes]]) -> list[StoredEvent]:
    streams = [uuid4() for _ in range(4)]
    return [StoredEvent(streams[stream], version, topic, state) for stream, version, topic, state in batch]


async def _reference_rows(reference: Reference, events: list[StoredEvent]) -> list[Row]:
    head = await asyncio.to_thread(reference.recorder.max_notification_id) or 0
    await asyncio.to_thread(reference.recorder.insert_events, events)
    notifications = await asyncio.to_thread(reference.recorder.select_notifications, head + 1, len(events) + 1)
    return [(n.id, n.originator_id, n.originator_version, n.topic, n.state) for n in notifications]


@pytest.mark.parametrize("table", OUR_TABLES)
@pytest.mark.parametrize("append", APPENDS.values(), ids=APPENDS.keys())
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=BATCHES)
async def test_each_function_writes_the_rows_of_the_reference_insert(
    pool: asyncpg.Pool, reference: Reference, table: str, append: Append, batch: list[tuple[int, int, str, bytes]]
) -> None:
    events = _stored(batch)
    head = await _head(pool, table)
    returned = await append(pool, _table(table), events)
    ours = await _rows(pool, table, head)
    theirs = await _reference_rows(reference, events)

    assert _relative(ours) == _relative(theirs)
    assert [row[1:] for row in ours] == [(e.originator_id, e.originator_version, e.topic, e.state) for e in events]
    assert returned in (None, [row[0] for row in ours])  # record_access and append-and-commit return nothing

    # eventsourcing reads our rows as its own, and so does our store.
    reader = reference.readers[table]
    read_back = await asyncio.to_thread(reader.select_notifications, ours[0][0], len(ours) + 1)
    assert read_back == [Notification(id=row[0], originator_id=row[1], originator_version=row[2], topic=row[3],
                                      state=row[4]) for row in ours]
    assert await PostgresEventStore(events_table=table).select_notifications(pool, ours[0][0], len(ours)) == read_back
    for stream in {e.originator_id for e in events}:
        assert await asyncio.to_thread(reader.select_events, stream) == sorted(
            (e for e in events if e.originator_id == stream), key=lambda e: e.originator_version)


@pytest.mark.parametrize("table", OUR_TABLES)
@pytest.mark.parametrize("append", APPENDS.values(), ids=APPENDS.keys())
async def test_each_function_refuses_what_the_reference_refuses_and_keeps_nothing(
    pool: asyncpg.Pool, reference: Reference, table: str, append: Append
) -> None:
    taken = StoredEvent(uuid4(), 1, ACCESS_TOPIC, b"{}")
    await append(pool, _table(table), [taken])
    await asyncio.to_thread(reference.recorder.insert_events, [taken])
    head, their_head = await _head(pool, table), await asyncio.to_thread(reference.recorder.max_notification_id)
    fresh = StoredEvent(uuid4(), 1, ACCESS_TOPIC, b"{}")
    for batch in ([fresh, taken], [fresh, fresh]):  # a version already stored; the same one twice in a batch
        with pytest.raises(asyncpg.UniqueViolationError):
            await append(pool, _table(table), batch)
        with pytest.raises(IntegrityError):
            await asyncio.to_thread(reference.recorder.insert_events, batch)
    assert await _rows(pool, table, head) == []
    assert await asyncio.to_thread(reference.recorder.max_notification_id) == their_head


async def test_record_access_is_the_group_commit_transaction_in_one_statement(pool: asyncpg.Pool) -> None:
    """Its reference is the transaction it replaces: the swap lock shared, last-access times, the append."""
    streams = sorted(uuid4() for _ in range(3))
    early, late = datetime(2026, 1, 1, 12, tzinfo=UTC), datetime(2026, 1, 1, 13, tzinfo=UTC)
    await touch_last_access(pool, [(early, streams[:2])])  # one row to move forward, one to leave (it is later)
    await pool.execute("UPDATE scaivault_secret_last_access SET last_accessed_at = $1 WHERE stream_id = $2",
                       datetime(2026, 1, 2, tzinfo=UTC), streams[1])
    touched = last_access_times([(late, streams), (early, streams[:1])])
    events = [StoredEvent(uuid4(), 1, ACCESS_TOPIC, b"{}") for _ in range(3)]
    store = PostgresEventStore()
    last_access = "SELECT stream_id, last_accessed_at FROM scaivault_secret_last_access ORDER BY stream_id"

    async with pool.acquire() as conn:
        head = await _head(conn, "scaivault_events")
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", READ_MODEL_SWAP_KEY)
        await touch_last_access(conn, [(late, streams), (early, streams[:1])])
        await store.append(conn, events)
        expected_times, expected_rows = await conn.fetch(last_access), await _rows(conn, "scaivault_events", head)
        await transaction.rollback()

        head = await _head(conn, "scaivault_events")
        await record_access(conn, READ_MODEL_SWAP_KEY, touched, store.events_table, events, wake=False)
        assert await conn.fetch(last_access) == expected_times
        assert _relative(await _rows(conn, "scaivault_events", head)) == _relative(expected_rows)


async def test_record_access_waits_for_a_read_model_swap(pool: asyncpg.Pool) -> None:
    """A rebuild swapping read models holds the swap lock exclusively: no access record commits meanwhile."""
    event = StoredEvent(uuid4(), 1, ACCESS_TOPIC, b"{}")
    async with pool.acquire() as swapper, pool.acquire() as recorder:
        async with swapper.transaction():
            await swapper.execute(EXCLUSIVE_READ_MODEL_LOCK, READ_MODEL_SWAP_KEY)
            recording = asyncio.create_task(
                record_access(recorder, READ_MODEL_SWAP_KEY, ([], []), _table("scaivault_events"), [event], wake=True))
            while not await swapper.fetchval(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND locktype = 'advisory' AND NOT granted",
                recorder.get_server_pid(),
            ):
                assert not recording.done()
                await asyncio.sleep(0.01)
            assert await _rows(pool, "scaivault_events", 0) == []
        await recording
    assert [row[1] for row in await _rows(pool, "scaivault_events", 0)] == [event.originator_id]


@pytest.mark.parametrize("append", APPENDS.values(), ids=APPENDS.keys())
async def test_each_function_wakes_readers_unless_told_not_to(
    pool: asyncpg.Pool, database_url: str, append: Append
) -> None:
    """The reference NOTIFYs the channel on every insert; ours too, but for an append told not to (the group
    commit, within WAKEUP_COVERS_SECONDS of its last wake-up)."""
    received: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    try:
        await listener.add_listener(CHANNEL, lambda _conn, _pid, _channel, payload: received.put_nowait(payload))
        await append(pool, _table("scaivault_events"), [StoredEvent(uuid4(), 1, ACCESS_TOPIC, b"{}")])
        await pool.execute(f"NOTIFY {CHANNEL}, 'sentinel'")  # delivered after any wake-up the append committed
        payloads = [await received.get()]
        while payloads[-1] != "sentinel":
            payloads.append(await received.get())
    finally:
        await listener.close()
    assert payloads == (["sentinel"] if append is _append_quietly else ["", "sentinel"])


# --- the tables, and what eventsourcing makes of a store written by our repository ---------------------------------


async def test_eventsourcing_reads_our_store(pool: asyncpg.Pool, reference: Reference) -> None:
    repository = Repository(PostgresEventStore(), create_mapper())
    counter = Counter("shared")
    counter.increment(5)
    events = cast("list[DomainEvent]", counter.collect_events())
    access = stored_access_event(
        {"timestamp": datetime(2026, 1, 1, tzinfo=UTC), "request_id": "req_1", "method": "GET", "route": "/",
         "action": "read", "partner_id": None, "tenant_id": "tnt_a", "identity_id": None, "identity_type": None,
         "secret_path": "a/b", "status": 200, "success": True, "error_code": None, "source_ip": None,
         "user_agent": None, "duration_ms": 1, "extra": {"version": 2}, "accessed_streams": [uuid4()]},
        repository.mapper.transcoder)
    async with pool.acquire() as conn, conn.transaction():
        ids = await repository.save(conn, events)
        ids += await repository.store.append(conn, [access])

    reader = reference.readers["scaivault_events"]
    notifications = await asyncio.to_thread(reader.select_notifications, 1, 10)
    assert [n.id for n in notifications] == ids
    assert await asyncio.to_thread(reader.max_notification_id) == ids[-1]
    assert notifications == await repository.store.select_notifications(pool, 1, 10)
    assert await asyncio.to_thread(reader.select_events, counter.id) == await repository.store.read_stream(
        pool, counter.id)
    decoded = [repository.mapper.to_domain_event(n) for n in notifications]
    assert decoded[:-1] == events

    # Their stock JSON transcoder decodes our states too.
    transcoder = JSONTranscoder()
    transcoder.register(UUIDAsHex())
    transcoder.register(DatetimeAsISO())
    assert [Mapper(transcoder=transcoder).to_domain_event(n) for n in notifications] == decoded


async def test_our_tables_have_eventsourcings_shape(pool: asyncpg.Pool, reference: Reference) -> None:
    tables = ["scaivault_events", "scaivault_snapshots", "scaivault_tracking"]

    async def describe(namespace: str) -> dict[str, Any]:
        columns = await pool.fetch(
            """SELECT c.relname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull,
                      pg_get_expr(d.adbin, d.adrelid) AS default
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
               WHERE n.nspname = $1 AND c.relname = ANY($2) AND a.attnum > 0 AND NOT a.attisdropped
               ORDER BY 1, 2""",
            namespace,
            tables,
        )
        indexes = await pool.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = ANY($2) ORDER BY 1",
            namespace,
            tables,
        )
        options = await pool.fetch(
            """SELECT c.relname, c.reloptions FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE n.nspname = $1 AND c.relname = ANY($2) ORDER BY 1""",
            namespace,
            tables,
        )

        def unqualified(text: str | None) -> str | None:
            return None if text is None else text.replace(f"{namespace}.", "")

        return {
            "columns": [(*tuple(r)[:-1], unqualified(r["default"])) for r in columns],
            "indexes": [(r["indexname"], unqualified(r["indexdef"])) for r in indexes],
            "options": [tuple(r) for r in options],
        }

    ours = await describe(await pool.fetchval("SELECT current_schema()"))
    assert len(ours["columns"]) == 5 + 4 + 2
    assert "scaivault_events_notification_id_idx" in {name for name, _ in ours["indexes"]}
    assert ours == await describe(reference.schema)
