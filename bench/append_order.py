"""Append-order micro-benchmark: ways to hand out the event log's global position, and what each costs writers.

Single-event write transactions (BEGIN; append one ~300-byte event to the client's own stream; COMMIT, with
``synchronous_commit=on``) from 1, 8 and 32 concurrent clients over raw asyncpg, against:

    lock        today (ADR 0001): ``scaivault_append_events`` as migrations 0001 and 0015 define it, read from the
                migration files: lock_timeout, LOCK TABLE ... IN EXCLUSIVE MODE, NOTIFY, INSERT ... RETURNING
                notification_id (a bigserial), all inside the transaction; the lock is held through COMMIT.
    lock_1msg   the same append, with the COMMIT sent in the same simple-protocol message (after BEGIN), as
                ``append_and_commit_sql`` (being added to the event store's code as this was written) does: the lock
                is no longer held through a round trip to the client.
    deferred    the position is assigned at COMMIT by a ``DEFERRABLE INITIALLY DEFERRED`` constraint trigger that
                takes a transaction-level advisory lock (not the table lock: every writer already holds ROW
                EXCLUSIVE on the table by then, so a table lock taken at commit would deadlock) and numbers the
                transaction's rows; the lock is still held through the commit's WAL flush.
    seq_notify  a sequencer: writers insert with no lock, ``tx xid8 DEFAULT pg_current_xact_id()`` and a NULL
                position, and NOTIFY the sequencer in every transaction. One sequencer (a separate process) gives
                gap-free positions, in (tx, insertion id) order, to the rows whose tx is below
                ``pg_snapshot_xmin(pg_current_snapshot())``, in batches.
    seq         the same, with the writers' NOTIFY sent at most once per ``WAKEUP_COVERS_SECONDS`` per process (the
                protocol the access recorder already follows): a NOTIFY takes PostgreSQL's cluster-wide notify lock
                at commit and holds it through the WAL flush, so a NOTIFY per commit serializes commits again.
    seq_visible the writers of seq, but a sequencer without the xmin gate: it positions every committed row it
                sees, transactions in the order of their first insertion id. Readers are just as safe (positions
                are only ever given to committed rows, by one sequencer, one transaction at a time), and no other
                transaction, however long, holds it back.
    seq_cd      seq with ``commit_delay``/``commit_siblings`` set on the writers' sessions (group commit tuned).
    lock_cd     today's scheme with the same settings, for fairness.

Every figure is measured in alternating slices (the variants in one order, then the reverse) after a warm-up, so
all see the same background load; ratios are against ``lock`` at the same client count in the same run
(docs/adr/0011). The sequencer's "committed -> positioned" lag is the time from a writer's COMMIT returning to the
sequencer's positioning transaction returning (CLOCK_MONOTONIC, shared by both processes). A tailing reader per
sequenced table, reading like ``projections/runner.py`` (head = max position, then the rows up to it in order), runs
throughout; at the end every committed row must have been read exactly once, in gap-free position order. A final
probe holds a transaction id open for ``--stall-seconds`` under 8 writers of seq and of seq_visible, to show what a
long transaction does to the lag; while rows wait, the sequencer process samples who holds the xmin back.

Runs in its own scratch database ``scaivault_bench_<pid>_append_order``, dropped at the end; no server runs and no
server code is imported. Writes ``bench/results/append-order-latest.json``.

    python -m bench.append_order [--seconds 4] [--rounds 4] [--warmup 0.5] [--clients 1,8,32]
                                 [--commit-delay 50] [--commit-siblings 5] [--stall-seconds 1]

Total time is about (seconds + warmup) x 8 variants x client counts, plus the probes
(about 2 minutes with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import platform
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from multiprocessing.synchronize import Event as ProcessEvent
from pathlib import Path
from typing import Any

import asyncpg

from bench.peer import machine
from bench.run import RESULTS, ROOT, machine_cpu, postgres_cpu, process_cpu, source_version

MIGRATIONS = ROOT / "scaivault" / "eventstore" / "migrations"
ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

CHANNEL = "scaivault_events"  # the projection runners' wake-up channel (PostgresEventStore's default)
EVENTS_TABLE = '"scaivault_events"'  # as EventsTable.name passes it
LOCK_TIMEOUT = "5000ms"  # SCAIVAULT_EVENT_LOCK_TIMEOUT's default, as EventsTable.lock_timeout spells it
# scaivault.eventstore.recorder.WAKEUP_COVERS_SECONDS (copied: this benchmark imports no server code).
WAKEUP_COVERS_SECONDS = 0.5
TOPIC = "scaivault.domain.secrets:Secret.VersionWritten"
STATE_BYTES = 300
SEQUENCER_BATCH = 5_000  # rows positioned per sequencer transaction, at most
SEQUENCER_IDLE_POLL = 1.0  # an idle sequencer polls this often even if no NOTIFY comes
READER_BATCH = 1_000
READER_SCAN_WINDOW = 20  # batches, as projections/runner.py's SCAN_WINDOW
READER_POLL = 0.5  # without a NOTIFY, as runners poll
DRAIN_TIMEOUT = 30.0
HOLDER_SAMPLE_SECONDS = 0.05
MAX_OPS_PER_SLICE = 1_000_000  # count bound of every load loop, besides its deadline


# ---- the scratch database ------------------------------------------------------------------------------------------


def migration(name: str) -> str:
    return (MIGRATIONS / name).read_text()


# The storage options of migration 0001's tables, repeated for the variants' tables.
STORAGE = """WITH (
    autovacuum_enabled = true,
    autovacuum_vacuum_threshold = 100000000,
    autovacuum_vacuum_scale_factor = 0.5,
    autovacuum_analyze_threshold = 1000,
    autovacuum_analyze_scale_factor = 0.01
)"""

# Scheme 2: scaivault_events' shape, but the position is NULL until the deferred trigger gives it one at commit.
DEFERRED_DDL = f"""
CREATE SEQUENCE deferred_events_position;
CREATE TABLE deferred_events (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigint,
    PRIMARY KEY (originator_id, originator_version)
) {STORAGE};
CREATE UNIQUE INDEX deferred_events_notification_id_idx ON deferred_events (notification_id ASC);

