"""Audit export jobs: the read model (inline: written in the transaction that appends the AuditExport events), its
queries, the reader the API lists and shows exports with, and the lookups the export commands make. Every query a
caller can reach is confined to one tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any

import asyncpg
from eventsourcing.utils import get_topic
from pydantic import Field

from projections.audit.queries import AuditFilter, audit_count
from projections.runner import Projection
from projections.secrets.queries import secret_metadata_row
from scaivault.database import Queryable
from scaivault.domain.audit_exports import (
    EXPORT_ID_PATTERN,
    AuditExport,
    valid_export_id,
)
from scaivault.domain.errors import ExportNotFound
from scaivault.domain.secrets import SecretAddress
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

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


class AuditExportsProjection(Projection):
    """The same projector as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

    name = "audit_exports"
    topics = frozenset(
        get_topic(cls)
        for cls in (AuditExport.Requested, AuditExport.Started, AuditExport.Completed, AuditExport.Failed)
    )
    tables = ("scaivault_audit_exports",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_audit_export(conn, domain_event)


class ExportsCursor(CursorState):
    before: Annotated[str, Field(pattern=f"^{EXPORT_ID_PATTERN.pattern}$")]


def export_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """An export as the API shows it: the destination's names (never credentials); the manifest once completed,
    the error once failed."""
    document: dict[str, Any] = {
        "export_id": row["export_id"],
        "status": row["status"],
        "format": row["format"],
        "from": row["range_from"],
        "to": row["range_to"],
        "filters": row["filters"],
        "destination": row["destination"],
        "estimated_records": row["estimated_records"],
        "attempts": row["attempts"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "failed_at": row["failed_at"],
    }
    if row["status"] == "completed":
        document["manifest"] = row["manifest"]
    if row["status"] == "failed":
        document["error"] = row["error"]
    return document


class AuditExportReader:
    """A tenant's exports, for the API."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, tenant_id: str, export_id: str) -> dict[str, Any]:
        """One export; another tenant's, or an id that is not an export id, is not found, just like a missing one."""
        row = await export_row(self._pool, tenant_id, export_id) if valid_export_id(export_id) else None
        if row is None:
            raise ExportNotFound(export_id=export_id[:64])
        return export_document(row)

    async def listing(self, tenant_id: str, *, cursor: str | None, limit: int) -> dict[str, Any]:
        """A page of the tenant's exports, newest first."""
        state = decode_cursor(cursor, ExportsCursor)
        rows = await export_rows(
            self._pool, tenant_id, before=state.before if state is not None else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(ExportsCursor(before=row["export_id"])))
        return {
            "exports": [export_document(row) for row in page.items],
            "cursor": page.cursor,
            "has_more": page.has_more,
        }


class AuditExportLookup:
    """What an export request looks up (``commands/audit_exports.py: ExportLookup``), in the command's transaction."""

    async def live_secret_exists(self, conn: asyncpg.Connection, address: SecretAddress) -> bool:
        row = await secret_metadata_row(conn, address.owner, address.path)
        return row is not None and row["deleted_at"] is None

    async def matching_entries(
        self, conn: asyncpg.Connection, tenant_id: str, filters: dict[str, Any], since: datetime, until: datetime
    ) -> int:
        return await audit_count(conn, tenant_id, AuditFilter.of(filters, since=since, until=until))
