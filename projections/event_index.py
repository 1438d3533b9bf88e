"""An index of every event in the log, for operators (``scaivault events list``): stream, topic, tenant, partner,
actor, request id and time per notification id, so the log can be filtered by tenant, type and time without
decoding every event. The events themselves stay in ``scaivault_events``; the index holds no event data.

Where tenant and partner come from: the event's own ``tenant_id``/``partner_id`` (access records, tenancy and token
events, ``Secret.Created``); for other Secret events, the stream's address in ``scaivault_secret_streams`` (a
tenant secret's owner is ``tnt_...``, a partner secret's ``ptn_...``, with no tenant); for any other event without
them (a PAT's revocation), the first indexed event of the same stream. The actor is ``actor``, else ``identity_id``.

Access records (``AccessRecorded``, nine events in ten) are not indexed here: the audit log already holds one row per
access event with the same facts (notification id, tenant, partner, identity, request id, time), so the queries
below read those events from ``scaivault_audit_log`` instead of writing every access twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.utils import get_topic

from projections.audit.projector import AuditLogProjection
from projections.runner import AllTopicsExcept, Projection, tracked_position
from scaivault.database import Queryable
from scaivault.domain.access import ACCESS_TOPIC

NAME = "event_index"



def _event_time(domain_event: Any) -> datetime:
    at = getattr(domain_event, "at", None)
    return at if isinstance(at, datetime) else domain_event.timestamp


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_INSERT = """
INSERT INTO scaivault_event_index
    (notification_id, stream_id, topic, tenant_id, partner_id, actor, request_id, occurred_at)
