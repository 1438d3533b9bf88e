"""The webhook sink of the fan-out projection: each new public event becomes one pending delivery per enabled
webhook of its tenant that asks for it (``events``) and whose filters it passes, or that the event is routed to
(``FeedEntry.routed_to``: a rotation policy's ``webhook_ids``), in the projection's tracking transaction (so a
delivery is recorded exactly once with the position that produced it). A webhook gets one delivery per event, however
many reasons it has to get it. A webhook gets only events committed from its creation on (``since_creation``), even
when the fan-out reaches older ones after it was created.

The tenant's webhooks are read once per batch, matched in memory (the same rules as the API documents,
``scaivault.domain.webhooks.wants``), and every delivery of the batch is queued by one statement. Deliveries of one
webhook for the same path go out in feed order (``FeedEntry.ordering_key``; ``scaivault.webhooks.outbox``).
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from projections.fanout.sinks import FeedEntry, created_position, since_creation
from scaivault.domain.webhooks import Facets, wants
from scaivault.webhooks.outbox import delivery_rows, queue_deliveries

WEBHOOK = "webhook"


class WebhookSink:
    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        tenants = list({entry.tenant_id for entry in entries if entry.tenant_id is not None})
        if not tenants:
            return
        webhooks = await conn.fetch(
            f"""SELECT webhook_id, tenant_id, events, filters, {created_position("stream_id")} AS created_position
                FROM scaivault_webhooks WHERE tenant_id = ANY($1::text[]) AND enabled""",
            tenants,
        )
        if not webhooks:
            return
        by_tenant: dict[str, list[asyncpg.Record]] = {}
        for webhook in webhooks:
            by_tenant.setdefault(webhook["tenant_id"], []).append(webhook)
        rows: list[tuple[str, str, str, str, int, str]] = []
        for entry in entries:
            facets = Facets(entry.path, entry.secret_type, entry.tags)
            for webhook in by_tenant.get(entry.tenant_id or "", ()):
                if not since_creation(entry, webhook["created_position"]):
                    continue
                if webhook["webhook_id"] in entry.routed_to or wants(
                    webhook["events"], webhook["filters"], entry.event_type, facets
                ):
                    rows.append((
                        webhook["webhook_id"], webhook["tenant_id"], entry.event_id, entry.event_type,
                        entry.position, entry.ordering_key,
                    ))
        await queue_deliveries(conn, WEBHOOK, delivery_rows(rows))
