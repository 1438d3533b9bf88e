"""The rotation read models as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.rotation.projector import ROTATION_EVENTS, project_rotation_event
from projections.runner import Projection


class RotationProjection(Projection):
    name = "rotation"
    topics = frozenset(get_topic(cls) for cls in ROTATION_EVENTS)
    tables = ("scaivault_rotation_policies", "scaivault_secret_schedules", "scaivault_rotation_history")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_rotation_event(conn, domain_event)
