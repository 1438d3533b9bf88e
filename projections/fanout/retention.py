"""Trimming the outbox: finished deliveries after ``delivery_retention``, and feed entries after
``event_feed_retention`` once no delivery or subscription queue still points at them (a pending delivery, or one
that may still be redelivered, keeps its event)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

BATCH = 10_000  # rows per statement: housekeeping never holds long locks


@dataclass(frozen=True)
class Trimmed:
    deliveries: int
    feed_entries: int


async def trim_outbox(pool: asyncpg.Pool, *, feed_before: datetime, deliveries_before: datetime) -> Trimmed:
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
    return Trimmed(deliveries, feed)


async def _repeat(pool: asyncpg.Pool, statement: str, before: datetime) -> int:
    total = 0
    while True:
        status = await pool.execute(statement, before, BATCH)
        removed = int(status.split()[-1])
        total += removed
        if removed < BATCH:
            return total
