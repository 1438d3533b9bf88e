"""Queries of the subscriptions read model and of the polling queues. Every query a caller can reach is confined to
one tenant (and, for a caller who administers nothing there, to its own subscriptions)."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from projections.fanout.sinks import created_position
from scaivault.database import Queryable

_COLUMNS = """s.subscription_id, s.tenant_id, s.partner_id, s.identity_id, s.name, s.paths, s.events, s.filters,
    s.delivery_type, s.url, s.buffer_size, s.status, s.created_at, s.created_by, s.updated_at, s.updated_by,
    coalesce(q.queued, 0) AS queued, coalesce(q.dropped_events, 0) AS dropped_events, q.last_dropped_at"""
_FROM = "scaivault_subscriptions s LEFT JOIN scaivault_subscription_queue_state q USING (subscription_id)"


async def subscription_rows(
    conn: Queryable, tenant_id: str, owner: str | None, *, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """The tenant's subscriptions (``owner``'s only, unless None) in id order, after ``after``."""
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM {_FROM}
            WHERE s.tenant_id = $1 AND ($2::text IS NULL OR lower(s.identity_id) = lower($2))
              AND s.subscription_id > coalesce($3, '')
            ORDER BY s.subscription_id LIMIT $4""",
        tenant_id, owner, after, limit,
    )


async def subscription_row(conn: Queryable, tenant_id: str, subscription_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM {_FROM} WHERE s.tenant_id = $1 AND s.subscription_id = $2",
        tenant_id, subscription_id,
    )


async def interested_subscriptions(conn: Queryable, tenant_ids: Sequence[str]) -> list[asyncpg.Record]:
    """What the fan-out matches events against: every active subscription of these tenants, with the log position
    of its creation (``projections/fanout/sinks.py: since_creation``)."""
    return await conn.fetch(
        f"""SELECT subscription_id, tenant_id, paths, events, filters, delivery_type,
                   {created_position("stream_id")} AS created_position
            FROM scaivault_subscriptions WHERE tenant_id = ANY($1::text[]) AND status = 'active'
            ORDER BY subscription_id""",
        list(tenant_ids),
    )


# ---- the polling queues ---------------------------------------------------------------------------------------------


async def feed_position(conn: Queryable, tenant_id: str, event_id: str) -> int | None:
    return await conn.fetchval(
        "SELECT position FROM scaivault_event_feed WHERE event_id = $1 AND tenant_id = $2", event_id, tenant_id
    )


async def queued_events(
    conn: Queryable, subscription_id: str, *, after: int, limit: int
) -> list[asyncpg.Record]:
    """The oldest unacknowledged entries after feed position ``after``, with their envelopes and paths."""
    return await conn.fetch(
        """SELECT q.feed_position, q.event_id, f.path, f.envelope
           FROM scaivault_subscription_queue q JOIN scaivault_event_feed f ON f.position = q.feed_position
           WHERE q.subscription_id = $1 AND q.feed_position > $2
           ORDER BY q.feed_position LIMIT $3""",
        subscription_id, after, limit,
    )


async def mark_delivered(conn: Queryable, subscription_id: str, positions: Sequence[int]) -> None:
    """The first time entries are handed to a poll (kept: a redelivery does not change it)."""
    await conn.execute(
        """WITH first AS (
               SELECT feed_position FROM scaivault_subscription_queue
               WHERE subscription_id = $1 AND feed_position = ANY($2::bigint[]) AND delivered_at IS NULL
               ORDER BY feed_position FOR UPDATE)
           UPDATE scaivault_subscription_queue q SET delivered_at = now() FROM first
           WHERE q.subscription_id = $1 AND q.feed_position = first.feed_position""",
        subscription_id, list(positions),
    )


# Rows are locked in feed order, then the state row (as the fan-out does: queue rows, then state rows), so removals,
# polls and the fan-out's overflow trimming do not deadlock one another.
_REMOVE = """WITH doomed AS (
        SELECT feed_position FROM scaivault_subscription_queue
        WHERE subscription_id = $1 AND {which} ORDER BY feed_position FOR UPDATE),
    removed AS (
        DELETE FROM scaivault_subscription_queue q USING doomed
        WHERE q.subscription_id = $1 AND q.feed_position = doomed.feed_position RETURNING 1),
    counted AS (
        UPDATE scaivault_subscription_queue_state
        SET queued = greatest(queued - (SELECT count(*) FROM removed), 0)
        WHERE subscription_id = $1)
    SELECT count(*) FROM removed"""


async def acknowledge(conn: Queryable, subscription_id: str, event_ids: Sequence[str]) -> int:
    """Remove these events from the queue; returns how many were in it."""
    return int(await conn.fetchval(
        _REMOVE.format(which="event_id = ANY($2::text[])"), subscription_id, list(event_ids)
    ))


async def remove_positions(conn: Queryable, subscription_id: str, positions: Sequence[int]) -> int:
    return int(await conn.fetchval(
        _REMOVE.format(which="feed_position = ANY($2::bigint[])"), subscription_id, list(positions)
    ))


async def queue_state(conn: Queryable, subscription_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT queued, dropped_events, last_dropped_at FROM scaivault_subscription_queue_state"
        " WHERE subscription_id = $1",
        subscription_id,
    )


async def queued_by_path(conn: Queryable, subscription_ids: Sequence[str]) -> list[asyncpg.Record]:
    """How many entries wait in each queue, per path (None: events without a path)."""
    return await conn.fetch(
        """SELECT q.subscription_id, f.path, count(*) AS n
           FROM scaivault_subscription_queue q JOIN scaivault_event_feed f ON f.position = q.feed_position
           WHERE q.subscription_id = ANY($1::text[])
           GROUP BY q.subscription_id, f.path""",
        list(subscription_ids),
    )


async def drops_by_path(conn: Queryable, subscription_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The entries each queue dropped, per path (entries without a path are counted in the total only)."""
    return await conn.fetch(
        """SELECT subscription_id, path, dropped_events, last_dropped_at FROM scaivault_subscription_drops
           WHERE subscription_id = ANY($1::text[])""",
        list(subscription_ids),
    )
