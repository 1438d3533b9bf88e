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
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent

from projections.runner import TRACKING_TABLE, Projection, swap_key, tracked_position
from scaivault.database import connect
from scaivault.eventstore.locks import EXCLUSIVE_READ_MODEL_LOCK, MAINTENANCE_KEY, READ_MODEL_SWAP_KEY
from scaivault.eventstore.recorder import PostgresEventStore

Progress = Callable[[int, int], None]  # (events replayed so far, head)
REPLAY_BATCH = 5000


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
            schema = await self._create_copy(conn, model)
            position, replayed = await self._replay(conn, model, 0, progress)
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
            schema = await self._create_copy(conn, model)
            position, _ = await self._replay(conn, model, 0, progress)
            tables: dict[str, dict[str, Any]] = {}
            while not tables:
                async with conn.transaction():
                    await self._lock_out_writers(conn, model)
                    live = await self._live_position(conn, model)
                    if live >= position:  # else the runner is still behind the copy: let it catch up first
                        position, _ = await self._replay(conn, model, position, progress, in_transaction=True, stop=live)
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
        for table in tables.values():
            table["identical"] = table["live"] == table["rebuilt"]
        return {"name": model.name, "position": position, "identical": all(t["identical"] for t in tables.values()),
                "tables": tables}

    async def _create_copy(self, conn: asyncpg.Connection, model: ReadModel) -> str:
        schema = f"scaivault_rebuild_{model.name}"
        await conn.execute("SET search_path = public")
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        for table in model.projection.tables:
            await conn.execute(f"CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING ALL)")
        await conn.execute(f"SET search_path = {schema}, public")
        return schema

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
        """Apply every event after ``position`` (up to ``stop``) to the copy; returns (position, events applied)."""
        head = await self._store.max_notification_id(conn)
        replayed = 0
        wanted = model.projection.topics
        while True:
            batch = await self._store.select_notifications(conn, position + 1, REPLAY_BATCH, stop=stop)
            if not batch:
                return position, replayed
            events = [
                (n.id, self._mapper.to_domain_event(StoredEvent(n.originator_id, n.originator_version, n.topic, n.state)))
                for n in batch
                if n.topic in wanted
            ]
            if in_transaction:
                await model.projection.apply(conn, events)
            else:
                async with conn.transaction():
                    await model.projection.apply(conn, events)
            position, replayed = batch[-1].id, replayed + len(batch)
            if progress is not None:
                progress(position, max(head, position))

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


async def _checksum(conn: asyncpg.Connection, schema: str, table: str) -> str:
    row = await conn.fetchrow(
        f"SELECT count(*) AS n, md5(coalesce(string_agg(md5(t::text), '' ORDER BY md5(t::text)), '')) AS digest"
        f" FROM {schema}.{table} t"
    )
    return f"{row['n']}:{row['digest']}"
