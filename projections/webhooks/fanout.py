"""The webhook sink of the fan-out projection: each new public event becomes one pending delivery per enabled
webhook of its tenant that asks for it (``events``) and whose filters it passes, or that the event is routed to
(``FeedEntry.routed_to``: a rotation policy's ``webhook_ids``), in the projection's tracking transaction (so a
delivery is recorded exactly once with the position that produced it). A webhook gets one delivery per event, however
many reasons it has to get it.

The tenant's webhooks are read once per batch, matched in memory (the same rules as the API documents,
``scaivault.domain.webhooks.wants``), and every delivery of the batch is inserted by one statement. Deliveries of one
webhook for the same path go out in feed order (``ordering_key``: the path); events without a path have no order
to keep (their key is their own event id).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from projections.fanout.sinks import FeedEntry
from scaivault.domain.webhooks import Facets, wants
from scaivault.ids import new_id

WEBHOOK = "webhook"


def ordering_key(entry: FeedEntry) -> str:
    return entry.path if entry.path is not None else entry.event_id


class WebhookSink:
    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        tenants = list({entry.tenant_id for entry in entries if entry.tenant_id is not None})
        if not tenants:
            return
        webhooks = await conn.fetch(
            """SELECT webhook_id, tenant_id, events, filters FROM scaivault_webhooks
               WHERE tenant_id = ANY($1::text[]) AND enabled""",
            tenants,
        )
        if not webhooks:
            return
        by_tenant: dict[str, list[asyncpg.Record]] = {}
        for webhook in webhooks:
            by_tenant.setdefault(webhook["tenant_id"], []).append(webhook)
        rows: list[tuple[str, str, str, str, str, int, str]] = []
        for entry in entries:
            facets = Facets(entry.path, entry.secret_type, entry.tags)
            for webhook in by_tenant.get(entry.tenant_id or "", ()):
                if webhook["webhook_id"] in entry.routed_to or wants(
                    webhook["events"], webhook["filters"], entry.event_type, facets
                ):
                    rows.append((
                        new_id("del_"), webhook["webhook_id"], webhook["tenant_id"], entry.event_id,
                        entry.event_type, entry.position, ordering_key(entry),
                    ))
        if rows:
            await insert_deliveries(conn, WEBHOOK, rows)


async def insert_deliveries(
    conn: asyncpg.Connection, target_kind: str, rows: Sequence[tuple[str, str, str, str, str, int, str]]
) -> None:
    """Pending deliveries, due now: (delivery id, target id, tenant, event id, event type, feed position,
    ordering key) each. A replayed batch finds its rows there already (one per target and event)."""
    columns = list(zip(*rows, strict=True))
    await conn.execute(
        """INSERT INTO scaivault_webhook_deliveries (delivery_id, target_kind, target_id, tenant_id, event_id,
               event_type, feed_position, ordering_key, status, next_attempt_at, created_at)
           SELECT d, $1, t, tn, e, et, p, k, 'pending', now(), now()
           FROM unnest($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::text[])
                AS u(d, t, tn, e, et, p, k)
           ON CONFLICT (target_kind, target_id, event_id) DO NOTHING""",
        target_kind, *(list(column) for column in columns),
    )
