"""Access records as events: every request leaves one, allowed or denied, in the event store's global order, so the
audit log is a projection like any other read model (rebuildable, tracked, exactly once)."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic

_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/access")


def access_stream_id(request_id: str) -> UUID:
    """One single-event stream per request: recording the same request twice is a conflict, never a duplicate."""
    return uuid5(_NAMESPACE, request_id)


class AccessRecorded(DomainEvent):
    request_id: str
    method: str
    route: str
    action: str
    partner_id: str | None
    tenant_id: str | None
    identity_id: str | None
    identity_type: str | None
    secret_path: str | None
    status: int
    success: bool
    error_code: str | None
    source_ip: str | None
    user_agent: str | None
    duration_ms: int
    extra: dict[str, Any]
    # The secret streams whose values this request read (their last_accessed_at follows from it).
    accessed_streams: list[UUID]

    @classmethod
    def of(cls, **fields: Any) -> AccessRecorded:
        timestamp: datetime = fields.pop("timestamp")
        return cls(
            originator_id=access_stream_id(fields["request_id"]),
            originator_version=1,
            timestamp=timestamp,
            **fields,
        )


ACCESS_TOPIC = get_topic(AccessRecorded)
