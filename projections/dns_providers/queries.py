"""Queries of the DNS providers read model, always confined to one tenant."""

from __future__ import annotations

import asyncpg

from scaivault.database import Queryable

# What answers show: never the sealed credentials.
_COLUMNS = """provider_id, tenant_id, name, provider_type, description, config, managed_zones, is_active,
    credential_fields, created_at, created_by, updated_at, updated_by"""
# What opening a provider's credentials needs.
_SEALED_COLUMNS = "provider_id, tenant_id, provider_type, config, managed_zones, credentials_ciphertext, " \
    "credentials_key_id"


async def provider_rows(
    conn: Queryable, tenant_id: str, *, provider_type: str | None, active_only: bool, after: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM scaivault_dns_providers
            WHERE tenant_id = $1 AND provider_id > coalesce($2, '') AND ($3::text IS NULL OR provider_type = $3)
              AND (NOT $4 OR is_active)
            ORDER BY provider_id LIMIT $5""",
        tenant_id, after, provider_type, active_only, limit,
    )


async def provider_row(conn: Queryable, tenant_id: str, provider_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM scaivault_dns_providers WHERE tenant_id = $1 AND provider_id = $2",
        tenant_id, provider_id,
    )


async def active_sealed_rows(conn: Queryable, tenant_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {_SEALED_COLUMNS} FROM scaivault_dns_providers WHERE tenant_id = $1 AND is_active",
        tenant_id,
    )


async def name_taken(conn: Queryable, tenant_id: str, name: str, *, other_than: str | None) -> bool:
    return bool(await conn.fetchval(
        """SELECT EXISTS (SELECT 1 FROM scaivault_dns_providers
                          WHERE tenant_id = $1 AND name = $2 AND provider_id <> coalesce($3, ''))""",
        tenant_id, name, other_than,
    ))


async def active_zones(conn: Queryable, tenant_id: str, *, other_than: str | None) -> dict[str, list[str]]:
    rows = await conn.fetch(
        """SELECT provider_id, managed_zones FROM scaivault_dns_providers
           WHERE tenant_id = $1 AND is_active AND provider_id <> coalesce($2, '')""",
        tenant_id, other_than,
    )
    return {row["provider_id"]: list(row["managed_zones"]) for row in rows}
