"""The identity mirror as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.identity.projector import IDENTITY_EVENTS, project_identity_event
from projections.runner import Projection


class IdentityProjection(Projection):
    name = "identity"
    topics = frozenset(get_topic(cls) for cls in IDENTITY_EVENTS)
    tables = (
        "scaivault_identity_partners",
        "scaivault_identity_tenants",
        "scaivault_identity_users",
        "scaivault_identity_groups",
        "scaivault_identity_members",
        "scaivault_identity_syncs",
    )

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_identity_event(conn, domain_event)
