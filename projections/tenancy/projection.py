"""The tenancy read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.tenancy.projector import TENANCY_EVENTS, project_tenancy


class TenancyProjection(Projection):
    name = "tenancy"
    topics = frozenset(get_topic(cls) for cls in TENANCY_EVENTS)
    tables = ("scaivault_partners", "scaivault_tenants")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_tenancy(conn, domain_event)