-- At COMMIT (deferred triggers fire before the commit record is written): serialize on one lock, held until the
-- commit is flushed and visible, and number the row. The table lock cannot be used: every concurrent writer holds
-- ROW EXCLUSIVE on the table from its INSERT on, so EXCLUSIVE taken at commit would wait for all of them (deadlock).
CREATE FUNCTION deferred_events_position() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7263541);
    UPDATE deferred_events SET notification_id = nextval('deferred_events_position')
        WHERE originator_id = NEW.originator_id AND originator_version = NEW.originator_version;
    RETURN NULL;
END
$$;
CREATE CONSTRAINT TRIGGER deferred_events_position AFTER INSERT ON deferred_events
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION deferred_events_position();

-- The append: as scaivault_append_events, less the lock (the trigger takes it at commit) and the RETURNING (no
-- position exists before commit). lock_timeout still bounds the wait for the lock, at COMMIT.
CREATE FUNCTION deferred_append_events(
    channel text, lock_timeout text, ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('lock_timeout', lock_timeout, true);
    IF channel <> '' THEN
        PERFORM pg_notify(channel, '');
    END IF;
    INSERT INTO deferred_events (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states);
END
$$;
"""

@dataclass(frozen=True)
class SequencedTable:
    """A table of schemes 3 and 4: writers insert without any lock; the transaction id and insertion order are
    recorded, the position (notification_id) is NULL until the table's sequencer assigns it."""

    name: str
    gated: bool  # position only rows of transactions below the snapshot's xmin, in (tx, insert_id) order

    @property
    def wake_channel(self) -> str:  # writers -> sequencer
        return f"{self.name}_wake"

    @property
    def positioned_channel(self) -> str:
        # sequencer -> readers (in the server: the event store's channel; one per table here, so the lock
        # variants' NOTIFYs do not wake these readers)
        return f"{self.name}_positioned"

    def ddl(self) -> str:
        if self.gated:
            # The rows of every transaction below the snapshot's xmin (all of those have ended, so no row can
            # still appear below it), in (tx, insert_id) order.
            unpositioned_index, todo = "(tx, insert_id)", f"""
        SELECT e.ctid AS row_ctid, row_number() OVER (ORDER BY e.tx, e.insert_id) AS n
        FROM (SELECT s.ctid, s.tx, s.insert_id FROM {self.name} s
              WHERE s.notification_id IS NULL AND s.tx < pg_snapshot_xmin(pg_current_snapshot())
              ORDER BY s.tx, s.insert_id LIMIT p_batch) e"""
        else:
            # Every committed row not yet positioned (the oldest insertions first), each transaction's rows
            # together, transactions in the order of their first insertion: a transaction that read another's
            # events inserted its own after that one committed, so it comes later.
            unpositioned_index, todo = "(insert_id)", f"""
        SELECT e.ctid AS row_ctid, row_number() OVER (ORDER BY e.first_id, e.insert_id) AS n
        FROM (SELECT c.ctid, c.insert_id, min(c.insert_id) OVER (PARTITION BY c.tx) AS first_id
              FROM (SELECT s.ctid, s.tx, s.insert_id FROM {self.name} s WHERE s.notification_id IS NULL
                    ORDER BY s.insert_id LIMIT p_batch) c) e"""
        return f"""
CREATE TABLE {self.name} (
    originator_id uuid NOT NULL,
    originator_version bigint NOT NULL,
    topic text,
    state bytea,
    notification_id bigint,
    insert_id bigserial NOT NULL,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    PRIMARY KEY (originator_id, originator_version)
) {STORAGE};
CREATE UNIQUE INDEX {self.name}_notification_id_idx ON {self.name} (notification_id ASC);
CREATE INDEX {self.name}_unpositioned_idx ON {self.name} {unpositioned_index} WHERE notification_id IS NULL;

CREATE FUNCTION {self.name}_append(
    channel text, ids uuid[], versions bigint[], topics text[], states bytea[]
) RETURNS SETOF bigint LANGUAGE plpgsql AS $$
BEGIN
    IF channel <> '' THEN
        PERFORM pg_notify(channel, '');
    END IF;
    RETURN QUERY INSERT INTO {self.name} (originator_id, originator_version, topic, state)
        SELECT * FROM unnest(ids, versions, topics, states) RETURNING insert_id;
END
$$;

-- One sequencer pass, one transaction: the next positions, following p_last without gaps (only one sequencer may
-- run: the caller's business). Wakes readers if it moved.
CREATE FUNCTION {self.name}_sequence(p_last bigint, p_batch integer, p_channel text)
RETURNS TABLE (row_insert_id bigint, row_position bigint) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH todo AS ({todo}
    )
    UPDATE {self.name} s SET notification_id = p_last + todo.n
    FROM todo WHERE s.ctid = todo.row_ctid
    RETURNING s.insert_id, s.notification_id;
    IF FOUND AND p_channel <> '' THEN
        PERFORM pg_notify(p_channel, '');
    END IF;
END
$$;
"""


GATED = SequencedTable("sequenced_events", gated=True)
UNGATED = SequencedTable("visible_events", gated=False)
SEQUENCED_TABLES = {t.name: t for t in (GATED, UNGATED)}


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def create_schema(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # Today's table and append function, exactly as the server's migrations create them.
        await conn.execute(migration("0001_event_store.sql"))
        await conn.execute(migration("0015_append_without_wakeup_with_cached_plans.sql"))
        await conn.execute(DEFERRED_DDL)
        for table in SEQUENCED_TABLES.values():
            await conn.execute(table.ddl())
    finally:
        await conn.close()


# ---- CPU and WAL accounting ---------------------------------------------------------------------------------------


CPU_COLUMNS = ("postgres", "loadgen", "sequencer", "other")


# ---- variants ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    key: str
    scheme: str  # the brief's numbering
    description: str
    sql: str
    table: SequencedTable | None = None  # the sequenced table written, if any
    one_message: bool = False  # the append and COMMIT sent as one simple-protocol message (after BEGIN)
    notify: str = "always"  # always | throttled
    commit_delay: bool = False

    @property
    def sequenced(self) -> bool:
        return self.table is not None


_LOCK_SQL = "SELECT * FROM scaivault_append_events($1::regclass, $2, $3, $4, $5, $6, $7)"  # append_functions.py
_DEFERRED_SQL = "SELECT deferred_append_events($1, $2, $3, $4, $5, $6)"


def one_message_append(arguments: tuple[Any, ...]) -> str:
    """``scaivault_append_events`` with its arguments as literals, then COMMIT, as one simple-protocol message: the
    shape of ``append_and_commit_sql`` (being added to scaivault/eventstore/append_functions.py as this was written),
    so the lock is held for the append and the commit's flush but no round trip through the client."""
    name, channel, lock_timeout, ids, versions, topics, states = arguments

    def text(value: str) -> str:
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"

    def array(items: list[str], element_type: str) -> str:
        return "ARRAY[" + ", ".join(items) + "]::" + element_type + "[]"

    return ("SELECT count(*) FROM scaivault_append_events("
            + ", ".join([
                text(name) + "::regclass", text(channel), text(lock_timeout),
                array(["'" + str(uuid.UUID(str(i))) + "'" for i in ids], "uuid"),
                array([str(int(v)) for v in versions], "bigint"),
                array([text(t) for t in topics], "text"),
                array(["decode('" + bytes(b).hex() + "', 'hex')" for b in states], "bytea"),
            ])
            + "); COMMIT")


def _sequenced_sql(table: SequencedTable) -> str:
    return f"SELECT * FROM {table.name}_append($1, $2, $3, $4, $5)"


VARIANTS = (
    Variant("lock", "1", "LOCK TABLE EXCLUSIVE + nextval in the transaction (today)", _LOCK_SQL),
    Variant("lock_1msg", "1'", "lock, with the append and COMMIT in one message (the working tree's "
            "append_and_commit)", _LOCK_SQL, one_message=True),
    Variant("deferred", "2", "position at COMMIT by a deferred constraint trigger", _DEFERRED_SQL),
    Variant("seq_notify", "3", "sequencer (xmin-gated), a NOTIFY per commit", _sequenced_sql(GATED), GATED),
    Variant("seq", "3", "sequencer (xmin-gated), NOTIFY at most every 0.5 s", _sequenced_sql(GATED), GATED,
            notify="throttled"),
    Variant("seq_visible", "3'", "sequencer without the xmin gate, NOTIFY at most every 0.5 s",
            _sequenced_sql(UNGATED), UNGATED, notify="throttled"),
    Variant("seq_cd", "4", "seq + commit_delay", _sequenced_sql(GATED), GATED, notify="throttled", commit_delay=True),
    Variant("lock_cd", "4", "lock + commit_delay", _LOCK_SQL, commit_delay=True),
)
BASELINE = "lock"
PROBED = ("seq", "seq_visible")  # the variants the long-transaction probe runs


@dataclass
class Figure:
    """What was measured of one variant at one client count, over all its slices."""

    ops: int = 0
    seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    error_example: dict[str, str] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    cpu: Counter[str] = field(default_factory=Counter)
    wal_syncs: int = 0
    committed: list[tuple[int, float]] = field(default_factory=list)  # sequenced: (insert_id, committed at)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def cores(self) -> dict[str, float]:
        busy = {k: self.cpu[k] / self.seconds for k in ("postgres", "loadgen", "sequencer", "machine")}
        busy["other"] = max(0.0, busy["machine"] - busy["postgres"] - busy["loadgen"] - busy["sequencer"])
        return {k: round(busy[k], 2) for k in (*CPU_COLUMNS, "machine")}


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---- the writers ---------------------------------------------------------------------------------------------------


class Writers:
    """``max(clients)`` connections, each appending to streams of its own."""

    def __init__(self, conns: list[asyncpg.Connection], args: argparse.Namespace) -> None:
        self.conns = conns
        self.args = args
        rng = random.Random(7)
        self.states = [rng.randbytes(STATE_BYTES) for _ in range(64)]
        self.streams: dict[tuple[str, int], list[Any]] = {}  # (variant, client) -> [stream id, last version]
        self.last_wake = {name: -WAKEUP_COVERS_SECONDS for name in SEQUENCED_TABLES}  # per sequencer
        self.warmup_committed: dict[str, list[int]] = {name: [] for name in SEQUENCED_TABLES}  # outside any figure

    def _arguments(self, variant: Variant, client: int) -> tuple[Any, ...]:
        stream = self.streams.setdefault((variant.key, client), [uuid.uuid4(), 0])
        stream[1] += 1
        columns = ([stream[0]], [stream[1]], [TOPIC], [self.states[stream[1] % len(self.states)]])
        if variant.sql == _LOCK_SQL:
            return (EVENTS_TABLE, CHANNEL, LOCK_TIMEOUT, *columns)
        if variant.key == "deferred":
            return (CHANNEL, LOCK_TIMEOUT, *columns)
        assert variant.table is not None
        channel = variant.table.wake_channel
        if variant.notify == "throttled":
            now = time.monotonic()
            if now - self.last_wake[variant.table.name] < WAKEUP_COVERS_SECONDS:
                channel = ""
            else:
                self.last_wake[variant.table.name] = now
        return (channel, *columns)

    async def settings(self, variant: Variant, clients: int) -> None:
        if variant.commit_delay:
            delay, siblings = int(self.args.commit_delay), int(self.args.commit_siblings)
            sql = f"SET commit_delay = {delay}; SET commit_siblings = {siblings}"
        else:
            sql = "RESET commit_delay; RESET commit_siblings"
        await asyncio.gather(*(conn.execute(sql) for conn in self.conns[:clients]))

    async def flush_stats(self) -> None:
        """Have every writer's backend publish its pending statistics (WAL syncs) now, not within the next second."""
        await asyncio.gather(*(conn.execute("SELECT pg_stat_force_next_flush()") for conn in self.conns))
        await asyncio.gather(*(conn.execute("SELECT 1") for conn in self.conns))

    async def closed_loop(self, variant: Variant, clients: int, seconds: float, figure: Figure | None) -> None:
        """``clients`` writers append back to back until the deadline (transactions in flight finish and count)."""
        deadline = time.monotonic() + seconds

        async def worker(i: int) -> None:
            conn = self.conns[i]
            for _ in range(MAX_OPS_PER_SLICE // clients):
                started = time.monotonic()
                if started >= deadline:
                    return
                try:
                    if variant.one_message:
                        rows = []
                        await conn.execute("BEGIN")
                        try:
                            await conn.execute(one_message_append(self._arguments(variant, i)))
                        except BaseException:
                            if conn.is_in_transaction():
                                await conn.execute("ROLLBACK")
                            raise
                    else:
                        async with conn.transaction():
                            rows = await conn.fetch(variant.sql, *self._arguments(variant, i))
                except (asyncpg.PostgresError, OSError, TimeoutError) as exc:
                    if figure is not None:
                        figure.errors[type(exc).__name__] += 1
                        figure.error_example.setdefault(type(exc).__name__, str(exc)[:200])
                    await asyncio.sleep(0.01)
                    continue
                done = time.monotonic()
                if figure is None:
                    if variant.table is not None:
                        self.warmup_committed[variant.table.name].append(rows[0][0])
                    continue
                figure.latencies.append(done - started)
                if variant.sequenced:
                    figure.committed.append((rows[0][0], done))

        started = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(clients))), seconds + 60)
        if figure is not None:
            figure.ops = len(figure.latencies)
            figure.seconds += time.monotonic() - started


