"""The subscriptions read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.subscriptions.projector import SUBSCRIPTION_EVENTS, project_subscription_event


class SubscriptionsProjection(Projection):
    name = "subscriptions"
    topics = frozenset(get_topic(cls) for cls in SUBSCRIPTION_EVENTS)
    tables = ("scaivault_subscriptions",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_subscription_event(conn, domain_event)
