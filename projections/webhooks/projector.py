"""Webhooks read model (inline: written in the transaction that appends the Webhook events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.webhooks import Webhook

WEBHOOK_EVENTS = (
    Webhook.Created, Webhook.Updated, Webhook.SecretRotated, Webhook.PreviousSecretExpired, Webhook.Deleted,
)


async def project_webhook_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, Webhook.Created):
        await conn.execute(
            """INSERT INTO scaivault_webhooks (webhook_id, stream_id, tenant_id, partner_id, name, url, events, filters,
                   enabled, secret_ciphertext, secret_key_id, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $12, $13)""",
            e.webhook_id, e.originator_id, e.tenant_id, e.partner_id, e.name, e.url, e.events, e.filters, e.enabled,
            e.secret_ciphertext, e.secret_key_id, e.at, e.actor,
        )
    elif isinstance(e, Webhook.Updated):
        await conn.execute(
            """UPDATE scaivault_webhooks SET name = $2, url = $3, events = $4, filters = $5, enabled = $6,
                   updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.name, e.url, e.events, e.filters, e.enabled, e.at, e.actor,
        )
    elif isinstance(e, Webhook.SecretRotated):
        await conn.execute(
            """UPDATE scaivault_webhooks SET secret_ciphertext = $2, secret_key_id = $3,
                   previous_secret_ciphertext = $4, previous_secret_key_id = $5, previous_secret_expires_at = $6,
                   updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.secret_ciphertext, e.secret_key_id, e.previous_secret_ciphertext,
            e.previous_secret_key_id, e.previous_secret_expires_at, e.at, e.actor,
        )
    elif isinstance(e, Webhook.PreviousSecretExpired):
        # Its data key is destroyed in the same transaction: nothing of the previous secret is left.
        await conn.execute(
            """UPDATE scaivault_webhooks SET previous_secret_ciphertext = NULL, previous_secret_key_id = NULL,
                   previous_secret_expires_at = NULL WHERE stream_id = $1""",
            e.originator_id,
        )
    elif isinstance(e, Webhook.Deleted):
        # Its deliveries go with it: nothing may be sent for a deleted webhook, and nobody can list them any more.
        await conn.execute(
            """WITH gone AS (DELETE FROM scaivault_webhooks WHERE stream_id = $1 RETURNING webhook_id)
               DELETE FROM scaivault_webhook_deliveries d USING gone
               WHERE d.target_kind = 'webhook' AND d.target_id = gone.webhook_id""",
            e.originator_id,
        )
