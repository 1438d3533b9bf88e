"""Reading subscriptions: the listing and one subscription.

A caller sees its own subscriptions; the tenant's administrators see all of the tenant's. Any other subscription
answers exactly like a missing one (``subscription_not_found``). A push subscription's signing secret is never shown:
``delivery`` has ``type``, ``url`` (push) or ``buffer_size`` (polling). A polling subscription's ``queue`` counts,
for a caller who does not administer the tenant, only entries it may list (``visibility.py``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.subscriptions import queries
from projections.subscriptions.visibility import EntryVisibility, QueueCounts, caller_administers
from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.domain.errors import SubscriptionNotFound
from scaivault.domain.subscriptions import POLLING, same_identity
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]


class SubscriptionListCursor(CursorState):
    v: Literal[1]
    tenant_id: str
    owner: str | None
    after: str = Field(max_length=64)


def delivery_document(row: Row) -> dict[str, Any]:
    if row["delivery_type"] == POLLING:
        return {"type": POLLING, "buffer_size": row["buffer_size"]}
    return {"type": row["delivery_type"], "url": row["url"]}


def subscription_document(row: Row, counts: QueueCounts | None = None) -> dict[str, Any]:
    """``counts``: the queue counts to show instead of the totals the row holds."""
    document = {
        "id": row["subscription_id"],
        "name": row["name"],
        "status": row["status"],
        "identity_id": row["identity_id"],
        "paths": list(row["paths"]),
        "events": list(row["events"]),
        "filters": row["filters"],
        "delivery": delivery_document(row),
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }
    if row["delivery_type"] == POLLING:
        if counts is None:
            counts = QueueCounts(row["queued"], row["dropped_events"], row["last_dropped_at"])
        document["queue"] = {
            "queued": counts.queued, "dropped_events": counts.dropped_events,
            "last_dropped_at": counts.last_dropped_at,
        }
    return document


class SubscriptionReader:
    def __init__(self, pool: asyncpg.Pool, authorizer: Authorizer) -> None:
        self._pool = pool
        self._visibility = EntryVisibility(pool, authorizer)

    async def subscriptions(self, caller: Caller, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page in id order (ids sort by creation time): the caller's own, or the tenant's for its administrators."""
        tenant_id = caller.require_tenant()
        owner = None if caller_administers(caller) else caller.identity_id
        state = decode_cursor(cursor, SubscriptionListCursor, expected={"tenant_id": tenant_id, "owner": owner})
        rows = await queries.subscription_rows(
            self._pool, tenant_id, owner, after=state.after if state else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(SubscriptionListCursor(
            v=1, tenant_id=tenant_id, owner=owner, after=row["subscription_id"]
        )))
        counts = await self._counts(caller, page.items)
        return page.document(
            "subscriptions", lambda row: subscription_document(row, counts.get(row["subscription_id"]))
        )

    async def subscription(self, caller: Caller, subscription_id: str) -> dict[str, Any]:
        row = await self.visible_row(caller, subscription_id)
        counts = await self._counts(caller, [row])
        return subscription_document(row, counts.get(row["subscription_id"]))

    async def _counts(self, caller: Caller, rows: Sequence[Row]) -> dict[str, QueueCounts]:
        """What the caller is shown of the polling queues among ``rows``, by subscription id; none for an
        administrator (the totals of the rows are shown)."""
        polled = [row["subscription_id"] for row in rows if row["delivery_type"] == POLLING]
        return await self._visibility.counts(caller, polled) or {}

    async def visible_row(self, caller: Caller, subscription_id: str) -> Row:
        """The subscription's row, if the caller owns it or administers its tenant."""
        tenant_id = caller.require_tenant()
        row = await queries.subscription_row(self._pool, tenant_id, subscription_id)
        if row is None or not (same_identity(row["identity_id"], caller.identity_id) or caller_administers(caller)):
            raise SubscriptionNotFound(subscription_id=subscription_id[:64])
        return row
