"""The counts quotas bound (``commands.ports.QuotaLookup``), read in the creating command's transaction from the
inline read models: a deleted webhook or subscription has no row there, so it does not count."""

from __future__ import annotations

import asyncpg


class PostgresQuotaLookup:
    async def webhooks(self, conn: asyncpg.Connection, tenant_id: str) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM scaivault_webhooks WHERE tenant_id = $1", tenant_id))

    async def subscriptions(self, conn: asyncpg.Connection, tenant_id: str, identity_id: str) -> tuple[int, int]:
        row = await conn.fetchrow(
            """SELECT count(*) AS tenant,
                      count(*) FILTER (WHERE lower(btrim(identity_id)) = lower(btrim($2))) AS identity
               FROM scaivault_subscriptions WHERE tenant_id = $1""",
            tenant_id, identity_id,
        )
        assert row is not None
        return int(row["tenant"]), int(row["identity"])
