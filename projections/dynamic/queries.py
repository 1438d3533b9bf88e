"""Queries of the dynamic-secrets read models, always confined to one tenant (but the expiry worker's queue, which
serves every tenant)."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from scaivault.database import Queryable

ENGINE_COLUMNS = """engine_id, stream_id, tenant_id, name, engine_type, description, config, default_ttl, max_ttl,
    root_rotation_period, ca_public_key, root_rotated_at, created_at, created_by, updated_at, updated_by"""
LEASE_COLUMNS = """lease_id, stream_id, tenant_id, engine_id, engine_name, engine_type, role_name, username,
    requested_by, issued_at, expires_at, max_expires_at, renewable, state, attempts, last_error, next_attempt_at,
    revoke_reason, revoked_at, updated_at"""


async def engine_row(conn: Queryable, tenant_id: str, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {ENGINE_COLUMNS} FROM scaivault_dynamic_engines WHERE tenant_id = $1 AND name = $2", tenant_id, name,
    )


async def engine_rows(
    conn: Queryable, tenant_id: str, *, engine_type: str | None, after: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {ENGINE_COLUMNS} FROM scaivault_dynamic_engines
            WHERE tenant_id = $1 AND name > coalesce($2, '') AND ($3::text IS NULL OR engine_type = $3)
            ORDER BY name LIMIT $4""",
        tenant_id, after, engine_type, limit,
    )


async def role_rows(conn: Queryable, engine_id: str) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT name, role, updated_at, updated_by FROM scaivault_dynamic_roles WHERE engine_id = $1 ORDER BY name",
        engine_id,
    )


async def role_row(conn: Queryable, engine_id: str, name: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT name, role, updated_at, updated_by FROM scaivault_dynamic_roles WHERE engine_id = $1 AND name = $2",
        engine_id, name,
    )


async def lease_row(conn: Queryable, tenant_id: str, lease_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {LEASE_COLUMNS} FROM scaivault_dynamic_leases WHERE tenant_id = $1 AND lease_id = $2",
        tenant_id, lease_id,
    )


async def lease_rows(
    conn: Queryable, tenant_id: str, *, engine: str | None, role: str | None, states: list[str],
    requested_by: str | None, after: str | None, limit: int,
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {LEASE_COLUMNS} FROM scaivault_dynamic_leases
            WHERE tenant_id = $1 AND lease_id > coalesce($2, '') AND ($3::text IS NULL OR engine_name = $3)
              AND ($4::text IS NULL OR role_name = $4) AND state = ANY($5::text[])
              AND ($6::text IS NULL OR requested_by = $6)
            ORDER BY lease_id LIMIT $7""",
        tenant_id, after, engine, role, states, requested_by, limit,
    )


async def open_leases(conn: Queryable, tenant_id: str, engine_id: str, role_name: str) -> tuple[int, int]:
    """Leases not yet revoked: of the role, and of the whole tenant."""
    row = await conn.fetchrow(
        """SELECT coalesce(sum(open_leases) FILTER (WHERE engine_id = $2 AND role_name = $3), 0) AS role,
                  coalesce(sum(open_leases), 0) AS tenant
           FROM scaivault_dynamic_lease_counts WHERE tenant_id = $1""",
        tenant_id, engine_id, role_name,
    )
    assert row is not None
    return int(row["role"]), int(row["tenant"])


async def open_leases_of_engine(conn: Queryable, engine_id: str, role_name: str | None = None) -> int:
    return int(await conn.fetchval(
        """SELECT coalesce(sum(open_leases), 0) FROM scaivault_dynamic_lease_counts
           WHERE engine_id = $1 AND ($2::text IS NULL OR role_name = $2)""",
        engine_id, role_name,
    ))


async def lease_state(conn: Queryable, tenant_id: str, lease_id: str) -> str | None:
    value = await conn.fetchval(
        "SELECT state FROM scaivault_dynamic_leases WHERE tenant_id = $1 AND lease_id = $2 FOR SHARE",
        tenant_id, lease_id,
    )
    return None if value is None else str(value)


async def lock_lease(conn: asyncpg.Connection, tenant_id: str, lease_id: str) -> asyncpg.Record | None:
    """The lease's row, locked until the transaction ends: every command that revokes or renews a lease takes this
    lock first (then the stream's), so two never act on the target for one lease at once."""
    return await conn.fetchrow(
        "SELECT lease_id, stream_id, state FROM scaivault_dynamic_leases WHERE tenant_id = $1 AND lease_id = $2 "
        "FOR UPDATE",
        tenant_id, lease_id,
    )


async def claim_due(conn: asyncpg.Connection, now: datetime, limit: int) -> list[asyncpg.Record]:
    """Leases due for revocation (expired, or a failed revocation's retry time come) that no other transaction
    holds, locked until this one ends: several servers split the queue and never revoke a lease twice at once."""
    return await conn.fetch(
        """SELECT lease_id, stream_id, tenant_id FROM scaivault_dynamic_leases
           WHERE state <> 'revoked' AND coalesce(next_attempt_at, expires_at) <= $1
           ORDER BY coalesce(next_attempt_at, expires_at) LIMIT $2 FOR UPDATE SKIP LOCKED""",
        now, limit,
    )


async def claim_prefix(
    conn: asyncpg.Connection, tenant_id: str, engine: str, role: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT lease_id, stream_id, tenant_id FROM scaivault_dynamic_leases
           WHERE tenant_id = $1 AND engine_name = $2 AND ($3::text IS NULL OR role_name = $3) AND state <> 'revoked'
           ORDER BY lease_id LIMIT $4 FOR UPDATE""",
        tenant_id, engine, role, limit,
    )


async def next_due(conn: Queryable) -> datetime | None:
    value = await conn.fetchval(
        """SELECT min(coalesce(next_attempt_at, expires_at)) FROM scaivault_dynamic_leases
           WHERE state <> 'revoked'"""
    )
    return value  # type: ignore[no-any-return,unused-ignore]


async def engines_due_root_rotation(conn: Queryable, now: datetime, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT engine_id, stream_id, tenant_id, name FROM scaivault_dynamic_engines
           WHERE root_rotation_period IS NOT NULL
             AND coalesce(root_rotated_at, created_at) + make_interval(secs => root_rotation_period) <= $1
           ORDER BY engine_id LIMIT $2""",
        now, limit,
    )
