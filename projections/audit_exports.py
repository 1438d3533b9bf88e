"""Audit export jobs read model (inline: written in the transaction that appends the AuditExport events), and its
queries. Every query a caller can reach is confined to one tenant."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from scaivault.domain.audit_exports import AuditExport

Executor = asyncpg.Connection | asyncpg.Pool

_COLUMNS = """export_id, tenant_id, partner_id, status, format, range_from, range_to, filters, destination,
    estimated_records, attempts, manifest, error, created_at, created_by, request_id, started_at, completed_at,
    failed_at, updated_at"""


async def project_audit_export(conn: asyncpg.Connection, domain_event: Any) -> None:
    if isinstance(domain_event, AuditExport.Requested):
        e = domain_event
        await conn.execute(
            """INSERT INTO scaivault_audit_exports (export_id, stream_id, tenant_id, partner_id, status, format,
                   range_from, range_to, filters, destination, estimated_records, created_at, created_by,
                   request_id, updated_at)
               VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $11)""",
            e.export_id,
            e.originator_id,
            e.tenant_id,
            e.partner_id,
            e.format,
            e.since,
            e.until,
            e.filters,
            e.destination,
            e.estimated_records,
            e.at,
            e.actor,
            e.request_id,
        )
    elif isinstance(domain_event, AuditExport.Started):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'running', attempts = $2, started_at = $3, updated_at = $3
               WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.attempt,
            domain_event.at,
        )
    elif isinstance(domain_event, AuditExport.Completed):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'completed', manifest = $2, completed_at = $3,
                   updated_at = $3 WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.manifest,
            domain_event.at,
        )
    elif isinstance(domain_event, AuditExport.Failed):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'failed', error = $2, failed_at = $3, updated_at = $3
               WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.error,
            domain_event.at,
        )


async def export_row(conn: Executor, tenant_id: str, export_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM scaivault_audit_exports WHERE tenant_id = $1 AND export_id = $2", tenant_id, export_id
    )


async def export_rows(conn: Executor, tenant_id: str, *, before: str | None, limit: int) -> list[asyncpg.Record]:
    """The tenant's exports, newest first (export ids sort by creation time); keyset pagination on the id."""
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM scaivault_audit_exports
            WHERE tenant_id = $1 AND ($2::text IS NULL OR export_id < $2) ORDER BY export_id DESC LIMIT $3""",
        tenant_id,
        before,
        limit,
    )


async def open_export_ids(conn: Executor, limit: int = 100) -> list[str]:
    """Jobs not finished yet (pending, or running when a process died during them), oldest first."""
    rows = await conn.fetch(
        """SELECT export_id FROM scaivault_audit_exports WHERE status IN ('pending', 'running')
           ORDER BY export_id LIMIT $1""",
        limit,
    )
    return [row["export_id"] for row in rows]


class AuditExportsProjection(Projection):
    """The same projector as a projection, for rebuilds and verification (projections/rebuild.py)."""

    name = "audit_exports"
    topics = frozenset(
        get_topic(cls)
        for cls in (AuditExport.Requested, AuditExport.Started, AuditExport.Completed, AuditExport.Failed)
    )
    tables = ("scaivault_audit_exports",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_audit_export(conn, domain_event)
