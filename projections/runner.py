"""Catch-up projections: follow the event store's global order and apply each event exactly once.

Each projection applies a batch of events and records its position (eventsourcing's single-row tracking table) in
one transaction, so a crash anywhere replays from the last committed position and nothing is applied twice.
NOTIFY only wakes the runner early; polling is the truth. Several server processes may run the same projections:
a session-level advisory lock per projection lets one process at a time run it, and when that process dies its
lock goes with its connection and another takes over. A projection that fails on an event stops there, reports the
event and the error, and retries (with back-off) until a fix lets it through; it never skips an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, cast

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent

from scaivault.database import Queryable, connect
from scaivault.eventstore.locks import SHARED_READ_MODEL_LOCK, advisory_key
from scaivault.eventstore.recorder import WAKEUP_COVERS_SECONDS, EventRow, EventStoreListener, PostgresEventStore
from scaivault.tasks import cancel_and_wait

log = logging.getLogger(__name__)

TRACKING_TABLE = "scaivault_tracking"
# A runner keeps polling at its gather interval for this long after it last found events: appenders woke it less
# than WAKEUP_COVERS_SECONDS before they skip a NOTIFY (the group commit of access records does).
HOT_SECONDS = 2 * WAKEUP_COVERS_SECONDS
MIN_GATHER_SECONDS = 0.01
# While events flow, a runner takes them in batches this far apart. Every batch is a few round trips and a commit
# (a WAL flush the group commit of access records then waits behind), for each projection: fewer, larger batches
# leave audited reads faster (docs/adr/0004). The audit log is therefore up to about a second behind under load; a
# lone event is still applied as soon as its NOTIFY arrives.
GATHER_SECONDS = 1.0
# How far past its position (in batches) a runner looks for events it consumes in one go: topics it skips are
# filtered out by PostgreSQL, and a long run of them must not become one huge scan.
SCAN_WINDOW = 20


class Projection(ABC):
    """A read model built from events by a catch-up runner."""

    name: ClassVar[str]
    # Topics the projection consumes (or AllTopicsExcept those it skips); any other event only moves its position
    # on, and is not even read.
    topics: ClassVar[frozenset[str]]
    # The tables it owns, which a rebuild recreates beside the live ones and swaps in.
    tables: ClassVar[tuple[str, ...]]
    # Secondary indexes, as (table, indexed columns as the migration lists them), that a rebuild builds only once
    # the bulk of the replay is in. For indexes whose keys arrive in random order: maintained row by row they cost
    # PostgreSQL several times what one sorted build does. Indexes that grow at their right edge are cheap to
    # maintain, and a rebuild waits for every deferred build, so only those worth it belong here.
    indexes_built_after_replay: ClassVar[frozenset[tuple[str, str]]] = frozenset()
    # How long events may gather between batches while they flow; None: the runner's (GATHER_SECONDS). A projection
    # whose readers wait on it (webhook deliveries) takes smaller batches sooner.
    gather_seconds: ClassVar[float | None] = None

    @abstractmethod
    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Apply (notification id, decoded event) pairs, in order, inside the caller's transaction."""

    def page_preparer(self) -> Callable[[asyncpg.Connection, list[tuple[int, Any]]], Awaitable[Any]] | None:
        """For a rebuild into an empty copy: a fresh function that a rebuild calls on each decoded page, in log
        order, on its reading connection, while earlier pages are still being written; ``apply`` then takes what
        it returns. For work that needs nothing from the copy's tables. None (the default): pages go to ``apply``
        as decoded."""
        return None

    def decode(self, mapper: Mapper[Any], stored: StoredEvent) -> Any:
        """An event of one of ``topics`` as ``apply`` takes it: the domain event, unless the projection needs only
        a few fields of a frequent event and reads them more cheaply (a rebuild decodes millions)."""
        return mapper.to_domain_event(stored)