async def wal_syncs(conn: asyncpg.Connection) -> int:
    """WAL flushes so far, cluster-wide (other databases' commits count too)."""
    return int(await conn.fetchval("SELECT wal_sync FROM pg_stat_wal"))


async def measure_slice(
    writers: Writers, variant: Variant, clients: int, seconds: float, figure: Figure, monitor: asyncpg.Connection,
    database: str, sequencer_pid: int,
) -> None:
    await writers.settings(variant, clients)
    await writers.flush_stats()
    syncs, before = await wal_syncs(monitor), cpu_snapshot(database, sequencer_pid)
    await writers.closed_loop(variant, clients, seconds, figure)
    await writers.flush_stats()
    figure.cpu.update(cpu_snapshot(database, sequencer_pid) - before)
    figure.wal_syncs += await wal_syncs(monitor) - syncs


def cpu_snapshot(database: str, sequencer_pid: int) -> Counter[str]:
    return Counter({
        "postgres": postgres_cpu(database),
        "loadgen": time.process_time(),
        "sequencer": process_cpu(sequencer_pid),
        "machine": machine_cpu(),
    })


# ---- the sequencer and the tailing reader (a process of their own) -------------------------------------------------


def sequencer_process(dsn: str, pipe: Pipe, stop: ProcessEvent, gather_seconds: float) -> None:
    asyncio.run(_sequencers_and_readers(dsn, pipe, stop, gather_seconds))


