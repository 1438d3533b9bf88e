"""Where the fan-out projection hands each batch of new public events: one sink per kind of receiver (webhooks,
subscriptions), called in the projection's tracking transaction, so what a sink writes (outbox rows, queue entries)
commits exactly once with the position that produced it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg


@dataclass(frozen=True)
class FeedEntry:
    """One public event as stored in ``scaivault_event_feed``. ``envelope`` is exactly what receivers get
    (spec reference/webhook-events); ``secret_type`` and ``tags`` are facets for filters, not delivered.
    ``routed_to``: enabled webhooks of the tenant that receive it whatever their ``events`` and ``filters`` (those
    the governing rotation policy names in ``webhook_ids``, for rotation events). ``notification_id``: the log
    position of the domain event it comes from (``since_creation``)."""

    position: int
    event_id: str
    event_type: str
    tenant_id: str | None
    partner_id: str | None
    path: str | None
    secret_type: str | None
    tags: tuple[str, ...]
    envelope: dict[str, Any]
    recorded_at: datetime
    routed_to: tuple[str, ...] = ()
    notification_id: int = field(kw_only=True)

    @property
    def ordering_key(self) -> str:
        """Deliveries of one target with the same key go out in feed order: one path's events; an event without
        a path has no order to keep (its key is its own id)."""
        return self.path if self.path is not None else self.event_id


class FanOutSink(Protocol):
    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        """Record what each entry means for this sink's receivers (inside the caller's transaction; no I/O
        other than ``conn``). Entries are in feed order."""


# A receiver (webhook, subscription) gets the events committed from its creation on, never older ones that a lagging
# fan-out reaches after it (docs/subscriptions.md, "Which events"). The log is in commit order (the event store's
# append lock), so that is the events at or after its first event in the log. Both sinks select this with each
# receiver (``created_position``) and ask ``since_creation``.
def created_position(stream_id: str) -> str:
    """SQL: the log position of the first event of the stream whose id is the expression ``stream_id``."""
    return f"""(SELECT e.notification_id FROM scaivault_events e WHERE e.originator_id = {stream_id}
                ORDER BY e.originator_version LIMIT 1)"""


def since_creation(entry: FeedEntry, created_at_position: int | None) -> bool:
    """Whether a receiver created at log position ``created_at_position`` gets ``entry`` (None: a receiver whose
    creation the log does not hold, as in tests that write read-model rows directly, gets everything)."""
    return created_at_position is None or entry.notification_id >= created_at_position
