"""The ACME read models as the commands and the order worker ask them (``commands/acme.py: AcmeLookup``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from scaivault.database import Queryable


class PostgresAcmeLookup:
    async def renewals_due(self, conn: Queryable, at: datetime, limit: int) -> list[str]:
        rows = await conn.fetch(
            """SELECT order_id FROM scaivault_acme_orders WHERE renew_at <= $1 ORDER BY renew_at LIMIT $2""",
            at, limit,
        )
        return [str(row["order_id"]) for row in rows]

    async def orders_due(self, conn: Queryable, at: datetime, challenge_types: Sequence[str], limit: int) -> list[str]:
        """Orders a worker should drive now: not ended, and not waiting for a retry."""
        rows = await conn.fetch(
            """SELECT order_id FROM scaivault_acme_orders
               WHERE next_attempt_at <= $1 AND challenge_type = ANY($2::text[])
               ORDER BY next_attempt_at LIMIT $3""",
            at, list(challenge_types), limit,
        )
        return [str(row["order_id"]) for row in rows]
