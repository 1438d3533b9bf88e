"""One command = one transaction.

A command loads aggregates, calls their methods, and the unit of work then, in one PostgreSQL transaction:
updates the inline read models from the new events, inserts the request's access record, and appends the events
last, in the same message as the ``COMMIT``: appending takes the event-store table lock, and holding it for the
append and the commit's flush only, never across a round trip through a busy event loop, keeps writers flowing
(docs/adr/0017).
Commands on the same stream queue on an advisory lock taken when the aggregate is loaded. Should a writer still
take the same stream version first, the append (or an inline read model key) fails; the whole command then runs
again on fresh state, a few times, before the caller sees ``version_conflict``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeVar
from uuid import UUID

import asyncpg
from eventsourcing.domain import Aggregate, DomainEventProtocol

from scaivault.audit.access_records import AccessRecord, touch_last_access
from scaivault.clock import utcnow
from scaivault.domain.errors import VersionConflict
from scaivault.domain.outcomes import Outcome
from scaivault.eventstore.locks import READ_MODEL_SWAP_KEY, SHARED_READ_MODEL_LOCK
from scaivault.eventstore.recorder import EventStoreConflict
from scaivault.eventstore.repository import Repository

T = TypeVar("T")
Projector = Callable[[asyncpg.Connection, Any], Awaitable[None]]
MAX_ATTEMPTS = 8


def record_outcome(access: AccessRecord | None, outcome: Outcome, **extra: Any) -> None:
    """What the command did, for its request's access record (committed with the command): the outcome, which the
    record's edge turns into its status, and the ids it made; nothing without a record (CLI, background work)."""
    if access is not None:
        access.outcome = outcome
        access.extra.update(extra)


class UnitOfWork:
    def __init__(self, conn: asyncpg.Connection, repository: Repository, projectors: Sequence[Projector]) -> None:
        self.conn = conn
        self._repository = repository
        self._projectors = projectors
        self.aggregates: list[Aggregate] = []
        # The access records of the requests this transaction answers: one, or several for a batch of requests
        # committed together (certificate issuance), each committed with its outcome.
        self.accesses: list[AccessRecord] = []
        self._holds_read_model_lock = False

    @property
    def access(self) -> AccessRecord | None:
        return self.accesses[0] if self.accesses else None

    @access.setter
    def access(self, record: AccessRecord | None) -> None:
        self.accesses = [] if record is None else [record]

    async def get(self, stream_id: UUID) -> Any:
        """Load an aggregate, first queueing behind any other command on the same stream (until commit), so
        concurrent writers to one secret take turns instead of failing on each other."""
        await self.lock(str(stream_id))
        return await self._repository.get(self.conn, stream_id)

    async def lock(self, name: str) -> None:
        """Queue behind any other command holding the lock ``name``, and hold it until this one commits or rolls
        back. A stream's lock is its id (``get``); a check over many streams that two commands must not both pass,
        such as counting against a quota, names what it counts (``quota:webhooks:<tenant>``) and reads the inline
        read models after taking it: a statement then sees what the previous holder committed."""
        if self._holds_read_model_lock:
            await self.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))", name)
        else:  # the first lock also joins the inline read-model writers (see scaivault/eventstore/locks.py)
            await self.conn.execute(
                "SELECT pg_advisory_xact_lock_shared($1), pg_advisory_xact_lock(hashtextextended($2::text, 0))",
                READ_MODEL_SWAP_KEY,
                name,
            )
            self._holds_read_model_lock = True

    async def lock_shared(self, name: str) -> None:
        """Hold ``name`` shared until commit: many holders at once, none while a ``lock(name)`` holder runs. What
        must not change under a command without being one of its aggregates (the CA a certificate is issued
        under, which a revocation locks exclusively) is guarded so."""
        if not self._holds_read_model_lock:
            await self.conn.execute(SHARED_READ_MODEL_LOCK, READ_MODEL_SWAP_KEY)
            self._holds_read_model_lock = True
        await self.conn.execute("SELECT pg_advisory_xact_lock_shared(hashtextextended($1::text, 0))", name)

    def add(self, *aggregates: Aggregate) -> None:
        for aggregate in aggregates:
            if all(aggregate is not known for known in self.aggregates):
                self.aggregates.append(aggregate)

    async def commit(self) -> list[Any]:
        """Update the inline read models, then append the events (and the access record) and commit, the append and
        the ``COMMIT`` in one message. Returns the events appended."""
        events: list[DomainEventProtocol[UUID]] = [
            e for aggregate in self.aggregates for e in aggregate.collect_events()
        ]
        if not self._holds_read_model_lock and (events or self.accesses):
            await self.conn.execute(SHARED_READ_MODEL_LOCK, READ_MODEL_SWAP_KEY)
            self._holds_read_model_lock = True
        for domain_event in events:
            for project in self._projectors:
                await project(self.conn, domain_event)
        if self.accesses:
            access_events = []
            for access in self.accesses:
                # Committing means the request succeeds: record it as the success it is about to be.
                access.settle(Outcome.OK)
                access.duration_ms = int((utcnow() - access.recorded_at).total_seconds() * 1000)
                access_events.append(access.event())
            await touch_last_access(self.conn, [(e.timestamp, e.accessed_streams) for e in access_events])
            events = [*events, *access_events]
        await self._repository.save_and_commit(self.conn, events, self.aggregates)
        return events


