"""The webhooks read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.webhooks.projector import WEBHOOK_EVENTS, project_webhook_event


class WebhooksProjection(Projection):
    name = "webhooks"
    topics = frozenset(get_topic(cls) for cls in WEBHOOK_EVENTS)
    tables = ("scaivault_webhooks",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_webhook_event(conn, domain_event)
