"""A tenant's audit exports as the API lists and shows them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any

import asyncpg
from pydantic import Field

from projections.audit_exports.queries import export_row, export_rows
from scaivault.domain.audit_exports import EXPORT_ID_PATTERN, valid_export_id
from scaivault.domain.errors import ExportNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of


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
        return page.document("exports", export_document)
