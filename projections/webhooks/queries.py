"""Queries of the webhooks read model and of their deliveries, always confined to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from scaivault.database import Queryable
from scaivault.ids import ulid_text
from scaivault.webhooks.deliveries import DELIVERY_COLUMNS

_WEBHOOK_COLUMNS = """webhook_id, tenant_id, name, url, events, filters, enabled, previous_secret_expires_at,
    created_at, created_by, updated_at, updated_by"""


def first_delivery_id_since(at: datetime) -> str:
    """The smallest delivery id made at or after ``at`` (ids begin with their creation time, like ULIDs)."""
    return "del_" + ulid_text((int(at.timestamp() * 1000) & (2**48 - 1)) << 80)


async def webhook_rows(conn: Queryable, tenant_id: str, *, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_WEBHOOK_COLUMNS} FROM scaivault_webhooks
            WHERE tenant_id = $1 AND webhook_id > coalesce($2, '') ORDER BY webhook_id LIMIT $3""",
        tenant_id, after, limit,
    )


async def webhook_row(conn: Queryable, tenant_id: str, webhook_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_WEBHOOK_COLUMNS} FROM scaivault_webhooks WHERE tenant_id = $1 AND webhook_id = $2",
        tenant_id, webhook_id,
    )


async def delivery_statistics(
    conn: Queryable, webhook_ids: Sequence[str], *, since: datetime
) -> dict[str, asyncpg.Record]:
    """Per webhook, its deliveries made since ``since`` (test sends left out): attempted, succeeded, failed (dead
    letters), retrying, and the mean duration of their last attempts."""
    rows = await conn.fetch(
        """SELECT target_id,
                  count(*) FILTER (WHERE attempts > 0) AS attempted,
                  count(*) FILTER (WHERE status = 'success') AS succeeded,
                  count(*) FILTER (WHERE status = 'failed') AS failed,
                  count(*) FILTER (WHERE status = 'pending' AND attempts > 0) AS retrying,
                  avg(duration_ms) AS avg_latency_ms
           FROM scaivault_webhook_deliveries
           WHERE target_kind = 'webhook' AND target_id = ANY($1::text[]) AND delivery_id >= $2 AND NOT is_test
           GROUP BY target_id""",
        list(webhook_ids), first_delivery_id_since(since),
    )
    return {row["target_id"]: row for row in rows}


async def last_delivery(conn: Queryable, webhook_id: str) -> asyncpg.Record | None:
    """The webhook's latest delivery that was attempted (test sends included)."""
    return await conn.fetchrow(
        f"""SELECT {DELIVERY_COLUMNS} FROM scaivault_webhook_deliveries
            WHERE target_kind = 'webhook' AND target_id = $1 AND last_attempt_at IS NOT NULL
            ORDER BY delivery_id DESC LIMIT 1""",
        webhook_id,
    )


async def delivery_rows(
    conn: Queryable, webhook_id: str, *, status: str | None, before: str | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first, before ``before`` (keyset pagination)."""
    return await conn.fetch(
        f"""SELECT {DELIVERY_COLUMNS} FROM scaivault_webhook_deliveries
            WHERE target_kind = 'webhook' AND target_id = $1 AND ($2::text IS NULL OR status = $2)
              AND ($3::text IS NULL OR delivery_id < $3)
            ORDER BY delivery_id DESC LIMIT $4""",
        webhook_id, status, before, limit,
    )
