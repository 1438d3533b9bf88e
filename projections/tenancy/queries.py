"""Queries over the tenancy read model."""

from __future__ import annotations

from scaivault.database import Queryable


async def tenant_partner(conn: Queryable, tenant_id: str) -> str | None:
    return await conn.fetchval("SELECT partner_id FROM scaivault_tenants WHERE tenant_id = $1", tenant_id)


async def partner_exists(conn: Queryable, partner_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM scaivault_partners WHERE partner_id = $1", partner_id))
