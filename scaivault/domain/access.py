"""Access records as events: every request leaves one, allowed or denied, in the event store's global order, so the
audit log is a projection like any other read model (rebuildable, tracked, exactly once)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import DomainEvent
from eventsourcing.utils import get_topic

_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/access")


# A request id as scaivault/ids.py makes them: "req_" and a ULID (48 bits of milliseconds, 80 random bits) in
# Crockford's base32, whose first digit is at most 7 (26 digits hold 130 bits).
_is_ulid_request_id = re.compile(r"req_[0-7][0-9a-hjkmnp-tv-z]{25}").fullmatch
_CROCKFORD_AS_BASE32 = bytes.maketrans(b"abcdefghjkmnpqrstvwxyz", b"abcdefghijklmnopqrstuv")  # for int(..., 32)
# UUIDv7's version (0111) and RFC 4122 variant (10) bits, and the bits they replace.
_V7_BITS = 0x7 << 76 | 0x2 << 62
_V7_MASK = ~(0xF << 76 | 0x3 << 62) & (2**128 - 1)


def access_stream_id(request_id: str) -> UUID:
    """One single-event stream per request: recording the same request twice is a conflict, never a duplicate.

    For our request ids the stream id is the ULID's own bits in UUIDv7's layout (the version and variant take 6 of
    its 80 random bits), so it is in time order. Every request appends one of these streams, and the event store's
    primary key then grows at its right edge: a hashed id (uuid5) sent each append to a random leaf page, which
    cost PostgreSQL more CPU and WAL per append, and on a log of hundreds of millions of access events a page read
    per request. A request id of another form (tests, tools) gets a uuid5. Events already stored keep the uuid5 ids
    they were stored with: a stream id is read from the log, never derived again from its request id."""
    if _is_ulid_request_id(request_id):
        return UUID(int=int(request_id[4:].encode().translate(_CROCKFORD_AS_BASE32), 32) & _V7_MASK | _V7_BITS)
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
