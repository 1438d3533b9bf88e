"""Reading webhooks: the tenant's list, one webhook with its delivery statistics, and its deliveries.

A webhook of another tenant answers exactly like a missing one (``webhook_not_found``). No answer holds a signing
secret: only ``previous_secret_expires_at`` tells that a rotation's overlap is running.

Health (``status``), from the webhook's deliveries of the last 24 hours (test sends left out): ``failing`` when
fewer than half of those that finished succeeded, ``degraded`` when fewer than 95% did or some delivery is being
retried, else ``healthy`` (also with no deliveries yet).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.webhooks import queries
from scaivault.clock import utcnow
from scaivault.domain.errors import WebhookNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of
from scaivault.webhooks.deliveries import delivery_document

Row = Mapping[str, Any]
DeliveryStatus = Literal["pending", "success", "failed"]
WINDOW = timedelta(hours=24)
HEALTHY_RATE = 0.95
FAILING_RATE = 0.5


class WebhookListCursor(CursorState):
    v: Literal[1]
    after: str = Field(max_length=64)


class DeliveryListCursor(CursorState):
    v: Literal[1]
    webhook_id: str = Field(max_length=64)
    status: DeliveryStatus | None
    before: str = Field(max_length=64)


def health(stats: Row | None) -> str:
    if stats is None:
        return "healthy"
    finished = stats["succeeded"] + stats["failed"]
    rate = stats["succeeded"] / finished if finished else 1.0
    if rate < FAILING_RATE:
        return "failing"
    if rate < HEALTHY_RATE or stats["retrying"]:
        return "degraded"
    return "healthy"


def statistics(stats: Row | None) -> dict[str, Any]:
    """``success_rate_24h``: a fraction of the finished deliveries; null (as ``avg_latency_ms``) with none."""
    if stats is None:
        return {"deliveries_24h": 0, "success_rate_24h": None, "avg_latency_ms": None}
    finished = stats["succeeded"] + stats["failed"]
    latency = stats["avg_latency_ms"]
    return {
        "deliveries_24h": stats["attempted"],
        "success_rate_24h": round(stats["succeeded"] / finished, 4) if finished else None,
        "avg_latency_ms": None if latency is None else int(round(latency)),
    }


def _summary(row: Row, at: datetime, stats: Row | None) -> dict[str, Any]:
    expires = row["previous_secret_expires_at"]
    return {
        "id": row["webhook_id"],
        "name": row["name"],
        "url": row["url"],
        "events": row["events"],
        "filters": row["filters"],
        "enabled": row["enabled"],
        "status": health(stats),
        "previous_secret_expires_at": expires if expires is not None and expires > at else None,
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


class WebhookReader:
    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._clock = clock

    async def webhooks(self, tenant_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
        state = decode_cursor(cursor, WebhookListCursor)
        rows = await queries.webhook_rows(
            self._pool, tenant_id, after=state.after if state else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(WebhookListCursor(v=1, after=row["webhook_id"])))
        at = self._clock()
        stats = await queries.delivery_statistics(
            self._pool, [row["webhook_id"] for row in page.items], since=at - WINDOW
        )
        return page.document("webhooks", lambda row: _summary(row, at, stats.get(row["webhook_id"])))

    async def webhook(self, tenant_id: str, webhook_id: str) -> dict[str, Any]:
        """One webhook with its ``statistics`` and ``last_delivery``."""
        row = await self._visible(tenant_id, webhook_id)
        at = self._clock()
        stats = (await queries.delivery_statistics(self._pool, [webhook_id], since=at - WINDOW)).get(webhook_id)
        last = await queries.last_delivery(self._pool, webhook_id)
        return {
            **_summary(row, at, stats),
            "statistics": statistics(stats),
            "last_delivery": None if last is None else {
                "id": last["delivery_id"], "timestamp": last["last_attempt_at"], "status": last["status"],
                "response_code": last["response_code"],
            },
        }

    async def deliveries(
        self, tenant_id: str, webhook_id: str, *, status: DeliveryStatus | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """Newest first."""
        await self._visible(tenant_id, webhook_id)
        state = decode_cursor(cursor, DeliveryListCursor, expected={"webhook_id": webhook_id, "status": status})
        rows = await queries.delivery_rows(
            self._pool, webhook_id, status=status, before=state.before if state else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(
            DeliveryListCursor(v=1, webhook_id=webhook_id, status=status, before=row["delivery_id"])
        ))
        return page.document("deliveries", delivery_document)

    async def _visible(self, tenant_id: str, webhook_id: str) -> Row:
        row = await queries.webhook_row(self._pool, tenant_id, webhook_id)
        if row is None:
            raise WebhookNotFound(webhook_id=webhook_id[:64])
        return row