async def tracked_position(conn: Queryable, name: str) -> int:
    position = await conn.fetchval(f"SELECT notification_id FROM {TRACKING_TABLE} WHERE application_name = $1", name)
    return int(position or 0)


async def record_position(conn: asyncpg.Connection, name: str, position: int) -> None:
    """Move the position forward, never back (eventsourcing 9.5's single-row tracking upsert)."""
    moved = await conn.fetchval(
        f"""INSERT INTO {TRACKING_TABLE} (application_name, notification_id) VALUES ($1, $2)
            ON CONFLICT (application_name) DO UPDATE SET notification_id = excluded.notification_id
            WHERE {TRACKING_TABLE}.notification_id < excluded.notification_id
            RETURNING notification_id""",
        name,
        position,
    )
    if moved is None:
        raise RuntimeError(f"projection {name}: position {position} is not ahead of the recorded one")


def runner_key(name: str) -> int:
    """Held (session-level) by the one process running the projection."""
    return advisory_key(f"projection-runner:{name}")


def swap_key(name: str) -> int:
    """Held shared by each batch transaction, exclusively by a rebuild swapping the projection's tables."""
    return advisory_key(f"projection-swap:{name}")


class AllTopicsExcept(frozenset[str]):
    """``Projection.topics`` for a projection that consumes every topic but the ones given: ``in`` answers for
    the topics consumed, iterating gives the ones left out (which the runner asks PostgreSQL not to send)."""

    def __contains__(self, topic: object) -> bool:
        return not frozenset.__contains__(self, topic)


@dataclass
class _Batch:
    events: list[EventRow]  # of the topics the projection consumes
    upto: int  # the position applying them reaches
    more: bool = False  # whether more events are known to follow


@dataclass
class ProjectionState:
    name: str
    state: str = "standby"  # standby (another process runs it) | running | failed
    position: int = 0
    failed_notification_id: int | None = None
    error: str | None = None
    failures: int = 0  # consecutive failed attempts, for the back-off
    retry_at: float | None = field(default=None, repr=False)


class Wakeup:
    """Fans one LISTEN connection's wake-ups out to every projection worker."""

    def __init__(self) -> None:
        self._events: set[asyncio.Event] = set()

    def subscribe(self) -> asyncio.Event:
        event = asyncio.Event()
        self._events.add(event)
        return event

    def notify_all(self) -> None:
        for event in self._events:
            event.set()


