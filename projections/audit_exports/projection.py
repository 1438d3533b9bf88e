"""The audit exports read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.audit_exports.projector import AUDIT_EXPORT_EVENTS, project_audit_export
from projections.runner import Projection


class AuditExportsProjection(Projection):
    name = "audit_exports"
    topics = frozenset(get_topic(cls) for cls in AUDIT_EXPORT_EVENTS)
    tables = ("scaivault_audit_exports",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_audit_export(conn, domain_event)
