"""The policies read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.policies.projector import POLICY_EVENTS, project_policy_event
from projections.runner import Projection


class PoliciesProjection(Projection):
    name = "policies"
    topics = frozenset(get_topic(cls) for cls in POLICY_EVENTS)
    tables = ("scaivault_policies", "scaivault_policy_bindings")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_policy_event(conn, domain_event)
