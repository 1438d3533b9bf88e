"""The subscriptions' sink of the fan-out (projections/fanout/): which subscriptions want each new public event, and
what that means for them, in the fan-out's tracking transaction:

- a polling subscription gets a queue entry; then the queue is held to its ``buffer_size``: the oldest entries give
  way to the new ones and are counted in ``scaivault_subscription_queue_state.dropped_events`` and, per path, in
  ``scaivault_subscription_drops`` (polls and GET report them: visibility.py);
- a push (webhook) subscription gets an outbox row in ``scaivault_webhook_deliveries`` (target_kind
  ``subscription``), which the webhook dispatcher delivers like a webhook's.

Matching (``Interest.wants``: event type, path globs, filters) is done here, with the same glob code as access
policies, and only events committed from the subscription's creation on count (``since_creation``); the writes are
a few set-based statements per batch, whatever its size. Queues left by subscriptions that switched to push delivery
are removed here too (projector.py says why not there).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import asyncpg

from projections.fanout.sinks import FeedEntry, since_creation
from projections.subscriptions.projector import drop_queues
from projections.subscriptions.queries import interested_subscriptions
from scaivault.domain.subscriptions import POLLING, Interest, interest_of
from scaivault.webhooks.outbox import delivery_rows, queue_deliveries

SUBSCRIPTION_TARGET = "subscription"


@dataclass
class _Rows:
    queue: list[tuple[str, int, str]] = field(default_factory=list)  # (subscription, position, event id)
    pushes: list[tuple[str, FeedEntry]] = field(default_factory=list)


class SubscriptionSink:
    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        tenants = sorted({entry.tenant_id for entry in entries if entry.tenant_id is not None})
        if not tenants:
            return
        subscriptions = await interested_subscriptions(conn, tenants)
        await _forget_push_queues(conn, subscriptions)
        by_tenant: dict[str, list[tuple[str, bool, Interest, int | None]]] = {}
        for row in subscriptions:
            by_tenant.setdefault(row["tenant_id"], []).append(
                (row["subscription_id"], row["delivery_type"] == POLLING, interest_of(row), row["created_position"])
            )
        rows = _Rows()
        for entry in entries:
            for subscription_id, polled, interest, created in by_tenant.get(entry.tenant_id or "", ()):
                if since_creation(entry, created) and interest.wants(
                    entry.event_type, entry.path, entry.secret_type, entry.tags
                ):
                    if polled:
                        rows.queue.append((subscription_id, entry.position, entry.event_id))
                    else:
                        rows.pushes.append((subscription_id, entry))
        if rows.queue:
            await _enqueue(conn, rows.queue)
        if rows.pushes:
            await _push(conn, rows.pushes)


async def _forget_push_queues(conn: asyncpg.Connection, subscriptions: Sequence[asyncpg.Record]) -> None:
    """A subscription switched from polling to push leaves its queue behind (projector.py says why): gone here,
    at the next event of its tenant."""
    pushed = [row["subscription_id"] for row in subscriptions if row["delivery_type"] != POLLING]
    if pushed:
        await drop_queues(conn, pushed)


async def _enqueue(conn: asyncpg.Connection, queue: Sequence[tuple[str, int, str]]) -> None:
    inserted = await conn.fetch(
        """INSERT INTO scaivault_subscription_queue (subscription_id, feed_position, event_id)
           SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[])
           ON CONFLICT DO NOTHING
           RETURNING subscription_id""",
        [s for s, _, _ in queue], [p for _, p, _ in queue], [e for _, _, e in queue],
    )
    added = Counter(row["subscription_id"] for row in inserted)
    await _hold_to_buffer_size(conn, {s: added[s] for s in sorted({s for s, _, _ in queue})})


async def _hold_to_buffer_size(conn: asyncpg.Connection, added: Mapping[str, int]) -> None:
    """Drop the oldest entries beyond each queue's buffer size, count them, and keep each queue's length. Queue rows
    are locked before state rows, as acknowledgements do (projections/subscriptions/queries.py). Drops are counted
    in total (``scaivault_subscription_queue_state``, for administrators) and per path
    (``scaivault_subscription_drops``: an owner who administers nothing is told only of the paths it may list).

    ``queued`` moves by what this transaction inserted and deleted, never to a count: a poll that removes entries
    and commits while this statement waits for the state row would be undone by a count taken from the statement's
    older snapshot. Which entries give way is decided on that snapshot: at worst a queue is trimmed a little short
    or long until its next event."""
    await conn.execute(
        """WITH added AS (
               SELECT * FROM unnest($1::text[], $2::int[]) AS a(subscription_id, n)),
           counts AS (
               SELECT s.subscription_id, s.buffer_size, a.n AS added,
                      (SELECT count(*) FROM scaivault_subscription_queue q
                       WHERE q.subscription_id = s.subscription_id) AS queued
               FROM scaivault_subscriptions s JOIN added a USING (subscription_id)),
           doomed AS (
               SELECT c.subscription_id, oldest.feed_position FROM counts c
               CROSS JOIN LATERAL (
                   SELECT q.feed_position FROM scaivault_subscription_queue q
                   WHERE q.subscription_id = c.subscription_id ORDER BY q.feed_position
                   LIMIT greatest(c.queued - c.buffer_size, 0)) oldest),
           dropped AS (
               DELETE FROM scaivault_subscription_queue q USING doomed d
               WHERE q.subscription_id = d.subscription_id AND q.feed_position = d.feed_position
               RETURNING q.subscription_id, q.feed_position),
           drops AS (SELECT subscription_id, count(*) AS n FROM dropped GROUP BY subscription_id),
           by_path AS (
               INSERT INTO scaivault_subscription_drops AS pd (subscription_id, path, dropped_events,
                                                               last_dropped_at)
               SELECT d.subscription_id, f.path, count(*), now()
               FROM dropped d JOIN scaivault_event_feed f ON f.position = d.feed_position
               WHERE f.path IS NOT NULL
               GROUP BY d.subscription_id, f.path
               ORDER BY d.subscription_id, f.path
               ON CONFLICT (subscription_id, path) DO UPDATE SET
                   dropped_events = pd.dropped_events + EXCLUDED.dropped_events,
                   last_dropped_at = EXCLUDED.last_dropped_at)
           INSERT INTO scaivault_subscription_queue_state AS st (subscription_id, queued, dropped_events,
                                                                 last_dropped_at)
           SELECT c.subscription_id, c.added - coalesce(d.n, 0), coalesce(d.n, 0),
                  CASE WHEN d.n > 0 THEN now() END
           FROM counts c LEFT JOIN drops d USING (subscription_id)
           ORDER BY c.subscription_id
           ON CONFLICT (subscription_id) DO UPDATE SET
               queued = st.queued + EXCLUDED.queued,
               dropped_events = st.dropped_events + EXCLUDED.dropped_events,
               last_dropped_at = coalesce(EXCLUDED.last_dropped_at, st.last_dropped_at)""",
        list(added), list(added.values()),
    )


async def _push(conn: asyncpg.Connection, pushes: Sequence[tuple[str, FeedEntry]]) -> None:
    """Outbox rows, due now, ordered per (subscription, path) by feed position (the dispatcher's contract)."""
    await queue_deliveries(conn, SUBSCRIPTION_TARGET, delivery_rows(
        (subscription_id, e.tenant_id or "", e.event_id, e.event_type, e.position, e.ordering_key)
        for subscription_id, e in pushes
    ))
