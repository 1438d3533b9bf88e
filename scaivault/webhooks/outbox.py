"""Lanes of the outbox (``scaivault_webhook_deliveries``): the rule that keeps one path's deliveries to one target in
log order, kept so the dispatcher's claim costs what it claims, not what is waiting.

A lane is (target kind, target id, ordering key). Of a lane's pending rows only its head, the one with the lowest
feed position, is ``ready``; the dispatcher claims ready rows only. Two writers change lanes:

- the fan-out queues new rows (``queue_deliveries``): a new row is ready when nothing of its lane is pending;
- the dispatcher's recorder takes rows out of pending (sent, dead-lettered, removed) and makes the next row of each
  of their lanes ready (``promote_heads``).

Both hold the lane locks of the targets they touch (``lock_lanes``) until they commit, so neither decides on a
lane the other is changing: otherwise a row queued behind a head that was finishing at that moment would wait for
a promotion that already happened. The locks are transaction-scoped advisory locks of a few buckets, taken in one
order (no deadlock between the two). ``repair_lanes`` is the safety net the dispatcher runs now and then: it makes
every pending lane's head ready, whatever left it waiting.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence

import asyncpg

from scaivault.ids import new_id

# The advisory lock class (first key) of the lane locks, and how many buckets targets share: few enough that a
# transaction holds a handful of locks, enough that a recorder and the fan-out rarely wait on each other.
LANE_LOCK_CLASS = 0x5CA1_0B0
LANE_LOCK_BUCKETS = 64


def lane_buckets(targets: Iterable[tuple[str, str]]) -> list[int]:
    """The lock buckets of (target kind, target id) pairs, sorted: every writer takes them in this order."""
    return sorted({zlib.crc32(f"{kind}:{target}".encode()) % LANE_LOCK_BUCKETS for kind, target in targets})


async def lock_lanes(conn: asyncpg.Connection, targets: Iterable[tuple[str, str]]) -> None:
    buckets = lane_buckets(targets)
    if buckets:
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, b) FROM unnest($2::int[]) AS b ORDER BY b",
            LANE_LOCK_CLASS, buckets,
        )


# (delivery id, target id, tenant, event id, event type, feed position, ordering key)
QueuedDelivery = tuple[str, str, str, str, str, int, str]


async def queue_deliveries(conn: asyncpg.Connection, target_kind: str, rows: Sequence[QueuedDelivery]) -> None:
    """Pending deliveries, due now, in the caller's transaction. A replayed batch finds its rows there already
    (one per target and event)."""
    if not rows:
        return
    await lock_lanes(conn, ((target_kind, row[1]) for row in rows))
    columns = [list(column) for column in zip(*rows, strict=True)]
    await conn.execute(
        """WITH new AS (
               SELECT u.*, row_number() OVER (PARTITION BY u.t, u.k ORDER BY u.p) AS n
               FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[])
                    AS u(d, t, tn, e, et, p, k)
           )
           INSERT INTO scaivault_webhook_deliveries (delivery_id, target_kind, target_id, tenant_id, event_id,
               event_type, feed_position, ordering_key, status, ready, next_attempt_at, created_at)
           SELECT d, $1, t, tn, e, et, p, k, 'pending',
                  n = 1 AND NOT EXISTS (
                      SELECT 1 FROM scaivault_webhook_deliveries x
                      WHERE x.status = 'pending' AND x.target_kind = $1 AND x.target_id = new.t
                        AND x.ordering_key = new.k),
                  now(), now()
           FROM new
           ON CONFLICT (target_kind, target_id, event_id) DO NOTHING""",
        target_kind, *columns,
    )


def delivery_rows(entries: Iterable[tuple[str, str, str, str, int, str]]) -> list[QueuedDelivery]:
    """(target id, tenant, event id, event type, feed position, ordering key) each, with a new delivery id."""
    return [(new_id("del_"), *entry) for entry in entries]


_PROMOTE = """
UPDATE scaivault_webhook_deliveries d SET ready = true
FROM unnest($1::text[], $2::text[], $3::text[]) AS lane(kind, target, key)
CROSS JOIN LATERAL (
    SELECT x.delivery_id, x.ready FROM scaivault_webhook_deliveries x
    WHERE x.status = 'pending' AND x.target_kind = lane.kind AND x.target_id = lane.target
      AND x.ordering_key = lane.key
    ORDER BY x.feed_position LIMIT 1
) head
WHERE d.delivery_id = head.delivery_id AND NOT head.ready
"""


async def promote_heads(conn: asyncpg.Connection, lanes: Iterable[tuple[str, str, str]]) -> None:
    """Make the head of each (target kind, target id, ordering key) lane ready. The caller holds their locks."""
    distinct = sorted(set(lanes))
    if distinct:
        await conn.execute(_PROMOTE, *(list(column) for column in zip(*distinct, strict=True)))


_WAITING_HEADS = """
SELECT DISTINCT ON (x.target_kind, x.target_id, x.ordering_key) x.delivery_id, x.ready
FROM scaivault_webhook_deliveries x
WHERE x.status = 'pending'
ORDER BY x.target_kind, x.target_id, x.ordering_key, x.feed_position
"""
_REPAIR = f"""
UPDATE scaivault_webhook_deliveries d SET ready = true
FROM ({_WAITING_HEADS}) head
WHERE d.delivery_id = head.delivery_id AND NOT head.ready
"""


async def repair_lanes(conn: asyncpg.Connection) -> int:
    """Make every pending lane's head ready; returns how many were not (zero unless something went wrong). Looks
    first without locks (the usual answer is: none), and repairs holding every lane lock."""
    if not await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM ({_WAITING_HEADS}) head WHERE NOT head.ready)"):
        return 0
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1::int, b) FROM generate_series(0, $2::int - 1) AS b ORDER BY b",
            LANE_LOCK_CLASS, LANE_LOCK_BUCKETS,
        )
        status = await conn.execute(_REPAIR)
    return int(status.rsplit(" ", 1)[-1])
