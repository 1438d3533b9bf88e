"""Queries of the secret policies read model, each confined to the owner (tenant) it is given."""

from __future__ import annotations

import asyncpg

from scaivault.database import Queryable

_COLUMNS = """policy_id, owner, name, policy_type, description, fields, is_active, created_at, created_by,
    updated_at, updated_by"""


async def secret_policy_rows(
    conn: Queryable, owner: str, *, include_inactive: bool, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """The owner's secret policies in id order (ids sort by creation time), after ``after`` (keyset pagination)."""
    return await conn.fetch(
        f"""SELECT {_COLUMNS} FROM scaivault_secret_policies
            WHERE owner = $1 AND ($2 OR is_active) AND policy_id > coalesce($3, '')
            ORDER BY policy_id LIMIT $4""",
        owner, include_inactive, after, limit,
    )


async def secret_policy_row(conn: Queryable, owner: str, policy_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM scaivault_secret_policies WHERE owner = $1 AND policy_id = $2", owner, policy_id
    )


async def linked_secret_count(conn: Queryable, owner: str, policy_id: str) -> int:
    """Secrets of the owner (live or soft-deleted) linked to the secret policy."""
    count = await conn.fetchval(
        "SELECT count(*) FROM scaivault_secrets WHERE owner = $1 AND secret_policy_id = $2", owner, policy_id
    )
    return int(count or 0)


async def rotation_policy_ids_using(conn: Queryable, owner: str, policy_id: str) -> list[str]:
    """The owner's rotation policies that generate values with the secret policy (their ``secret_policy_id``)."""
    rows = await conn.fetch(
        "SELECT policy_id FROM scaivault_rotation_policies WHERE owner = $1 AND secret_policy_id = $2"
        " ORDER BY policy_id",
        owner, policy_id,
    )
    return [row["policy_id"] for row in rows]
