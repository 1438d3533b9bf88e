"""The dynamic-secrets read models as commands ask them (``commands.ports.DynamicLookup``)."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from projections.dynamic import queries
from scaivault.database import Queryable


class PostgresDynamicLookup:
    async def engine_id(self, conn: Queryable, tenant_id: str, name: str) -> str | None:
        row = await queries.engine_row(conn, tenant_id, name)
        return None if row is None else str(row["engine_id"])

    async def open_leases(self, conn: Queryable, tenant_id: str, engine_id: str, role_name: str) -> tuple[int, int]:
        return await queries.open_leases(conn, tenant_id, engine_id, role_name)

    async def open_leases_of_engine(self, conn: Queryable, engine_id: str, role_name: str | None = None) -> int:
        return await queries.open_leases_of_engine(conn, engine_id, role_name)

    async def role_exists(self, conn: Queryable, engine_id: str, role_name: str) -> bool:
        return await queries.role_row(conn, engine_id, role_name) is not None

    async def lease_state(self, conn: Queryable, tenant_id: str, lease_id: str) -> str | None:
        return await queries.lease_state(conn, tenant_id, lease_id)

    async def lock_lease(self, conn: asyncpg.Connection, tenant_id: str, lease_id: str) -> UUID | None:
        row = await queries.lock_lease(conn, tenant_id, lease_id)
        return None if row is None else row["stream_id"]

    async def claim_due(self, conn: asyncpg.Connection, now: datetime, limit: int) -> list[UUID]:
        return [row["stream_id"] for row in await queries.claim_due(conn, now, limit)]

    async def claim_prefix(
        self, conn: asyncpg.Connection, tenant_id: str, engine: str, role: str | None, limit: int
    ) -> list[UUID]:
        return [row["stream_id"] for row in await queries.claim_prefix(conn, tenant_id, engine, role, limit)]

    async def next_due(self, conn: Queryable) -> datetime | None:
        return await queries.next_due(conn)

    async def engines_due_root_rotation(self, conn: Queryable, now: datetime, limit: int) -> list[tuple[str, str]]:
        """(tenant_id, engine name) of engines whose root credentials are due for rotation."""
        return [(row["tenant_id"], row["name"]) for row in await queries.engines_due_root_rotation(conn, now, limit)]