SELECT * FROM unnest($1::bigint[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::timestamptz[])
ON CONFLICT (notification_id) DO NOTHING
"""


class EventIndexProjection(Projection):
    name = NAME
    topics = AllTopicsExcept({ACCESS_TOPIC})  # the audit log indexes access records
    tables = ("scaivault_event_index",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        if not events:
            return
        owners: dict[UUID, tuple[str | None, str | None]] = {}  # stream -> (tenant, partner), learnt in this batch
        rows: list[list[Any]] = []
        unresolved: list[int] = []
        for notification_id, e in events:
            topic = get_topic(type(e))
            stream_id = e.originator_id
            if hasattr(e, "tenant_id") or hasattr(e, "partner_id"):
                owner = (_text(getattr(e, "tenant_id", None)), _text(getattr(e, "partner_id", None)))
                owners.setdefault(stream_id, owner)
            elif stream_id in owners:
                owner = owners[stream_id]
            else:
                owner = (None, None)
                unresolved.append(len(rows))
            actor = _text(getattr(e, "actor", None)) or _text(getattr(e, "identity_id", None))
            rows.append(
                [notification_id, stream_id, topic, *owner, actor, _text(getattr(e, "request_id", None)),
                 _event_time(e)]
            )
        if unresolved:
            await self._resolve(conn, [rows[i] for i in unresolved])
        await conn.execute(_INSERT, *(list(column) for column in zip(*rows, strict=True)))

    @staticmethod
    async def _resolve(conn: asyncpg.Connection, rows: list[list[Any]]) -> None:
        """Tenant and partner of events that do not name them: from the secret's address, else from the stream's
        first indexed event."""
        streams = sorted({row[1] for row in rows})
        found: dict[UUID, tuple[str | None, str | None]] = {}
        for record in await conn.fetch(
            "SELECT stream_id, tenant_id, partner_id FROM scaivault_secret_streams WHERE stream_id = ANY($1::uuid[])",
            streams,
        ):
            found[UUID(bytes=record["stream_id"].bytes)] = (_text(record["tenant_id"]), _text(record["partner_id"]))
        missing = [stream for stream in streams if stream not in found]
        if missing:
            for record in await conn.fetch(
                """SELECT DISTINCT ON (stream_id) stream_id, tenant_id, partner_id FROM scaivault_event_index
                   WHERE stream_id = ANY($1::uuid[]) ORDER BY stream_id, notification_id""",
                missing,
            ):
                found[UUID(bytes=record["stream_id"].bytes)] = (record["tenant_id"], record["partner_id"])
        for row in rows:
            row[3], row[4] = found.get(row[1], (None, None))


# ---- queries (for the CLI) ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    stream_id: UUID | None = None
    tenant_id: str | None = None
    partner_id: str | None = None
    topics: Sequence[str] | None = None  # exact topics; None means every topic
    since: datetime | None = None
    until: datetime | None = None
    after: int = 0
    limit: int = 100


async def known_topics(conn: Queryable) -> list[str]:
    """The distinct topics indexed so far (a loose index scan over the topic index: one probe per topic), and the
    access-record topic when the audit log holds any."""
    rows = await conn.fetch(
        """WITH RECURSIVE t(topic) AS (
               (SELECT topic FROM scaivault_event_index ORDER BY topic LIMIT 1)
               UNION ALL
               SELECT (SELECT i.topic FROM scaivault_event_index i WHERE i.topic > t.topic ORDER BY i.topic LIMIT 1)
               FROM t WHERE t.topic IS NOT NULL
           ) SELECT topic FROM t WHERE topic IS NOT NULL
           UNION ALL
           SELECT $1 WHERE EXISTS (SELECT 1 FROM scaivault_audit_log)""",
        ACCESS_TOPIC,
    )
    return [row["topic"] for row in rows]


def matching_topics(wanted: str, topics: Sequence[str]) -> list[str]:
    """``wanted`` is a whole topic (``module:Class``) or its tail after ':' or '.' (``Secret.VersionWritten``,
    ``VersionWritten``, ``AccessRecorded``), case-insensitive."""
    needle = wanted.strip().lower()
    return [
        topic
        for topic in topics
        if topic.lower() == needle or topic.lower().endswith((":" + needle, "." + needle))
    ]


# The two sources of index rows, as the same columns: the event index, and the audit log for access records.
_INDEXED = """
SELECT notification_id, stream_id, topic, tenant_id, partner_id, actor, request_id, occurred_at
FROM scaivault_event_index
"""
_ACCESS = f"""
SELECT a.notification_id, e.originator_id AS stream_id, '{ACCESS_TOPIC}'::text AS topic, a.tenant_id, a.partner_id,
       a.identity_id AS actor, a.request_id, a.recorded_at AS occurred_at
FROM scaivault_audit_log a JOIN scaivault_events e ON e.notification_id = a.notification_id
"""
# Filters in each source's own columns, so each part uses its own indexes (an audit chain is its tenant, or '').
_FILTERS = {
    "stream_id": ("stream_id = {}::uuid", "e.originator_id = {}::uuid"),
    "tenant_id": ("tenant_id = {}", "a.chain = {}"),
    "partner_id": ("partner_id = {}", "a.partner_id = {}"),
    "since": ("occurred_at >= {}::timestamptz", "a.recorded_at >= {}::timestamptz"),
    "until": ("occurred_at <= {}::timestamptz", "a.recorded_at <= {}::timestamptz"),
}


async def list_events(conn: Queryable, where: EventFilter) -> list[asyncpg.Record]:
    """Indexed events matching ``where``, in notification order, with their stored state."""
    args: list[Any] = [where.after, where.limit]
    indexed, access = ["notification_id > $1"], ["a.notification_id > $1"]
    for name, (indexed_condition, access_condition) in _FILTERS.items():
        value = getattr(where, name)
        if value is not None:
            args.append(value)
            indexed.append(indexed_condition.format(f"${len(args)}"))
            access.append(access_condition.format(f"${len(args)}"))
    parts = []
    topics = None if where.topics is None else list(where.topics)
    if topics is None or any(topic != ACCESS_TOPIC for topic in topics):
        if topics is not None:
            args.append(topics)
            indexed.append(f"topic = ANY(${len(args)}::text[])")
        parts.append(f"({_INDEXED} WHERE {' AND '.join(indexed)} ORDER BY notification_id LIMIT $2)")
    if topics is None or ACCESS_TOPIC in topics:
        parts.append(f"({_ACCESS} WHERE {' AND '.join(access)} ORDER BY a.notification_id LIMIT $2)")
    if not parts:
        return []
    sql = f"""SELECT i.*, e.originator_version, e.state
              FROM ({' UNION ALL '.join(parts)}) i JOIN scaivault_events e ON e.notification_id = i.notification_id
              ORDER BY i.notification_id LIMIT $2"""
    return await conn.fetch(sql, *args)


async def event_by_id(conn: Queryable, notification_id: int) -> asyncpg.Record | None:
    """One event from the log, with its index entry when it has one (the log itself is the truth)."""
    return await conn.fetchrow(
        f"""SELECT e.notification_id, e.originator_id AS stream_id, e.originator_version, e.topic, e.state,
                   i.tenant_id, i.partner_id, i.actor, i.request_id, i.occurred_at,
                   i.notification_id IS NOT NULL AS indexed
            FROM scaivault_events e
            LEFT JOIN (({_INDEXED} WHERE notification_id = $1) UNION ALL ({_ACCESS} WHERE a.notification_id = $1)) i
                   ON i.notification_id = e.notification_id
            WHERE e.notification_id = $1""",
        notification_id,
    )


async def index_lag(conn: Queryable) -> tuple[int, int]:
    """(head of the event log, position of the index: the lesser of the event index's and the audit log's)."""
    head = await conn.fetchval("SELECT COALESCE(MAX(notification_id), 0) FROM scaivault_events")
    position = min(await tracked_position(conn, NAME), await tracked_position(conn, AuditLogProjection.name))
    return int(head), position
