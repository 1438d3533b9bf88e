"""What the API asks of the sending side: a test send (``POST /v1/webhooks/{id}/test``) and a redelivery
(``POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver``).

A test send goes out at once, through the same client and signer as every delivery, as a ``webhook.test`` event
(its own ``evt_`` id, ``data``: the webhook's id and a note), to the webhook whether or not it is enabled; it is
recorded as a delivery with ``is_test`` (one try, never retried, left out of the statistics).

A redelivery puts a finished delivery (``success`` or ``failed``) back in the queue as new: no tries, due now,
without an order to keep (it is not news any more, so it does not hold back the path's later events). A pending
delivery is left as it is; a test send is not redelivered (send another); an event no longer in the feed cannot be.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from scaivault.clock import utcnow
from scaivault.domain.errors import DeliveryNotFound, InvalidRequest, WebhookNotFound
from scaivault.ids import new_id
from scaivault.serialization import format_timestamp
from scaivault.webhooks.client import WebhookClient
from scaivault.webhooks.deliveries import DELIVERY_COLUMNS, delivery_document
from scaivault.webhooks.signing import sign
from scaivault.webhooks.targets import SigningSecrets

TEST_EVENT = "webhook.test"


class WebhookDeliveries:
    def __init__(
        self, pool: asyncpg.Pool, secrets: SigningSecrets, client: WebhookClient, *,
        wake_dispatcher: Callable[[], None] = lambda: None, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._secrets = secrets
        self._client = client
        self._wake_dispatcher = wake_dispatcher
        self._clock = clock

    async def send_test(
        self, tenant_id: str, webhook_id: str, *, identity_id: str, request_id: str | None
    ) -> dict[str, Any]:
        async with self._pool.acquire() as conn:
            webhook = await conn.fetchrow(
                """SELECT webhook_id, partner_id, url, secret_ciphertext, secret_key_id FROM scaivault_webhooks
                   WHERE tenant_id = $1 AND webhook_id = $2""",
                tenant_id, webhook_id,
            )
            if webhook is None:
                raise WebhookNotFound(webhook_id=webhook_id[:64])
            secret = await self._secrets.open(
                conn, ciphertext=webhook["secret_ciphertext"], data_key_id=webhook["secret_key_id"], owner=tenant_id,
                target_id=webhook_id,
            )
        at = self._clock()
        event_id = new_id("evt_")
        envelope = {
            "event_id": event_id, "event_type": TEST_EVENT, "timestamp": format_timestamp(at),
            "tenant_id": tenant_id, "partner_id": webhook["partner_id"], "identity_id": identity_id,
            "data": {"webhook_id": webhook_id, "message": "A test event sent from the ScaiVault API"},
            "request_id": request_id,
        }
        result = await self._client.send(webhook["url"], sign(envelope, secret, int(time.time())))
        delivery_id = new_id("del_")
        status = "success" if result.success else "failed"
        await self._pool.execute(
            """INSERT INTO scaivault_webhook_deliveries (delivery_id, target_kind, target_id, tenant_id, event_id,
                   event_type, ordering_key, is_test, status, attempts, last_attempt_at, response_code, error,
                   duration_ms, created_at, completed_at)
               VALUES ($1, 'webhook', $2, $3, $4, $5, $4, true, $6, 1, $7, $8, $9, $10, $7, $11)""",
            delivery_id, webhook_id, tenant_id, event_id, TEST_EVENT, status, at, result.response_code,
            result.error, result.duration_ms, self._clock(),
        )
        return {
            "delivery_id": delivery_id, "event_id": event_id, "status": status,
            "response_code": result.response_code, "duration_ms": result.duration_ms, "error": result.error,
        }

    async def redeliver(self, tenant_id: str, webhook_id: str, delivery_id: str) -> dict[str, Any]:
        async with self._pool.acquire() as conn, conn.transaction():
            known = await conn.fetchval(
                "SELECT true FROM scaivault_webhooks WHERE tenant_id = $1 AND webhook_id = $2", tenant_id, webhook_id
            )
            if known is None:
                raise WebhookNotFound(webhook_id=webhook_id[:64])
            delivery = await conn.fetchrow(
                """SELECT d.is_test, d.status, f.event_id IS NOT NULL AS retained
                   FROM scaivault_webhook_deliveries d LEFT JOIN scaivault_event_feed f ON f.event_id = d.event_id
                   WHERE d.target_kind = 'webhook' AND d.target_id = $1 AND d.delivery_id = $2
                   FOR UPDATE OF d""",
                webhook_id, delivery_id,
            )
            if delivery is None:
                raise DeliveryNotFound(delivery_id=delivery_id[:64])
            if delivery["is_test"]:
                raise InvalidRequest("A test send is not redelivered: send another test", delivery_id=delivery_id)
            if delivery["status"] != "pending":
                if not delivery["retained"]:
                    raise InvalidRequest(
                        "The event of this delivery is no longer retained", delivery_id=delivery_id
                    )
                await conn.execute(
                    """UPDATE scaivault_webhook_deliveries SET status = 'pending', attempts = 0, next_attempt_at = $2,
                           ordering_key = event_id, response_code = NULL, error = NULL, duration_ms = NULL,
                           completed_at = NULL
                       WHERE delivery_id = $1""",
                    delivery_id, self._clock(),
                )
            row = await conn.fetchrow(
                f"SELECT {DELIVERY_COLUMNS} FROM scaivault_webhook_deliveries WHERE delivery_id = $1",
                delivery_id,
            )
        self._wake_dispatcher()
        return delivery_document(row)