async def _sequencers_and_readers(dsn: str, pipe: Pipe, stop: ProcessEvent, gather_seconds: float) -> None:
    stopping = asyncio.Event()

    async def watch_stop() -> None:
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stopping.set()

    tables = [SequencerAndReader(dsn, table, gather_seconds, stopping) for table in SEQUENCED_TABLES.values()]
    for t in tables:
        await t.connect()
    pipe.send("ready")
    try:
        await asyncio.gather(watch_stop(), *(t.run() for t in tables))
    finally:
        for t in tables:
            await t.close()
    pipe.send({t.table.name: t.results() for t in tables})


class SequencerAndReader:
    """One sequenced table's sequencer, its tailing reader, and (gated tables) a sampler of who holds it back."""

    def __init__(self, dsn: str, table: SequencedTable, gather_seconds: float, stopping: asyncio.Event) -> None:
        self.dsn, self.table, self.gather, self.stopping = dsn, table, gather_seconds, stopping
        self.conns: list[asyncpg.Connection] = []
        self.woken = asyncio.Event()  # a writer's NOTIFY
        self.moved_on = asyncio.Event()  # the sequencer's NOTIFY to readers, which the reader waits for
        self.done = asyncio.Event()
        self.positioned_ids: list[int] = []
        self.positions: list[int] = []
        self.positioned_at: list[float] = []
        self.passes = Counter[str]()
        self.seen: list[int] = []  # insert ids, in the order the reader read them
        self.reader = Counter[str]()
        self.holders = Counter[str]()  # samples of a transaction over 100 ms old holding the sequencer back
        self.database = ""

    async def connect(self) -> None:
        for role in ("sequencer", "reader", "xmin-watch"):
            self.conns.append(await asyncpg.connect(
                self.dsn, server_settings={"application_name": f"bench-{role}-{self.table.name}"}))
        await self.conns[0].add_listener(self.table.wake_channel, lambda *_: self.woken.set())
        await self.conns[1].add_listener(self.table.positioned_channel, lambda *_: self.moved_on.set())
        self.database = await self.conns[0].fetchval("SELECT current_database()")

    async def close(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    async def run(self) -> None:
        await asyncio.gather(self.sequencer(), self.tailing_reader(), self.watch_holders())

    def results(self) -> dict[str, Any]:
        return {
            "positioned_ids": self.positioned_ids, "positions": self.positions, "positioned_at": self.positioned_at,
            "passes": dict(self.passes), "seen": self.seen, "reader": dict(self.reader),
            "xmin_holders": {k: round(v * HOLDER_SAMPLE_SECONDS, 2) for k, v in self.holders.items()},
        }

    async def position_once(self, last: int) -> int:
        rows = await self.conns[0].fetch(f"SELECT * FROM {self.table.name}_sequence($1, $2, $3)",
                                         last, SEQUENCER_BATCH, self.table.positioned_channel)
        at = time.monotonic()
        for insert_id, position in rows:
            self.positioned_ids.append(insert_id)
            self.positions.append(position)
            self.positioned_at.append(at)
        self.passes["passes"] += 1
        self.passes["empty" if not rows else "positioned"] += 1
        self.passes["max_batch"] = max(self.passes["max_batch"], len(rows))
        return len(rows)

    async def sequencer(self) -> None:
        conn, name = self.conns[0], self.table.name
        # After any failure a real sequencer must re-read this: a pass whose COMMIT's outcome is unknown may have
        # moved it.
        last = int(await conn.fetchval(f"SELECT COALESCE(max(notification_id), 0) FROM {name}"))
        hot_until = 0.0
        drain_deadline: float | None = None
        while True:
            moved = await self.position_once(last)
            last += moved
            now = time.monotonic()
            if moved:
                hot_until = now + 2 * WAKEUP_COVERS_SECONDS
            if moved >= SEQUENCER_BATCH:
                continue
            if self.stopping.is_set():
                drain_deadline = drain_deadline or now + DRAIN_TIMEOUT
                pending = await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {name} WHERE notification_id IS NULL)")
                if not pending or now > drain_deadline:
                    self.passes["left_unpositioned"] = int(await conn.fetchval(
                        f"SELECT count(*) FROM {name} WHERE notification_id IS NULL"))
                    break
                await asyncio.sleep(self.gather)
            elif now < hot_until:
                # Writes are flowing: writers may leave out their NOTIFY, so poll (and let a batch gather).
                await asyncio.sleep(self.gather)
            else:
                self.woken.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.woken.wait(), SEQUENCER_IDLE_POLL)
                if self.woken.is_set():
                    hot_until = time.monotonic() + 2 * WAKEUP_COVERS_SECONDS
        self.done.set()

    async def tailing_reader(self) -> None:
        # As projections/runner.py reads: the head, then everything up to it in position order, and the position
        # moves to the end of the range read. Positions are gap-free, so each range must come back complete.
        conn, name, reader = self.conns[1], self.table.name, self.reader
        head_sql = f"SELECT COALESCE(max(notification_id), 0) FROM {name}"
        position = 0
        while True:
            head = int(await conn.fetchval(head_sql))
            if head <= position:
                if self.done.is_set() and int(await conn.fetchval(head_sql)) <= position:
                    break
                reader["empty_polls"] += 1
                # Woken by the sequencer's NOTIFY, as a runner is; polling is only the fallback.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.moved_on.wait(), READER_POLL)
                self.moved_on.clear()
                continue
            stop_at = min(head, position + READER_SCAN_WINDOW * READER_BATCH)
            rows = await conn.fetch(
                f"SELECT notification_id, insert_id FROM {name}"
                " WHERE notification_id > $1 AND notification_id <= $2 ORDER BY notification_id LIMIT $3",
                position, stop_at, READER_BATCH,
            )
            reader["batches"] += 1
            for notification_id, insert_id in rows:
                if notification_id != position + 1:
                    reader["out_of_order_or_gap"] += 1
                position = notification_id
                self.seen.append(insert_id)
            if len(rows) < READER_BATCH and position < stop_at:
                reader["skipped"] += stop_at - position  # a range read short: rows the runner would pass over
                position = stop_at

    async def watch_holders(self) -> None:
        # Who holds positioning back: while rows wait, the session whose transaction id is the snapshot's xmin
        # (any database of the cluster: transaction ids are cluster-wide), sampled when it has run over 100 ms.
        if not self.table.gated:
            return
        conn = self.conns[2]
        while not self.done.is_set():
            row = await conn.fetchrow(
                f"""SELECT a.datname, a.application_name, extract(epoch FROM now() - a.xact_start) AS age
                    FROM pg_stat_activity a
                    WHERE a.backend_xid = xid(pg_snapshot_xmin(pg_current_snapshot()))
                      AND EXISTS (SELECT 1 FROM {self.table.name} WHERE notification_id IS NULL)""")
            if row is not None and row["age"] is not None and row["age"] > 0.1:
                where = "this database" if row["datname"] == self.database else "another database"
                self.holders[f"{where}: {row['application_name'] or '?'}"] += 1
            await asyncio.sleep(HOLDER_SAMPLE_SECONDS)


