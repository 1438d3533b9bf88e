"""Load and save event-sourced aggregates through ``PostgresEventStore``, with periodic snapshots."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any, cast
from uuid import UUID

from eventsourcing.application import project_aggregate
from eventsourcing.domain import Aggregate, DomainEvent, Snapshot
from eventsourcing.persistence import Mapper

from scaivault.eventstore.recorder import Connection, PostgresEventStore, Queryable


class Repository:
    """Aggregates are rebuilt like eventsourcing's ``Repository.get``: latest snapshot, then the later events.

    With ``snapshot_interval`` N, ``save`` snapshots an aggregate whenever its version crosses a multiple of N, at the
    version it then has (the only state at hand); so ``get`` reads fewer than N + B events after a snapshot, B being
    the most events one save adds, and fewer than N when saves end on multiples of N.
    """

    def __init__(self, store: PostgresEventStore, mapper: Mapper[UUID], *, snapshot_interval: int = 100) -> None:
        if snapshot_interval < 1:
            msg = "snapshot_interval must be >= 1"
            raise ValueError(msg)
        self.store = store
        self.mapper = mapper
        self.snapshot_interval = snapshot_interval

    async def get(self, conn: Queryable, originator_id: UUID, *, version: int | None = None) -> Aggregate | None:
        """The aggregate at ``version`` (default: latest), or None if the stream has no events up to there."""
        stored_snapshot = await self.store.latest_snapshot(conn, originator_id, lte=version)
        snapshots = [] if stored_snapshot is None else [self.mapper.to_domain_event(stored_snapshot)]
        gt = None if stored_snapshot is None else stored_snapshot.originator_version
        stored_events = await self.store.read_stream(conn, originator_id, gt=gt, lte=version)
        events = map(self.mapper.to_domain_event, stored_events)
        aggregate: Any = project_aggregate(None, chain(snapshots, events))
        return aggregate

    async def save(
        self, conn: Connection, events: Sequence[DomainEvent], aggregates: Sequence[Aggregate] = ()
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

    async def history(self, conn: Queryable, originator_id: UUID) -> list[DomainEvent]:
        """All events of a stream, oldest first."""
        stored_events = await self.store.read_stream(conn, originator_id)
        return [cast("DomainEvent", self.mapper.to_domain_event(e)) for e in stored_events]

    def _due_for_snapshot(self, events: Sequence[DomainEvent], aggregates: Sequence[Aggregate]) -> list[Aggregate]:
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
