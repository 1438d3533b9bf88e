"""The webhooks read model as commands ask it (``commands.ports.WebhookLookup``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


class PostgresWebhookLookup:
    async def previous_secrets_expired(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        rows = await conn.fetch(
            """SELECT stream_id FROM scaivault_webhooks
               WHERE previous_secret_expires_at <= $1 ORDER BY previous_secret_expires_at LIMIT $2""",
            at, limit,
        )
        return [row["stream_id"] for row in rows]
