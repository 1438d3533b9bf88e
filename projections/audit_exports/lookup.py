"""What an export request looks up (``commands.ports.AuditExportLookup``), in the command's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from projections.audit.queries import AuditFilter, audit_count
from projections.secrets.queries import secret_metadata_row
from scaivault.domain.secrets import SecretAddress


class PostgresAuditExportLookup:
    async def live_secret_exists(self, conn: asyncpg.Connection, address: SecretAddress) -> bool:
        row = await secret_metadata_row(conn, address.owner, address.path)
        return row is not None and row["deleted_at"] is None

    async def matching_entries(
        self, conn: asyncpg.Connection, tenant_id: str, filters: dict[str, Any], since: datetime, until: datetime
    ) -> int:
        return await audit_count(conn, tenant_id, AuditFilter.of(filters, since=since, until=until))
