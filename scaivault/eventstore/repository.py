"""Load and save event-sourced aggregates through ``PostgresEventStore``, with periodic snapshots."""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from itertools import chain
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import Aggregate, AggregateEvent, DomainEventProtocol, Snapshot
from eventsourcing.persistence import Mapper, StoredEvent

from scaivault.database import Connection, Queryable
from scaivault.eventstore.recorder import PostgresEventStore


class Repository:
    """Aggregates are rebuilt like eventsourcing's ``Repository.get``: latest snapshot, then the later events.

    With ``snapshot_interval`` N, ``save`` snapshots an aggregate whenever its version crosses a multiple of N, at the
    version it then has (the only state at hand); so ``get`` reads fewer than N + B events after a snapshot, B being
    the most events one save adds, and fewer than N when saves end on multiples of N.
    """

    def __init__(
        self,
        store: PostgresEventStore,
        mapper: Mapper[UUID],
        *,
        snapshot_interval: int = 100,
        cache_size: int = 10_000,
    ) -> None:
        if snapshot_interval < 1:
            msg = "snapshot_interval must be >= 1"
            raise ValueError(msg)
        self.store = store
        self.mapper = mapper
        self.snapshot_interval = snapshot_interval
        self._cache: OrderedDict[UUID, Aggregate] = OrderedDict()
        self._cache_size = cache_size

    async def get(self, conn: Queryable, originator_id: UUID, *, version: int | None = None) -> Aggregate | None:
        """The aggregate at ``version`` (default: latest), or None if the stream has no events up to there.

        The latest state starts from this process's cache of committed aggregates when it can: only the events
        committed since (by other processes) are read, usually none. The cache holds what was committed, so a
        command that fails half-way leaves it untouched; callers get a copy they may mutate."""
        cached = self._cache.get(originator_id) if version is None else None
        if cached is not None:
            self._cache.move_to_end(originator_id)
            newer = await self.store.read_stream(conn, originator_id, gt=cached.version)
            return _replay(copy.deepcopy(cached), map(self.mapper.to_domain_event, newer))
        stored_snapshot = await self.store.latest_snapshot(conn, originator_id, lte=version)
        snapshots = [] if stored_snapshot is None else [self.mapper.to_domain_event(stored_snapshot)]
        gt = None if stored_snapshot is None else stored_snapshot.originator_version
        stored_events = await self.store.read_stream(conn, originator_id, gt=gt, lte=version)
        return _replay(None, chain(snapshots, map(self.mapper.to_domain_event, stored_events)))

    def committed(self, aggregates: Sequence[Aggregate]) -> None:
        """Remember aggregates whose events were just committed (call only after the commit succeeded)."""
        for aggregate in aggregates:
            self._cache[aggregate.id] = aggregate
            self._cache.move_to_end(aggregate.id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def save_and_commit(
        self, conn: Connection, events: Sequence[DomainEventProtocol[UUID]], aggregates: Sequence[Aggregate] = ()
    ) -> None:
        """``save``, then commit the caller's transaction in the same message as the append (the table lock is
        held for the shortest time). Raises ``EventStoreConflict`` with the transaction left to roll back."""
        stored_events = await self._snapshot_and_map(conn, events, aggregates)
        await self.store.append_and_commit(conn, stored_events)

    async def _snapshot_and_map(
        self, conn: Connection, events: Sequence[DomainEventProtocol[UUID]], aggregates: Sequence[Aggregate]
    ) -> list[StoredEvent]:
        stored_events = [self.mapper.to_stored_event(e) for e in events]
        # Snapshots first: the event insert takes the table lock, held until commit, so it comes last. A conflict
        # aborts the transaction and the snapshot with it.
        for aggregate in self._due_for_snapshot(events, aggregates):
            snapshot_class = getattr(type(aggregate), "Snapshot", Snapshot)
            snapshot = self.mapper.to_stored_event(snapshot_class.take(aggregate))
            await self.store.write_snapshot(conn, snapshot)
        return stored_events

    async def save(
        self, conn: Connection, events: Sequence[DomainEventProtocol[UUID]], aggregates: Sequence[Aggregate] = ()
    ) -> list[int]:
        """Record ``events`` in the caller's transaction; return their notification IDs.

        ``aggregates`` are those the events came from, already mutated by them; the ones that crossed a snapshot
        interval are snapshotted. Raises ``EventStoreConflict`` when another writer took one of the versions.
        """
        stored_events = [self.mapper.to_stored_event(e) for e in events]
        # Snapshots first: the event insert takes the table lock, held until commit, so it comes last. A conflict
        # aborts the transaction and the snapshot with it.
        for aggregate in self._due_for_snapshot(events, aggregates):
            snapshot_class = getattr(type(aggregate), "Snapshot", Snapshot)
            snapshot = self.mapper.to_stored_event(snapshot_class.take(aggregate))
            await self.store.write_snapshot(conn, snapshot)
        return await self.store.append(conn, stored_events)

    async def history(self, conn: Queryable, originator_id: UUID) -> list[AggregateEvent]:
        """All events of a stream, oldest first."""
        stored_events = await self.store.read_stream(conn, originator_id)
        return [cast("AggregateEvent", self.mapper.to_domain_event(e)) for e in stored_events]

    def _due_for_snapshot(
        self, events: Sequence[DomainEventProtocol[UUID]], aggregates: Sequence[Aggregate]
    ) -> list[Aggregate]:
        if not aggregates:
            return []
        versions: dict[UUID, tuple[int, int]] = {}
        for e in events:
            low, high = versions.get(e.originator_id, (e.originator_version, e.originator_version))
            versions[e.originator_id] = (min(low, e.originator_version), max(high, e.originator_version))
        due = []
        interval = self.snapshot_interval
        for aggregate in aggregates:
            if aggregate.id not in versions:
                continue
            low, high = versions[aggregate.id]
            if aggregate.version != high:
                msg = f"Aggregate {aggregate.id} is at version {aggregate.version}, its last event at {high}"
                raise ValueError(msg)
            if (low - 1) // interval < high // interval:
                due.append(aggregate)
        return due


def _replay(aggregate: Any, events: Iterable[Any]) -> Any:
    """eventsourcing's ``project_aggregate`` without its per-event runtime Protocol check, which costs more than
    the mutations themselves (docs/adr/0010)."""
    for domain_event in events:
        aggregate = domain_event.mutate(aggregate)
    return aggregate
