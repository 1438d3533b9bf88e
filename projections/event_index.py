"""An index of every event in the log, for operators (``scaivault events list``): stream, topic, tenant, partner,
actor, request id and time per notification id, so the log can be filtered by tenant, type and time without
decoding every event. The events themselves stay in ``scaivault_events``; the index holds no event data.

Where tenant and partner come from: the event's own ``tenant_id``/``partner_id`` (access records, tenancy and token
events, ``Secret.Created``); for other Secret events, the stream's address in ``scaivault_secret_streams`` (a
tenant secret's owner is ``tnt_...``, a partner secret's ``ptn_...``, with no tenant); for any other event without
them (a PAT's revocation), the first indexed event of the same stream. The actor is ``actor``, else ``identity_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection, tracked_position
from scaivault.domain.secrets import Secret

NAME = "event_index"

_SECRET_TOPIC_PREFIX = get_topic(Secret) + "."


class _EveryTopic(frozenset):  # type: ignore[type-arg]
    """The runner decodes the events whose topic is ``in`` a projection's topics: this one wants them all."""

    def __contains__(self, topic: object) -> bool:
        return True


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
    topics = _EveryTopic()
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
                [notification_id, stream_id, topic, *owner, actor, _text(getattr(e, "request_id", None)), _event_time(e)]
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


async def known_topics(conn: asyncpg.Connection | asyncpg.Pool) -> list[str]:
    """The distinct topics indexed so far (a loose index scan over the topic index: one probe per topic)."""
    rows = await conn.fetch(
        """WITH RECURSIVE t(topic) AS (
               (SELECT topic FROM scaivault_event_index ORDER BY topic LIMIT 1)
               UNION ALL
               SELECT (SELECT i.topic FROM scaivault_event_index i WHERE i.topic > t.topic ORDER BY i.topic LIMIT 1)
               FROM t WHERE t.topic IS NOT NULL
           ) SELECT topic FROM t WHERE topic IS NOT NULL"""
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


_SELECT = """
SELECT i.notification_id, i.stream_id, i.topic, i.tenant_id, i.partner_id, i.actor, i.request_id, i.occurred_at,
       e.originator_version, e.state
FROM scaivault_event_index i JOIN scaivault_events e ON e.notification_id = i.notification_id
"""


async def list_events(conn: asyncpg.Connection | asyncpg.Pool, where: EventFilter) -> list[asyncpg.Record]:
    """Indexed events matching ``where``, in notification order, with their stored state."""
    conditions = ["i.notification_id > $1"]
    args: list[Any] = [where.after]
    for condition, value in (
        ("i.stream_id = {}::uuid", where.stream_id),
        ("i.tenant_id = {}", where.tenant_id),
        ("i.partner_id = {}", where.partner_id),
        ("i.occurred_at >= {}::timestamptz", where.since),
        ("i.occurred_at <= {}::timestamptz", where.until),
    ):
        if value is not None:
            args.append(value)
            conditions.append(condition.format(f"${len(args)}"))
    if where.topics is not None:
        args.append(list(where.topics))
        conditions.append(f"i.topic = ANY(${len(args)}::text[])")
    args.append(where.limit)
    sql = f"{_SELECT} WHERE {' AND '.join(conditions)} ORDER BY i.notification_id LIMIT ${len(args)}"
    return await conn.fetch(sql, *args)


async def event_by_id(conn: asyncpg.Connection | asyncpg.Pool, notification_id: int) -> asyncpg.Record | None:
    """One event from the log, with its index entry when it has one (the log itself is the truth)."""
    return await conn.fetchrow(
        """SELECT e.notification_id, e.originator_id AS stream_id, e.originator_version, e.topic, e.state,
                  i.tenant_id, i.partner_id, i.actor, i.request_id, i.occurred_at, i.notification_id IS NOT NULL AS indexed
           FROM scaivault_events e LEFT JOIN scaivault_event_index i ON i.notification_id = e.notification_id
           WHERE e.notification_id = $1""",
        notification_id,
    )


async def index_lag(conn: asyncpg.Connection | asyncpg.Pool) -> tuple[int, int]:
    """(head of the event log, position of the index)."""
    head = await conn.fetchval("SELECT COALESCE(MAX(notification_id), 0) FROM scaivault_events")
    return int(head), await tracked_position(conn, NAME)
