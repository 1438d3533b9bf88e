"""The dynamic-secrets read models as a projection, for rebuilds and verification
(projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.dynamic.projector import DYNAMIC_EVENTS, project_dynamic_event
from projections.runner import Projection


class DynamicProjection(Projection):
    name = "dynamic"
    topics = frozenset(get_topic(cls) for cls in DYNAMIC_EVENTS)
    tables = ("scaivault_dynamic_engines", "scaivault_dynamic_roles", "scaivault_dynamic_leases",
              "scaivault_dynamic_lease_counts")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_dynamic_event(conn, domain_event)