# ---- the run -------------------------------------------------------------------------------------------------------


async def stall_probe(
    writers: Writers, variant: Variant, dsn: str, clients: int, seconds: float, database: str, sequencer_pid: int,
    monitor: asyncpg.Connection,
) -> Figure:
    """``variant`` under ``clients`` writers while another session holds a transaction id open for ``seconds``."""
    figure = Figure()
    holder = await asyncpg.connect(dsn, server_settings={"application_name": "bench-long-transaction"})

    async def hold() -> None:
        await asyncio.sleep(0.5)
        async with holder.transaction():
            await holder.fetchval("SELECT pg_current_xact_id()")  # what any transaction that wrote holds
            await asyncio.sleep(seconds)

    try:
        await asyncio.gather(
            measure_slice(writers, variant, clients, seconds + 1.5, figure, monitor, database, sequencer_pid), hold())
    finally:
        await holder.close()
    return figure


async def run(args: argparse.Namespace) -> dict[str, Any]:
    database = f"scaivault_bench_{os.getpid()}_append_order"
    dsn = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    clients_list = sorted(set(args.clients))
    variants = [v for v in VARIANTS if v.key in args.variants]
    if BASELINE not in args.variants:
        raise SystemExit(f"--variants must include {BASELINE}, the baseline of every ratio")
    print(f"database {database}; clients {clients_list}; {args.seconds:g} s per figure in {args.rounds} slices "
          f"(+{args.warmup:g} s warm-up); commit_delay {args.commit_delay} us, commit_siblings "
          f"{args.commit_siblings} for the *_cd variants", file=sys.stderr)
    await admin(f'CREATE DATABASE "{database}"')
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    parent_end, child_end = context.Pipe()
    child = None
    conns: list[asyncpg.Connection] = []
    monitor = None
    started = time.monotonic()
    try:
        await create_schema(dsn)
        child = context.Process(target=sequencer_process, args=(dsn, child_end, stop, args.sequencer_gather_ms / 1000),
                                name="bench-sequencer", daemon=True)
        child.start()
        if not await asyncio.to_thread(parent_end.poll, 30) or parent_end.recv() != "ready":
            raise RuntimeError("the sequencer process did not start")
        assert child.pid is not None
        conns = [await asyncpg.connect(dsn, server_settings={"application_name": f"bench-writer-{i}"})
                 for i in range(max(clients_list))]
        monitor = await asyncpg.connect(dsn, server_settings={"application_name": "bench-monitor"})
        writers = Writers(conns, args)
        figures: dict[int, dict[str, Figure]] = {}
        for clients in clients_list:
            figures[clients] = {v.key: Figure() for v in variants}
            for variant in variants:
                await writers.settings(variant, clients)
                await writers.closed_loop(variant, clients, args.warmup, None)
            for r in range(args.rounds):
                for variant in variants if r % 2 == 0 else reversed(variants):
                    await measure_slice(writers, variant, clients, args.seconds / args.rounds,
                                        figures[clients][variant.key], monitor, database, child.pid)
            print(f"  {clients:>3} clients: " + ", ".join(
                f"{k} {f.rate:.0f}/s" for k, f in figures[clients].items()), file=sys.stderr)
        probes: dict[str, Figure] = {}
        if args.stall_seconds > 0:
            for variant in variants:
                if variant.key in PROBED:
                    probes[variant.key] = await stall_probe(
                        writers, variant, dsn, 8, args.stall_seconds, database, child.pid, monitor)
        await writers.settings(VARIANTS[0], len(conns))
        # Heap and indexes per event: the deferred trigger and the sequencers write every event twice.
        table_sizes = {}
        for table in ("scaivault_events", "deferred_events", *SEQUENCED_TABLES):
            rows, size = await monitor.fetchrow(
                f"SELECT count(*), pg_total_relation_size('{table}') FROM {table}")
            table_sizes[table] = {"rows": rows, "bytes": size, "bytes_per_row": round(size / rows) if rows else None}
        # Scheme 2's trigger must have numbered every committed row, each once.
        deferred_check = dict(await monitor.fetchrow(
            "SELECT count(*) AS rows, count(notification_id) AS positioned,"
            " count(DISTINCT notification_id) AS distinct_positions FROM deferred_events"))
        stop.set()
        if not await asyncio.to_thread(parent_end.poll, DRAIN_TIMEOUT + 30):
            raise RuntimeError("the sequencer process did not drain")
        sequenced: dict[str, Any] = parent_end.recv()
        postgres = {name: await monitor.fetchval(f"SHOW {name}") for name in (
            "server_version", "synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "commit_delay",
            "commit_siblings")}
    finally:
        stop.set()
        for conn in [*conns, *([monitor] if monitor is not None else [])]:
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)
        if child is not None:
            await asyncio.to_thread(child.join, 10)
            if child.is_alive():
                child.terminate()
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return report(args, variants, figures, probes, writers, sequenced, {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "cpus": os.cpu_count(), "machine": machine(),
        "seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup, "clients": clients_list,
        "commit_delay_us": args.commit_delay, "commit_siblings": args.commit_siblings,
        "sequencer_gather_ms": args.sequencer_gather_ms, "sequencer_batch": SEQUENCER_BATCH,
        "notify_covers_seconds": WAKEUP_COVERS_SECONDS, "state_bytes": STATE_BYTES,
        "python": platform.python_version(), "asyncpg": asyncpg.__version__, "postgres": postgres,
        "table_sizes_at_end": table_sizes, "deferred_positions_at_end": deferred_check, "source": source_version(),
        "elapsed_seconds": round(time.monotonic() - started),
    })


