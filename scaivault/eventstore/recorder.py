"""Async (asyncpg) event recorder over the tables of eventsourcing's ``PostgresApplicationRecorder``.

Writes follow eventsourcing's protocol exactly: inside the caller's transaction, ``SET LOCAL lock_timeout``,
``LOCK TABLE <events> IN EXCLUSIVE MODE``, ``NOTIFY <channel>``, then one ``INSERT ... RETURNING notification_id``,
all in one call of a SQL function (``scaivault/eventstore/append_functions.py``).
The lock makes notification IDs be handed out in commit order, so a reader tailing by ``notification_id`` never
passes over a row that commits later. Rolled-back transactions still burn sequence values: gaps are normal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Sequence
from types import TracebackType
from typing import Self
from uuid import UUID

import asyncpg
from eventsourcing.persistence import Notification, StoredEvent

from scaivault.database import Connection, Queryable, application_name
from scaivault.eventstore.append_functions import EventsTable, append_and_commit_sql, append_events

log = logging.getLogger(__name__)

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def _identifier(name: str) -> str:
    # Names are interpolated into SQL (they cannot be bind parameters), so only plain lower-case names are allowed.
    if not _IDENTIFIER.fullmatch(name):
        msg = f"Not a plain SQL identifier: {name!r}"
        raise ValueError(msg)
    return f'"{name}"'


# An appender may leave out the NOTIFY only within this long of its last committed one, and a projection runner keeps
# polling for twice this long after it last found events: a wake-up it was sent still covers those appends.
WAKEUP_COVERS_SECONDS = 0.5
# Distinct payloads a listener keeps between two takes (``keep_payloads``); more are dropped, as a missed NOTIFY is.
MAX_KEPT_PAYLOADS = 10_000


class EventRow:
    """A stored event with its notification id, as a ``Notification`` has them (and read the same way by the
    mapper), built more cheaply: the stream id becomes a standard UUID only when asked for, and a rebuild of the
    audit log, which reads a million events, never asks."""

    __slots__ = ("_stream", "id", "originator_version", "state", "topic")

    def __init__(self, id: int, stream: UUID, originator_version: int, topic: str, state: bytes) -> None:
        self.id, self._stream, self.originator_version, self.topic, self.state = (
            id, stream, originator_version, topic, state)

    @property
    def originator_id(self) -> UUID:
        # asyncpg's own UUID subclass would leak into domain events: the standard type.
        return UUID(bytes=self._stream.bytes)


class EventStoreConflict(Exception):
    """An (originator_id, originator_version) was already taken: a concurrent writer won.

    The transaction is aborted; the caller retries the whole command (reload, decide, save).
    """


class PostgresEventStore:
    def __init__(
        self,
        *,
        events_table: str = "scaivault_events",
        snapshots_table: str = "scaivault_snapshots",
        channel: str = "scaivault_events",
        lock_timeout_seconds: float = 5.0,
    ) -> None:
        if lock_timeout_seconds < 0:
            msg = "lock_timeout_seconds must be >= 0 (0 waits for ever)"
            raise ValueError(msg)
        events = _identifier(events_table)
        snapshots = _identifier(snapshots_table)
        self.channel = channel
        columns = "originator_id, originator_version, topic, state"
        # The lock timeout bounds how long a stuck writer can stall all others.
        self.events_table = EventsTable(events, channel, f"{round(lock_timeout_seconds * 1000)}ms")
        self._select_events_sql = f"SELECT {columns} FROM {events} WHERE originator_id = $1"
        self._select_notifications_sql = f"SELECT notification_id, {columns} FROM {events} WHERE notification_id "
        self._max_notification_id_sql = f"SELECT COALESCE(MAX(notification_id), 0) FROM {events}"
        self._insert_snapshot_sql = (
            f"INSERT INTO {snapshots} ({columns}) VALUES ($1, $2, $3, $4) "
            f"ON CONFLICT (originator_id, originator_version) DO NOTHING"
        )
        self._select_snapshot_sql = f"SELECT {columns} FROM {snapshots} WHERE originator_id = $1"

    async def append(self, conn: Connection, stored_events: Sequence[StoredEvent]) -> list[int]:
        """Insert the events; return their notification IDs, in order.

        Call it inside an open transaction, as its last step before commit: the table lock is held until then.
        """
        if not stored_events:
            return []
        assert conn.is_in_transaction(), "append() must run inside the caller's transaction"
        try:
            return await append_events(conn, self.events_table, stored_events)
        except asyncpg.UniqueViolationError as e:
            raise EventStoreConflict(str(e)) from e

    async def append_and_commit(self, conn: Connection, stored_events: Sequence[StoredEvent]) -> None:
        """Insert the events and commit the caller's transaction, in one message to PostgreSQL (see
        ``append_and_commit_sql``). On a conflict the transaction is left aborted, for the caller to roll back."""
        assert conn.is_in_transaction(), "append_and_commit() must run inside the caller's transaction"
        if not stored_events:
            await conn.execute("COMMIT")
            return
        try:
            await conn.execute(append_and_commit_sql(self.events_table, stored_events))
        except asyncpg.UniqueViolationError as e:
            raise EventStoreConflict(str(e)) from e

    async def read_stream(
        self,
        conn: Queryable,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        sql, args = self._stream_query(self._select_events_sql, originator_id, gt=gt, lte=lte, desc=desc, limit=limit)
        rows = await conn.fetch(sql, *args)
        # Reuse the caller's UUID rather than asyncpg's own UUID subclass, which would leak into aggregates.
        return [StoredEvent(originator_id, row[1], row[2], row[3]) for row in rows]

    async def write_snapshot(self, conn: Queryable, snapshot: StoredEvent) -> None:
        await conn.execute(
            self._insert_snapshot_sql,
            snapshot.originator_id,
            snapshot.originator_version,
            snapshot.topic,
            snapshot.state,
        )

    async def latest_snapshot(
        self, conn: Queryable, originator_id: UUID, *, lte: int | None = None
    ) -> StoredEvent | None:
        sql, args = self._stream_query(self._select_snapshot_sql, originator_id, lte=lte, desc=True, limit=1)
        row = await conn.fetchrow(sql, *args)
        return None if row is None else StoredEvent(originator_id, row[1], row[2], row[3])

    async def select_notifications(
        self,
        conn: Queryable,
        start: int,
        limit: int,
        *,
        stop: int | None = None,
        topics: Sequence[str] = (),
        exclude_topics: Sequence[str] = (),
        inclusive_of_start: bool = True,
    ) -> list[Notification]:
        """Events in notification order from ``start``, at most ``limit``; same semantics as eventsourcing's, plus
        ``exclude_topics``."""
        rows = await self._notification_rows(conn, start, limit, stop, topics, exclude_topics, inclusive_of_start)
        # asyncpg's own UUID subclass would leak into domain events: convert to the standard type.
        return [
            Notification(
                id=row[0], originator_id=UUID(bytes=row[1].bytes), originator_version=row[2], topic=row[3], state=row[4]
            )
            for row in rows
        ]

    async def select_event_rows(
        self,
        conn: Queryable,
        start: int,
        limit: int,
        *,
        stop: int | None = None,
        topics: Sequence[str] = (),
        exclude_topics: Sequence[str] = (),
    ) -> list[EventRow]:
        """``select_notifications``, as ``EventRow``s: for readers that go through many events (projection runners,
        rebuilds), most of which they decode only in part."""
        rows = await self._notification_rows(conn, start, limit, stop, topics, exclude_topics)
        return [EventRow(*row) for row in rows]

    async def _notification_rows(
        self,
        conn: Queryable,
        start: int,
        limit: int,
        stop: int | None,
        topics: Sequence[str],
        exclude_topics: Sequence[str],
        inclusive_of_start: bool = True,
    ) -> list[asyncpg.Record]:
        sql = self._select_notifications_sql + (">= $1" if inclusive_of_start else "> $1")
        args: list[object] = [start]
        if stop is not None:
            args.append(stop)
            sql += f" AND notification_id <= ${len(args)}"
        if topics:
            args.append(list(topics))
            sql += f" AND topic = ANY(${len(args)}::text[])"
        if exclude_topics:
            args.append(list(exclude_topics))
            sql += f" AND topic <> ALL(${len(args)}::text[])"
        args.append(limit)
        sql += f" ORDER BY notification_id LIMIT ${len(args)}"
        return await conn.fetch(sql, *args)

    async def max_notification_id(self, conn: Queryable) -> int:
        """The highest notification ID recorded, 0 when there is none."""
        return int(await conn.fetchval(self._max_notification_id_sql))

    @staticmethod
    def _stream_query(
        base: str,
        originator_id: UUID,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> tuple[str, list[object]]:
        # Conditions are added only when used (rather than "$2 IS NULL OR ..."), so every variant gets a plan that
        # walks the primary key range.
        sql = base
        args: list[object] = [originator_id]
        if gt is not None:
            args.append(gt)
            sql += f" AND originator_version > ${len(args)}"
        if lte is not None:
            args.append(lte)
            sql += f" AND originator_version <= ${len(args)}"
        sql += " ORDER BY originator_version DESC" if desc else " ORDER BY originator_version"
        if limit is not None:
            args.append(limit)
            sql += f" LIMIT ${len(args)}"
        return sql, args


class EventStoreListener:
    """LISTENs on the event store's channel over one dedicated connection, so pollers can wake up early.

    A NOTIFY is only a hint: pollers still poll (``wait`` times out) and must re-read the table. After the connection
    drops, the next ``wait`` reconnects and returns True at once, since notifications may have been missed meanwhile.
    A first connection that fails is a connection lost from the start: entering still succeeds, and ``wait`` keeps
    trying, so a poller that starts while PostgreSQL refuses it polls meanwhile and is woken once it is back.

    The connection must not go through a transaction-pooling pgbouncer (LISTEN is session state).
    """

    def __init__(
        self,
        dsn: str,
        *,
        channel: str = "scaivault_events",
        reconnect_delay_seconds: float = 1.0,
        connect_timeout_seconds: float = 10.0,
        keep_payloads: bool = False,
    ) -> None:
        """``keep_payloads``: collect the payloads of the notifications received (``take_payloads``), for channels
        whose payload names what changed (at most ``MAX_KEPT_PAYLOADS`` distinct ones between two takes)."""
        _identifier(channel)
        self._dsn = dsn
        self.channel = channel
        self._reconnect_delay = reconnect_delay_seconds
        self._connect_timeout = connect_timeout_seconds
        self._conn: asyncpg.Connection | None = None
        self._notified = asyncio.Event()
        self._payloads: set[str] | None = set() if keep_payloads else None

    async def __aenter__(self) -> Self:
        await self._try_connect(self._connect_timeout)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await conn.close(timeout=5)

    @property
    def backend_pid(self) -> int | None:
        """The PostgreSQL backend PID of the listening connection (None while disconnected)."""
        return None if self._conn is None or self._conn.is_closed() else self._conn.get_server_pid()

    async def wait(self, timeout: float) -> bool:
        """Wait until a NOTIFY arrives (True) or ``timeout`` seconds pass (False)."""
        if self._conn is None or self._conn.is_closed():
            return await self._reconnect(timeout)
        if not self._notified.is_set():
            try:
                await asyncio.wait_for(self._notified.wait(), timeout)
            except TimeoutError:
                return False
        self._notified.clear()
        return True

    async def _connect(self) -> None:
        conn = await asyncpg.connect(
            self._dsn, server_settings={"application_name": application_name("scaivault-listener")}
        )
        try:
            await conn.add_listener(self.channel, self._on_notify)
        except BaseException:
            await conn.close()
            raise
        conn.add_termination_listener(self._on_termination)
        self._conn = conn

    async def _try_connect(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connect(), timeout)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as e:
            # The type only: a connection error's message can quote connection details.
            log.warning(
                "event store listener cannot connect", extra={"channel": self.channel, "error": type(e).__name__}
            )
            return False
        return True

    async def _reconnect(self, timeout: float) -> bool:
        if not await self._try_connect(timeout):
            # Don't hammer the server: a poller calling wait() in a loop still polls once per delay.
            await asyncio.sleep(min(timeout, self._reconnect_delay))
            return False
        self._notified.clear()
        return True

    def take_payloads(self) -> set[str]:
        """The payloads received since the last take (``keep_payloads``). A hint like the wake-up itself: payloads
        sent while the connection was down are not there."""
        if self._payloads is None:
            return set()
        taken, self._payloads = self._payloads, set()
        return taken

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if self._payloads is not None and len(self._payloads) < MAX_KEPT_PAYLOADS:
            self._payloads.add(payload)
        self._notified.set()

    def _on_termination(self, conn: object) -> None:
        # The next wait() reconnects; wake a wait() in progress so that happens now.
        self._notified.set()