class UnitOfWorkRunner:
    def __init__(
        self,
        pool: asyncpg.Pool,
        repository: Repository,
        projectors: Sequence[Projector],
        *,
        conflict_keys: frozenset[str] = frozenset(),
        timed: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext,
    ) -> None:
        """``conflict_keys``: unique keys of the inline read models that a concurrent writer of the same stream can
        hit before the event store does (the same conflict, so the command is retried). ``timed``: what measures
        each attempt's transaction, from taking a connection to the commit (a stage of the request's latency)."""
        self.pool = pool
        self.repository = repository
        self.projectors = projectors
        self._conflict_keys = conflict_keys
        self._timed = timed

    async def run(
        self, work: Callable[[UnitOfWork], Awaitable[T]], *, access: AccessRecord | None = None,
        accesses: Sequence[AccessRecord] = (),
    ) -> T:
        """Run ``work`` in a transaction and commit what it did; retry it from scratch on a concurrent write.
        ``accesses``: the records of several requests answered by this one transaction (instead of ``access``)."""
        records = list(accesses) if accesses else ([] if access is None else [access])
        for attempt in range(MAX_ATTEMPTS):
            try:
                with self._timed():
                    result, uow = await self._attempt(work, records)
                self.repository.committed(uow.aggregates)
                for record in uow.accesses:  # the work may have left some requests out of its batch
                    record.persisted = True
                return result
            except (EventStoreConflict, asyncpg.UniqueViolationError) as exc:
                # An inline read model can notice the concurrent writer first (same version row): same conflict.
                if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name not in self._conflict_keys:
                    raise
                await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))
        raise VersionConflict("The secret kept changing concurrently; re-read it and retry")

    async def _attempt(
        self, work: Callable[[UnitOfWork], Awaitable[T]], records: list[AccessRecord]
    ) -> tuple[T, UnitOfWork]:
        async with self.pool.acquire() as conn:
            # Begun here and committed by the append's own message (``UnitOfWork.commit``): the event store's table
            # lock is then never held across a round trip through this event loop. A failure before that leaves
            # the transaction open: roll it back (the pool would, on release, anyway).
            await conn.execute("BEGIN")
            try:
                uow = UnitOfWork(conn, self.repository, self.projectors)
                uow.accesses = list(records)
                result = await work(uow)
                await uow.commit()
            except BaseException:
                if conn.is_in_transaction():
                    await conn.execute("ROLLBACK")
                raise
        return result, uow
