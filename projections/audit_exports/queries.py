"""Queries over the audit exports read model."""

from __future__ import annotations

import asyncpg

from scaivault.database import Queryable

_COLUMNS = """export_id, tenant_id, partner_id, status, format, range_from, range_to, filters, destination,
    estimated_records, attempts, manifest, error, created_at, created_by, request_id, started_at, completed_at,
    failed_at, updated_at"""


async def export_row(conn: Queryable, tenant_id: str, export_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM scaivault_audit_exports WHERE tenant_id = $1 AND export_id = $2", tenant_id, export_id
    )


async def export_rows(conn: Queryable, tenant_id: str, *, before: str | None, limit: int) -> list[asyncpg.Record]:
    """The tenant's exports, newest first (export ids sort by creation time); keyset pagination on the id."""
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM scaivault_audit_exports
            WHERE tenant_id = $1 AND ($2::text IS NULL OR export_id < $2) ORDER BY export_id DESC LIMIT $3""",
        tenant_id,
        before,
        limit,
    )


async def open_export_ids(conn: Queryable, limit: int = 100) -> list[str]:
    """Jobs not finished yet (pending, or running when a process died during them), oldest first."""
    rows = await conn.fetch(
        """SELECT export_id FROM scaivault_audit_exports WHERE status IN ('pending', 'running')
           ORDER BY export_id LIMIT $1""",
        limit,
    )
    return [row["export_id"] for row in rows]
