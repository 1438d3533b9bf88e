"""Trimming the outbox: finished deliveries after ``delivery_retention``, and feed entries after
``event_feed_retention`` once no delivery or subscription queue still points at them (a pending delivery, or one
that may still be redelivered, keeps its event).

First, what the receivers' deletions left behind (``remove_orphans``). A receiver deleted while a fan-out batch that
had already read it was running gets that batch's rows after its deletion removed the rest: queue entries (with
their counts) of a subscription that is gone or no longer polls, and pending deliveries of a webhook or push
subscription that is gone. Those would keep their feed entries for ever (a queue entry is only removed by its
subscriber), so they go here. Deliveries of a deleted target would also drain through the dispatcher, which removes
each as it comes due and readies the next of its lane, but rows queued behind a head its deletion removed wait
for the dispatcher's lane repair; here they go at once, under the lane locks of their targets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import asyncpg

from projections.subscriptions.projector import drop_queues
from scaivault.domain.subscriptions import POLLING
from scaivault.webhooks.outbox import lock_lanes

BATCH = 10_000  # rows per statement: housekeeping never holds long locks
ORPHANS_PER_TRANSACTION = 10  # receivers whose leftovers one transaction removes (a queue holds 10 000 at most)
T = TypeVar("T")


@dataclass(frozen=True)
class Trimmed:
    deliveries: int
    feed_entries: int
    orphaned_queues: int = 0  # subscriptions whose queues (and counts) were removed
    orphaned_deliveries: int = 0


@dataclass(frozen=True)
class Orphans:
    queues: int
    deliveries: int


async def trim_outbox(pool: asyncpg.Pool, *, feed_before: datetime, deliveries_before: datetime) -> Trimmed:
    orphans = await remove_orphans(pool)
    deliveries = await _repeat(
        pool,
        """DELETE FROM scaivault_webhook_deliveries WHERE delivery_id IN (
               SELECT delivery_id FROM scaivault_webhook_deliveries
               WHERE status <> 'pending' AND created_at < $1 LIMIT $2)""",
        deliveries_before,
    )
    feed = await _repeat(
        pool,
        """DELETE FROM scaivault_event_feed WHERE position IN (
               SELECT f.position FROM scaivault_event_feed f
               WHERE f.recorded_at < $1
                 AND NOT EXISTS (SELECT 1 FROM scaivault_webhook_deliveries d WHERE d.feed_position = f.position)
                 AND NOT EXISTS (SELECT 1 FROM scaivault_subscription_queue q WHERE q.feed_position = f.position)
               ORDER BY f.position LIMIT $2)""",
        feed_before,
    )
    return Trimmed(deliveries, feed, orphans.queues, orphans.deliveries)


# Subscriptions that hold queue entries or counts: one index probe per subscription (a skip scan), not a read of
# every entry.
_QUEUE_HOLDERS = """
WITH RECURSIVE queued(id) AS (
    (SELECT subscription_id FROM scaivault_subscription_queue ORDER BY subscription_id LIMIT 1)
    UNION ALL
    SELECT (SELECT q.subscription_id FROM scaivault_subscription_queue q WHERE q.subscription_id > queued.id
            ORDER BY q.subscription_id LIMIT 1)
    FROM queued WHERE queued.id IS NOT NULL
), dropped(id) AS (
    (SELECT subscription_id FROM scaivault_subscription_drops ORDER BY subscription_id LIMIT 1)
    UNION ALL
    SELECT (SELECT d.subscription_id FROM scaivault_subscription_drops d WHERE d.subscription_id > dropped.id
            ORDER BY d.subscription_id LIMIT 1)
    FROM dropped WHERE dropped.id IS NOT NULL
)
SELECT holder.id FROM (
    SELECT id FROM queued UNION SELECT id FROM dropped
    UNION SELECT subscription_id FROM scaivault_subscription_queue_state
) holder
WHERE holder.id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM scaivault_subscriptions s WHERE s.subscription_id = holder.id AND s.delivery_type = $1)
ORDER BY holder.id
"""

# Targets with pending deliveries that no longer exist: a skip scan too, over the index of pending lanes.
_TARGETLESS_DELIVERIES = """
WITH RECURSIVE targets(kind, id) AS (
    (SELECT target_kind, target_id FROM scaivault_webhook_deliveries WHERE status = 'pending'
     ORDER BY target_kind, target_id LIMIT 1)
    UNION ALL
    SELECT later.target_kind, later.target_id FROM targets CROSS JOIN LATERAL (
        SELECT d.target_kind, d.target_id FROM scaivault_webhook_deliveries d
        WHERE d.status = 'pending' AND (d.target_kind, d.target_id) > (targets.kind, targets.id)
        ORDER BY d.target_kind, d.target_id LIMIT 1) later
)
SELECT t.kind, t.id FROM targets t
WHERE NOT EXISTS (SELECT 1 FROM scaivault_webhooks w WHERE t.kind = 'webhook' AND w.webhook_id = t.id)
  AND NOT EXISTS (SELECT 1 FROM scaivault_subscriptions s WHERE t.kind = 'subscription' AND s.subscription_id = t.id)