class ProjectionRunner:
    def __init__(
        self,
        dsn: str,
        store: PostgresEventStore,
        mapper: Mapper[Any],
        projections: Sequence[Projection],
        *,
        batch_size: int = 500,
        poll_seconds: float = 1.0,
        gather_seconds: float = GATHER_SECONDS,
        max_backoff_seconds: float = 60.0,
        on_progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """``on_progress(name, position, head)`` is told where each projection this process runs stands."""
        self._dsn = dsn
        self._store = store
        self._mapper = mapper
        self.projections = {projection.name: projection for projection in projections}
        self._batch_size = batch_size
        self._poll = poll_seconds
        self._gather = gather_seconds
        self._max_backoff = max_backoff_seconds
        self.states = {name: ProjectionState(name) for name in self.projections}
        self._wakeup = Wakeup()
        self._on_progress = on_progress
        self._head = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._connections: set[asyncpg.Connection] = set()

    async def start(self) -> None:
        self._tasks.append(asyncio.create_task(self._listen(), name="projection-wakeups"))
        for projection in self.projections.values():
            self._tasks.append(asyncio.create_task(self._work(projection), name=f"projection-{projection.name}"))

    async def stop(self) -> None:
        if not await cancel_and_wait(self._tasks, timeout=5.0):
            for conn in self._connections:  # a worker stuck in a database call: end its session
                conn.terminate()
        self._tasks.clear()

    async def status(self, conn: Queryable) -> dict[str, dict[str, Any]]:
        """Position, head and lag of every projection, and the failure of any that stopped (from any process)."""
        head = await self._store.max_notification_id(conn)
        rows = await conn.fetch(
            f"""SELECT p.name, t.notification_id AS position, s.state, s.failed_notification_id, s.error
                FROM unnest($1::text[]) AS p(name)
                LEFT JOIN {TRACKING_TABLE} t ON t.application_name = p.name
                LEFT JOIN scaivault_projection_status s ON s.name = p.name""",
            list(self.projections),
        )
        report = {}
        for row in rows:
            position = int(row["position"] or 0)
            local = self.states[row["name"]]
            entry: dict[str, Any] = {
                "position": position,
                "head": head,
                "lag": max(head - position, 0),
                "state": row["state"] or "running",
                "this_process": local.state,
            }
            if row["state"] == "failed":
                entry["failed_notification_id"] = row["failed_notification_id"]
                entry["error"] = row["error"]
            report[row["name"]] = entry
        return report

    async def _listen(self) -> None:
        async with EventStoreListener(self._dsn, channel=self._store.channel) as listener:
            while True:
                if await listener.wait(self._poll):
                    self._wakeup.notify_all()

    async def _work(self, projection: Projection) -> None:
        """Hold the projection's lock (or wait for it), then catch up for ever; reconnect after any failure."""
        woken = self._wakeup.subscribe()
        state = self.states[projection.name]
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self._dsn)
                self._connections.add(conn)
                while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", runner_key(projection.name)):
                    state.state = "standby"
                    await self._sleep(woken, self._poll)
                state.state = "running"
                await self._catch_up_forever(conn, projection, state, woken)
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning(
                    "projection connection lost", extra={"projection": projection.name, "error": type(exc).__name__}
                )
                await asyncio.sleep(self._poll)
            finally:
                if conn is not None:
                    self._connections.discard(conn)
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)

    async def _catch_up_forever(
        self, conn: asyncpg.Connection, projection: Projection, state: ProjectionState, woken: asyncio.Event
    ) -> None:
        found_at = -HOT_SECONDS  # when events were last found
        while True:
            if state.retry_at is not None and time.monotonic() < state.retry_at:
                await self._sleep(woken, state.retry_at - time.monotonic())
                continue
            read = await self._apply_next_batch(conn, projection, state)
            if read:
                found_at = time.monotonic()
            if not read and time.monotonic() - found_at >= HOT_SECONDS:
                self._progress(state, await self._store.max_notification_id(conn))
                await self._sleep(woken, self._poll)
            elif read < self._batch_size:
                # Caught up, or nearly: let events gather for a moment, so a busy server's stream of small commits
                # (every request's access record) becomes one transaction per many events instead of one per
                # commit. Events were found lately, so keep polling like this (appenders then skip the NOTIFY).
                gather = self._gather if projection.gather_seconds is None else projection.gather_seconds
                await asyncio.sleep(gather or MIN_GATHER_SECONDS)

    async def _apply_next_batch(self, conn: asyncpg.Connection, projection: Projection, state: ProjectionState) -> int:
        """One transaction: the position as recorded (a rebuild may have swapped the read model and moved it),
        the events after it, their effect and the new position. Returns how far it moved (0: not at all; a
        failure counts as 1), at most the batch size."""
        try:
            async with conn.transaction():
                batch = await self._next_batch(conn, projection, state)
                if batch.upto <= state.position:
                    return 0
                if batch.events:
                    await projection.apply(conn, self._decode(projection, batch.events))
                await record_position(conn, projection.name, batch.upto)
        except (OSError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError):
            raise  # the connection is gone: reconnect, re-take the lock, resume from the committed position
        except Exception:  # noqa: BLE001 - whatever an event did wrong, the one at fault is found and reported
            await self._pinpoint_failure(conn, projection, state)
            return 1
        moved, state.position = batch.upto - state.position, batch.upto
        self._progress(state, max(self._head, state.position))
        if state.failed_notification_id is not None:
            await self._report(conn, state, failed=None, error=None)
        return self._batch_size if batch.more else min(moved, self._batch_size - 1)

    async def _next_batch(
        self, conn: asyncpg.Connection, projection: Projection, state: ProjectionState, limit: int | None = None
    ) -> _Batch:
        """The next events the projection consumes, and the position they take it to: past the last of them when
        the batch is full, else past everything committed so far (up to a window), read or filtered out."""
        # Shared with other appliers, exclusive for a rebuild's swap of this projection's tables.
        await conn.execute(SHARED_READ_MODEL_LOCK, swap_key(projection.name))
        state.position = await tracked_position(conn, projection.name)
        limit = limit or self._batch_size
        # Everything up to the head is final: notification ids are handed out under the event store's table lock,
        # in commit order, so no transaction still open can commit an id at or below it.
        head = await self._store.max_notification_id(conn)
        stop = min(head, state.position + SCAN_WINDOW * limit)
        if stop <= state.position:
            return _Batch([], state.position)
        topics = projection.topics
        events = await self._store.select_event_rows(
            conn, state.position + 1, limit, stop=stop,
            **({"exclude_topics": list(topics)} if isinstance(topics, AllTopicsExcept) else {"topics": list(topics)}),
        )
        if len(events) == limit:
            return _Batch(events, events[-1].id, more=True)
        return _Batch(events, stop, more=stop < head)

    async def _pinpoint_failure(self, conn: asyncpg.Connection, projection: Projection, state: ProjectionState) -> None:
        """Apply the batch one event at a time, committing each, to find and report the one that fails."""
        for _ in range(self._batch_size):
            batch = _Batch([], state.position)
            try:
                async with conn.transaction():
                    batch = await self._next_batch(conn, projection, state, limit=1)
                    if batch.upto <= state.position:
                        return
                    if batch.events:
                        await projection.apply(conn, self._decode(projection, batch.events))
                    await record_position(conn, projection.name, batch.upto)
            except (OSError, asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError):
                raise
            except Exception as exc:  # noqa: BLE001 - any failure of an event stops the projection there, reported
                failed_id = batch.events[0].id if batch.events else state.position + 1
                error = f"{type(exc).__name__}: {str(exc)[:500]}"
                log.error(
                    "projection stopped on an event",
                    extra={"projection": projection.name, "notification_id": failed_id, "error": error},
                )
                state.failures += 1
                state.retry_at = time.monotonic() + min(self._max_backoff, self._poll * 2 ** min(state.failures, 16))
                await self._report(conn, state, failed=failed_id, error=error)
                return
            state.position = batch.upto

    async def _report(
        self, conn: asyncpg.Connection, state: ProjectionState, *, failed: int | None, error: str | None
    ) -> None:
        state.failed_notification_id, state.error = failed, error
        state.state = "failed" if failed is not None else "running"
        if failed is None:
            state.retry_at, state.failures = None, 0
        await conn.execute(
            """INSERT INTO scaivault_projection_status (name, state, failed_notification_id, error, updated_at)
               VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (name) DO UPDATE SET state = excluded.state,
                   failed_notification_id = excluded.failed_notification_id, error = excluded.error,
                   updated_at = now()""",
            state.name,
            state.state,
            failed,
            error,
        )

    def _progress(self, state: ProjectionState, head: int) -> None:
        self._head = max(self._head, head)
        if self._on_progress is not None:
            self._on_progress(state.name, state.position, self._head)

    def _decode(self, projection: Projection, batch: list[EventRow]) -> list[tuple[int, Any]]:
        """The batch holds only topics the projection consumes (``_next_batch`` has PostgreSQL filter the rest)."""
        decode, mapper = projection.decode, self._mapper
        # An EventRow reads like a StoredEvent (the mapper reads the same four attributes): it is decoded as it is.
        return [(n.id, decode(mapper, cast(StoredEvent, n))) for n in batch]

    @staticmethod
    async def _sleep(woken: asyncio.Event, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(woken.wait(), timeout=max(seconds, 0))
        woken.clear()
