"""Rebuilding and verifying read models from the event history.

A rebuild builds a new copy of a projection's tables beside the live ones (schema ``scaivault_rebuild_<name>``,
tables created ``LIKE`` the live ones), replays every event into it, then swaps it in within one transaction that
first catches up the last events. Serving never stops and never sees a half-built model:

- for an inline read model (written in command transactions), the swap holds the read-model swap lock exclusively,
  so no command is between updating a read model and committing (scaivault/eventstore/locks.py);
- for a catch-up projection, the swap holds the projection's swap lock, so its runner is between batches; the swap
  records the copy's position, from which the runner goes on.

The copy is written through the projection's own code, with ``search_path`` pointing at the copy's schema first.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent

from projections.runner import TRACKING_TABLE, Projection, swap_key, tracked_position
from scaivault.database import connect
from scaivault.eventstore.locks import EXCLUSIVE_READ_MODEL_LOCK, MAINTENANCE_KEY, READ_MODEL_SWAP_KEY
from scaivault.eventstore.recorder import EventRow, PostgresEventStore

Progress = Callable[[int, int], None]  # (events replayed so far, head)
REPLAY_BATCH = 5000
READ_AHEAD = 2  # decoded pages waiting to be applied
DECODE_CHUNK = 100  # events decoded between yields to the event loop
_Page = tuple[int, int, Any]  # (last notification id, events read, events decoded (and prepared))
# While a rebuild runs, the collector's first generation waits for this many new container objects, not 700.
GC_THRESHOLD = 100_000
_gc_users = 0
_gc_threshold: tuple[int, int, int] = gc.get_threshold()


@dataclass(frozen=True)
class ReadModel:
    projection: Projection
    inline: bool  # written in command transactions (else: by the projection runner)

    @property
    def name(self) -> str:
        return self.projection.name


@dataclass(frozen=True)
class RebuildReport:
    name: str
    events: int
    position: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class Rebuilder:
    def __init__(self, dsn: str, store: PostgresEventStore, mapper: Mapper[Any]) -> None:
        self._dsn = dsn
        self._store = store
        self._mapper = mapper

    async def rebuild(self, model: ReadModel, progress: Progress | None = None) -> RebuildReport:
        """Build a fresh copy, catch it up, swap it in; the old tables are dropped."""
        started = time.perf_counter()
        conn = await connect(self._dsn)
        try:
            # One maintenance job at a time (audit retention rewrites history-derived state too); released with
            # the connection.
            await conn.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_KEY)
            schema, deferred = await self._create_copy(conn, model)
            position, replayed = await self._replay(conn, model, 0, progress)
            await _build_indexes(conn, deferred)
            async with conn.transaction():
                await self._lock_out_writers(conn, model)
                position, more = await self._replay(conn, model, position, progress, in_transaction=True)
                replayed += more
                await self._swap(conn, model, schema)
                if not model.inline:
                    await conn.execute(
                        f"""INSERT INTO public.{TRACKING_TABLE} (application_name, notification_id) VALUES ($1, $2)
                            ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id""",
                        model.name,
                        position,
                    )
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema}_old CASCADE; DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
        return RebuildReport(model.name, replayed, position, time.perf_counter() - started)

    async def verify(self, model: ReadModel, progress: Progress | None = None) -> dict[str, Any]:
        """Build a copy at the live model's position and compare every table's checksum with the live one."""
        conn = await connect(self._dsn)
        try:
            schema, deferred = await self._create_copy(conn, model)
            position, _ = await self._replay(conn, model, 0, progress)
            await _build_indexes(conn, deferred)
            tables: dict[str, dict[str, Any]] = {}
            while not tables:
                async with conn.transaction():
                    await self._lock_out_writers(conn, model)
                    live = await self._live_position(conn, model)
                    if live >= position:  # else the runner is still behind the copy: let it catch up first
                        position, _ = await self._replay(
                            conn, model, position, progress, in_transaction=True, stop=live
                        )
                        for table in model.projection.tables:
                            tables[table] = {
                                "live": await _checksum(conn, "public", table),
                                "rebuilt": await _checksum(conn, schema, table),
                            }
                if not tables:
                    await asyncio.sleep(0.1)
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        finally:
            await conn.close()
        for checksums in tables.values():
            checksums["identical"] = checksums["live"] == checksums["rebuilt"]
        return {"name": model.name, "position": position, "identical": all(t["identical"] for t in tables.values()),
                "tables": tables}

    async def _create_copy(self, conn: asyncpg.Connection, model: ReadModel) -> tuple[str, list[str]]:
        """The copy's schema, and the statements that build the indexes the projection defers until its replay is
        in. The copy's constraints and indexes take the live ones' names (``LIKE ... INCLUDING ALL`` would make up
        new ones), so that migrations find them by name after a swap."""
        schema = f"scaivault_rebuild_{model.name}"
        await conn.execute("SET search_path = public")
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        deferred: list[str] = []
        for table in model.projection.tables:
            await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL EXCLUDING INDEXES)")
            for index in await conn.fetch(_INDEXES, f"public.{table}"):
                if index["constraint_name"] is not None:
                    await conn.execute(f"ALTER TABLE {schema}.{table} ADD CONSTRAINT {index['constraint_name']} "
                                       f"{index['constraint_definition']}")
                    continue
                statement = index["definition"].replace(f" ON public.{table} ", f" ON {schema}.{table} ", 1)
                if (table, index["columns"]) in model.projection.indexes_built_after_replay:
                    deferred.append(statement)
                else:
                    await conn.execute(statement)
        await conn.execute(f"SET search_path = {schema}, public")
        return schema, deferred

    async def _replay(
        self,
        conn: asyncpg.Connection,
        model: ReadModel,
        position: int,
        progress: Progress | None,
        *,
        in_transaction: bool = False,
        stop: int | None = None,
    ) -> tuple[int, int]:
        """Apply every event after ``position`` (up to ``stop``) to the copy; returns (position, events applied).

        Outside a transaction (the bulk of a rebuild) each page is applied in its own transaction, and the next pages
        are read and decoded on a second connection meanwhile, so PostgreSQL's work on one page overlaps Python's on
        the next. Inside the caller's transaction (the catch-up under the lock) pages are read on ``conn`` itself."""
        head = await self._store.max_notification_id(conn)
        replayed = 0
        if in_transaction:
            while True:
                batch = await self._store.select_event_rows(conn, position + 1, REPLAY_BATCH, stop=stop)
                if not batch:
                    return position, replayed
                await model.projection.apply(conn, await self._decode(model, batch))
                position, replayed = batch[-1].id, replayed + len(batch)
                if progress is not None:
                    progress(position, max(head, position))
        with fewer_collections():
            return await self._replay_ahead(conn, model, position, progress, stop, head)

    async def _replay_ahead(
        self, conn: asyncpg.Connection, model: ReadModel, position: int, progress: Progress | None, stop: int | None,
        head: int,
    ) -> tuple[int, int]:
        replayed = 0
        reader = await connect(self._dsn)
        pages: asyncio.Queue[_Page | BaseException | None] = asyncio.Queue(maxsize=READ_AHEAD)
        read_ahead = asyncio.create_task(self._read_ahead(reader, model, position, stop, pages))
        try:
            while (page := await pages.get()) is not None:
                if isinstance(page, BaseException):
                    raise page
                last, count, events = page
                async with conn.transaction():
                    # The copy is dropped unless the swap commits, and that commit (synchronous) makes all before it
                    # durable: these commits need not wait for their WAL flush.
                    await conn.execute("SET LOCAL synchronous_commit = off")
                    await model.projection.apply(conn, events)
                position, replayed = last, replayed + count
                if progress is not None:
                    progress(position, max(head, position))
        finally:
            read_ahead.cancel()
            await asyncio.gather(read_ahead, return_exceptions=True)
            await reader.close()
        return position, replayed

    async def _read_ahead(
        self,
        reader: asyncpg.Connection,
        model: ReadModel,
        position: int,
        stop: int | None,
        pages: asyncio.Queue[_Page | BaseException | None],
    ) -> None:
        """Read and decode the pages after ``position`` into ``pages``, then None; or the error that stopped it.
        From position 0 (an empty copy) each page also goes through the projection's page preparer, if any."""
        prepare = model.projection.page_preparer() if position == 0 else None
        try:
            while batch := await self._store.select_event_rows(reader, position + 1, REPLAY_BATCH, stop=stop):
                events = await self._decode(model, batch)
                await pages.put((batch[-1].id, len(batch), await prepare(reader, events) if prepare else events))
                position = batch[-1].id
            await pages.put(None)
        except Exception as exc:  # noqa: BLE001 - handed to the applying side, which raises it
            await pages.put(exc)

    async def _decode(self, model: ReadModel, batch: list[EventRow]) -> list[tuple[int, Any]]:
        """The page's events the projection consumes, decoded (the others only move the position). Yields to the
        event loop between chunks, so a page being applied meanwhile gets its next statement sent."""
        wanted, decode, mapper, events = model.projection.topics, model.projection.decode, self._mapper, []
        for start in range(0, len(batch), DECODE_CHUNK):
            # An EventRow reads like a StoredEvent (the mapper reads the same four attributes): decoded as it is.
            chunk = batch[start : start + DECODE_CHUNK]
            events += [(n.id, decode(mapper, cast(StoredEvent, n))) for n in chunk if n.topic in wanted]
            await asyncio.sleep(0)
        return events

    @staticmethod
    async def _lock_out_writers(conn: asyncpg.Connection, model: ReadModel) -> None:
        key = READ_MODEL_SWAP_KEY if model.inline else swap_key(model.name)
        await conn.execute(EXCLUSIVE_READ_MODEL_LOCK, key)

    async def _live_position(self, conn: asyncpg.Connection, model: ReadModel) -> int:
        if model.inline:  # inline models are as current as the event store
            return await self._store.max_notification_id(conn)
        return await tracked_position(conn, model.name)

    @staticmethod
    async def _swap(conn: asyncpg.Connection, model: ReadModel, schema: str) -> None:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema}_old CASCADE; CREATE SCHEMA {schema}_old")
        for table in model.projection.tables:
            await conn.execute(f"ALTER TABLE public.{table} SET SCHEMA {schema}_old")
            await conn.execute(f"ALTER TABLE {schema}.{table} SET SCHEMA public")


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Replaying allocates millions of short-lived dicts and events that only reference counting ever frees; at
    the collector's default threshold (a collection every 700 new container objects, each of which walks the
    pages in flight, and full collections as they pile up) that is a large share of a rebuild's time. This raises
    the first generation's threshold for as long as any replay runs in the process (it is process-wide), then
    puts it back."""
    global _gc_users, _gc_threshold
    if _gc_users == 0:
        _gc_threshold = gc.get_threshold()
        gc.set_threshold(max(GC_THRESHOLD, _gc_threshold[0]), *_gc_threshold[1:])
    _gc_users += 1
    try:
        yield
    finally:
        _gc_users -= 1
        if _gc_users == 0:
            gc.set_threshold(*_gc_threshold)


# A table's indexes: the statement that creates each, its column list, and the constraint it backs (if any).
_INDEXES = """
    SELECT pg_get_indexdef(i.indexrelid) AS definition,
           (SELECT string_agg(pg_get_indexdef(i.indexrelid, k, true), ', ' ORDER BY k)
            FROM generate_series(1, i.indnkeyatts) k) AS columns,
           c.conname AS constraint_name, pg_get_constraintdef(c.oid) AS constraint_definition
    FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.conrelid = i.indrelid
    WHERE i.indrelid = $1::regclass
    ORDER BY i.indexrelid"""
# Sort memory for a deferred index build (PostgreSQL's default of 64 MB spills a million rows to disk).
INDEX_BUILD_MEMORY = "256MB"


async def _build_indexes(conn: asyncpg.Connection, statements: list[str]) -> None:
    if not statements:
        return
    async with conn.transaction():  # the setting ends with it
        await conn.execute(f"SET LOCAL maintenance_work_mem = '{INDEX_BUILD_MEMORY}'")
        for statement in statements:
            await conn.execute(statement)


async def _checksum(conn: asyncpg.Connection, schema: str, table: str) -> str:
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) AS digest"
        f" FROM {schema}.{table} t"
    )
    return f"{row['n']}:{row['digest']}"