"""


async def remove_orphans(pool: asyncpg.Pool) -> Orphans:
    """Queues of subscriptions that are gone or no longer poll, and pending deliveries of deleted targets."""
    queues = 0
    holders = [row["id"] for row in await pool.fetch(_QUEUE_HOLDERS, POLLING)]
    for chunk in _chunks(holders):
        queues += await _drop_orphaned_queues(pool, chunk)
    deliveries = 0
    targets = [(row["kind"], row["id"]) for row in await pool.fetch(_TARGETLESS_DELIVERIES)]
    for chunk in _chunks(targets):
        async with pool.acquire() as conn, conn.transaction():
            # As the fan-out queues (scaivault/webhooks/outbox.py): a row it is queueing now is either seen and
            # removed here, or queued after this commits, ready at the head of its emptied lane.
            await lock_lanes(conn, chunk)
            status = await conn.execute(
                """DELETE FROM scaivault_webhook_deliveries d USING unnest($1::text[], $2::text[]) AS t(kind, id)
                   WHERE d.target_kind = t.kind AND d.target_id = t.id""",
                [kind for kind, _ in chunk], [target for _, target in chunk],
            )
            deliveries += int(status.split()[-1])
    return Orphans(queues, deliveries)


async def _drop_orphaned_queues(pool: asyncpg.Pool, subscription_ids: Sequence[str]) -> int:
    """Remove the queues of those of ``subscription_ids`` that still do not poll once their rows are locked: a
    switch back to polling waits for this transaction, so the queue it starts is not removed here (ids are never
    reused: a deleted subscription stays deleted). Returns how many were removed."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "SELECT 1 FROM scaivault_subscriptions WHERE subscription_id = ANY($1::text[]) FOR SHARE",
            list(subscription_ids),
        )
        orphaned = [row["id"] for row in await conn.fetch(
            """SELECT id FROM unnest($1::text[]) AS id WHERE NOT EXISTS (
                   SELECT 1 FROM scaivault_subscriptions s WHERE s.subscription_id = id AND s.delivery_type = $2)""",
            list(subscription_ids), POLLING,
        )]
        if orphaned:
            await drop_queues(conn, orphaned)
    return len(orphaned)


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i:i + ORPHANS_PER_TRANSACTION] for i in range(0, len(items), ORPHANS_PER_TRANSACTION)]


async def _repeat(pool: asyncpg.Pool, statement: str, before: datetime) -> int:
    total = 0
    while True:
        status = await pool.execute(statement, before, BATCH)
        removed = int(status.split()[-1])
        total += removed
        if removed < BATCH:
            return total