# ---- the report ----------------------------------------------------------------------------------------------------


def lag_summary(figure: Figure, positioned_at: dict[int, float]) -> dict[str, Any]:
    lags = [positioned_at[i] - t for i, t in figure.committed if i in positioned_at]
    return {
        "rows": len(figure.committed),
        "unpositioned": len(figure.committed) - len(lags),
        "p50_ms": round(1000 * percentile(lags, 0.50), 2),
        "p99_ms": round(1000 * percentile(lags, 0.99), 2),
        "max_ms": round(1000 * max(lags), 2) if lags else None,
    }


def ratio(value: float, base: float) -> float | None:
    return round(value / base, 2) if base else None


def report(
    args: argparse.Namespace, variants: list[Variant], figures: dict[int, dict[str, Figure]],
    probes: dict[str, Figure], writers: Writers, sequenced: dict[str, Any], meta: dict[str, Any],
) -> dict[str, Any]:
    positioned_at = {
        name: dict(zip(data["positioned_ids"], data["positioned_at"], strict=True)) for name, data in sequenced.items()}
    table: dict[str, dict[str, Any]] = {}
    header = (f"{'clients':>7} {'variant':<12}{'writes/s':>9}{'x lock':>7}{'p50 ms':>8}{'x lock':>7}{'p99 ms':>8}"
              f"{'x lock':>7}{'commits/':>9}{'lag p50':>8}{'lag p99':>8}{'err':>5}   cores: pg  load   seq other")
    print("\n" + header + f"\n{'':7} {'':12}{'':9}{'':7}{'':8}{'':7}{'':8}{'':7}{'WAL sync':>9}{'ms':>8}{'ms':>8}")
    for clients, by_variant in figures.items():
        base = by_variant[BASELINE]
        base_p50, base_p99 = percentile(base.latencies, 0.5), percentile(base.latencies, 0.99)
        row: dict[str, Any] = {}
        for variant in variants:
            f = by_variant[variant.key]
            p50, p99 = percentile(f.latencies, 0.5), percentile(f.latencies, 0.99)
            entry: dict[str, Any] = {
                "scheme": variant.scheme, "description": variant.description,
                "writes_per_s": round(f.rate, 1), "ops": f.ops, "seconds": round(f.seconds, 2),
                "p50_ms": round(1000 * p50, 2), "p99_ms": round(1000 * p99, 2),
                "rate_x_lock": ratio(f.rate, base.rate), "p50_x_lock": ratio(p50, base_p50),
                "p99_x_lock": ratio(p99, base_p99),
                "commits_per_wal_sync": round(f.ops / f.wal_syncs, 2) if f.wal_syncs > 0 else None,
                "errors": dict(f.errors), "error_examples": f.error_example, "cpu_cores": f.cores(),
            }
            if variant.table is not None:
                entry["lag"] = lag_summary(f, positioned_at[variant.table.name])
            row[variant.key] = entry
            lag = entry.get("lag", {})
            cores = entry["cpu_cores"]
            print(f"{clients:>7} {variant.key:<12}{f.rate:>9.0f}{entry['rate_x_lock'] or 0:>7.2f}{1000 * p50:>8.2f}"
                  f"{entry['p50_x_lock'] or 0:>7.2f}{1000 * p99:>8.2f}{entry['p99_x_lock'] or 0:>7.2f}"
                  f"{entry['commits_per_wal_sync'] or 0:>9.2f}{lag.get('p50_ms', ''):>8}{lag.get('p99_ms', ''):>8}"
                  f"{sum(f.errors.values()):>5}   "
                  + " ".join(f"{cores[c]:>5.2f}" for c in CPU_COLUMNS))
        table[str(clients)] = row

    # Each tailing reader's proof: every committed row of its table read once, positions 1..N without a gap.
    most = max(figures)
    readers: dict[str, Any] = {}
    print()
    for name, data in sequenced.items():
        committed_ids = list(writers.warmup_committed[name])
        by_clients: dict[str, int] = {}
        at_most: list[int] = []
        for clients, by_variant in figures.items():
            for variant in variants:
                if variant.table is not None and variant.table.name == name:
                    ids = [i for i, _ in by_variant[variant.key].committed]
                    committed_ids += ids
                    by_clients[str(clients)] = by_clients.get(str(clients), 0) + len(ids)
                    if clients == most:
                        at_most += ids
        for key, probe in probes.items():
            if next(v for v in variants if v.key == key).table == SEQUENCED_TABLES[name]:
                committed_ids += [i for i, _ in probe.committed]
        seen: list[int] = data["seen"]
        seen_set, committed_set = set(seen), set(committed_ids)
        check: dict[str, Any] = {
            "committed_rows": len(committed_set),
            "read_rows": len(seen),
            "read_twice": len(seen) - len(seen_set),
            "never_read": len(committed_set - seen_set),
            "read_but_not_committed": len(seen_set - committed_set),
            "positions_out_of_order_or_gap": data["reader"].get("out_of_order_or_gap", 0),
            "positions_skipped": data["reader"].get("skipped", 0),
            "positions_are_1_to_n": sorted(data["positions"]) == list(range(1, len(data["positions"]) + 1)),
            "committed_rows_by_clients": by_clients,
            f"rows_written_at_{most}_clients": len(at_most),
            "of_those_read_once": sum(1 for i in at_most if i in seen_set),
            "reader_batches": data["reader"].get("batches", 0),
        }
        check["ok"] = (check["read_twice"] == 0 and check["never_read"] == 0 and check["read_but_not_committed"] == 0
                       and check["positions_out_of_order_or_gap"] == 0 and check["positions_skipped"] == 0
                       and bool(check["positions_are_1_to_n"]) and len(seen) == len(committed_set))
        readers[name] = check
        print(f"tailing reader of {name} ({'xmin-gated' if SEQUENCED_TABLES[name].gated else 'no gate'}): "
              f"{len(committed_set)} rows committed (warm-ups and probe included), read {len(seen)}, twice "
              f"{check['read_twice']}, never {check['never_read']}, out of order/gap "
              f"{check['positions_out_of_order_or_gap']}, skipped {check['positions_skipped']}; at {most} clients "
              f"{check['of_those_read_once']} of {len(at_most)} rows read -> "
              + ("OK: every row seen exactly once, in position order" if check["ok"] else "FAILED"))
        print(f"  sequencer passes: {data['passes']}")
        if SEQUENCED_TABLES[name].gated:
            print("  transactions over 100 ms holding it back (seconds sampled, by database and application): "
                  f"{data['xmin_holders'] or 'none'}")
    results: dict[str, Any] = {
        "meta": meta, "figures": table, "tailing_readers": readers,
        "sequencers": {name: data["passes"] for name, data in sequenced.items()},
        "xmin_holders_seconds": {name: data["xmin_holders"] for name, data in sequenced.items()},
    }
    stalls: dict[str, Any] = {}
    for key, probe in probes.items():
        variant = next(v for v in variants if v.key == key)
        assert variant.table is not None
        stall = {"clients": 8, "held_seconds": args.stall_seconds, "writes_per_s": round(probe.rate, 1),
                 "p99_ms": round(1000 * percentile(probe.latencies, 0.99), 2),
                 "lag": lag_summary(probe, positioned_at[variant.table.name])}
        stalls[key] = stall
        print(f"long-transaction probe, {key}: a transaction id held {args.stall_seconds:g} s under 8 writers: "
              f"writes {probe.rate:.0f}/s, p99 {stall['p99_ms']} ms; lag p50 {stall['lag']['p50_ms']} ms, p99 "
              f"{stall['lag']['p99_ms']} ms, max {stall['lag']['max_ms']} ms")
    results["long_transaction_probe"] = stalls
    for clients, by_variant in figures.items():
        for key, f in by_variant.items():
            for kind, count in f.errors.items():
                print(f"WARNING: {key} at {clients} clients: {count} x {kind}, e.g. {f.error_example[kind]}")
    if not all(check["ok"] for check in readers.values()):
        results["failed"] = "a tailing reader did not see every committed row exactly once, in order"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.append_order", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time of each figure (default 4)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating slices per figure (default 4)")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured warm-up per figure (default 0.5)")
    parser.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 8, 32],
                        help="concurrent writers, comma-separated (default 1,8,32)")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=[v.key for v in VARIANTS],
                        help="comma-separated subset of " + ",".join(v.key for v in VARIANTS))
    parser.add_argument("--commit-delay", type=int, default=50, help="commit_delay (us) of the *_cd variants")
    parser.add_argument("--commit-siblings", type=int, default=5, help="commit_siblings of the *_cd variants")
    parser.add_argument("--sequencer-gather-ms", type=float, default=2.0,
                        help="pause between the sequencer's passes while writes flow (default 2)")
    parser.add_argument("--stall-seconds", type=float, default=1.0,
                        help="how long the probe holds a transaction id open (0 skips the probe)")
    parser.add_argument("--output", type=Path, default=RESULTS / "append-order-latest.json")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {args.output}", file=sys.stderr)
    if "failed" in results:
        raise SystemExit(results["failed"])


if __name__ == "__main__":
    main()
