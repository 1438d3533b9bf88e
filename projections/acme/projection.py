"""The ACME read models as a projection, for rebuilds and verification (projections/maintenance/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.acme.projector import ACME_EVENTS, project_acme_event
from projections.runner import Projection


class AcmeProjection(Projection):
    name = "acme"
    topics = frozenset(get_topic(cls) for cls in ACME_EVENTS)
    tables = ("scaivault_acme_accounts", "scaivault_acme_orders", "scaivault_acme_http01_tokens")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_acme_event(conn, domain_event)
