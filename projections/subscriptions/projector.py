"""Subscriptions read model (inline: written in the transaction that appends the Subscription events).

A subscription's queue (``scaivault_subscription_queue``) is operational state, not part of the read model, but it
belongs to the subscription: it goes when the subscription is deleted (ids are never reused, so a rebuild replaying
the deletion removes nothing that lives). A queue left by a switch to push delivery is removed by the fan-out sink
instead: a replayed switch must not empty the queue of a subscription that has been polling again since."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from scaivault.domain.subscriptions import ACTIVE, Subscription

SUBSCRIPTION_EVENTS = (Subscription.Created, Subscription.Updated, Subscription.Deleted)


async def project_subscription_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, Subscription.Created):
        await conn.execute(
            """INSERT INTO scaivault_subscriptions (subscription_id, stream_id, tenant_id, partner_id, identity_id,
                   name, paths, events, filters, delivery_type, url, secret_ciphertext, secret_key_id, buffer_size,
                   status, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $16, $17)""",
            e.subscription_id, e.originator_id, e.tenant_id, e.partner_id, e.identity_id, e.name, e.paths, e.events,
            e.filters, e.delivery_type, e.url, e.secret_ciphertext, e.secret_key_id, e.buffer_size, ACTIVE, e.at,
            e.actor,
        )
    elif isinstance(e, Subscription.Updated):
        await conn.execute(
            """UPDATE scaivault_subscriptions SET paths = $2, events = $3, delivery_type = $4, url = $5,
                   secret_ciphertext = $6, secret_key_id = $7, buffer_size = $8, updated_at = $9, updated_by = $10
               WHERE stream_id = $1""",
            e.originator_id, e.paths, e.events, e.delivery_type, e.url, e.secret_ciphertext, e.secret_key_id,
            e.buffer_size, e.at, e.actor,
        )
    elif isinstance(e, Subscription.Deleted):
        subscription_id = await conn.fetchval(
            "DELETE FROM scaivault_subscriptions WHERE stream_id = $1 RETURNING subscription_id", e.originator_id
        )
        if subscription_id is not None:
            await drop_queues(conn, [subscription_id])


async def drop_queues(conn: asyncpg.Connection, subscription_ids: Sequence[str]) -> None:
    """A queue with its counts (the total and the per-path drops)."""
    await conn.execute(
        """WITH queue AS (DELETE FROM scaivault_subscription_queue WHERE subscription_id = ANY($1::text[])),
                drops AS (DELETE FROM scaivault_subscription_drops WHERE subscription_id = ANY($1::text[]))
           DELETE FROM scaivault_subscription_queue_state WHERE subscription_id = ANY($1::text[])""",
        list(subscription_ids),
    )
