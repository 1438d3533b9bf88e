"""The tenancy read model as commands ask it (``commands.ports.TenancyLookup``), in their transaction."""

from __future__ import annotations

import asyncpg

from projections.tenancy import queries


class PostgresTenancyLookup:
    async def partner_of(self, conn: asyncpg.Connection, tenant_id: str) -> str | None:
        return await queries.tenant_partner(conn, tenant_id)

    async def partner_exists(self, conn: asyncpg.Connection, partner_id: str) -> bool:
        return await queries.partner_exists(conn, partner_id)
