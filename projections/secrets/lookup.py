"""The secrets read model as commands ask it (``commands.ports.SecretLookup``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg


class PostgresSecretLookup:
    async def deletions_past_retention(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        rows = await conn.fetch(
            "SELECT stream_id FROM scaivault_secrets WHERE recoverable_until <= $1 ORDER BY recoverable_until LIMIT $2",
            at,
            limit,
        )
        return [row["stream_id"] for row in rows]
