"""The DNS providers read model as commands ask it (``commands.ports.DnsProviderLookup``)."""

from __future__ import annotations

import asyncpg

from projections.dns_providers import queries


class PostgresDnsProviderLookup:
    async def name_taken(
        self, conn: asyncpg.Connection, tenant_id: str, name: str, *, other_than: str | None = None
    ) -> bool:
        return await queries.name_taken(conn, tenant_id, name, other_than=other_than)

    async def active_zones(
        self, conn: asyncpg.Connection, tenant_id: str, *, other_than: str | None = None
    ) -> dict[str, list[str]]:
        return await queries.active_zones(conn, tenant_id, other_than=other_than)
