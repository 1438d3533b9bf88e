"""Queries of the policies read model. Every query a caller can reach is confined to the owners it is given: the
caller's tenant and that tenant's partner."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from scaivault.database import Queryable

_POLICY_COLUMNS = """p.policy_id, p.scope, p.owner, p.partner_id, p.tenant_id, p.name, p.description, p.rules,
    p.rule_count, p.is_active, p.created_at, p.created_by, p.updated_at, p.updated_by,
    (SELECT count(*) FROM scaivault_policy_bindings b
     WHERE b.policy_id = p.policy_id AND (b.expires_at IS NULL OR b.expires_at > $2)) AS binding_count"""
_BINDING_COLUMNS = "binding_id, policy_id, identity_type, identity_id, expires_at, created_at, created_by"


async def policy_rows(
    conn: Queryable, owners: Sequence[str], *, at: datetime, include_inactive: bool, after: str | None, limit: int
) -> list[asyncpg.Record]:
    """The owners' policies in id order (ids sort by creation time), after ``after`` (keyset pagination)."""
    return await conn.fetch(
        f"""SELECT {_POLICY_COLUMNS} FROM scaivault_policies p
            WHERE p.owner = ANY($1::text[]) AND ($3 OR p.is_active) AND p.policy_id > coalesce($4, '')
            ORDER BY p.policy_id LIMIT $5""",
        list(owners), at, include_inactive, after, limit,
    )


async def policy_row(conn: Queryable, owners: Sequence[str], policy_id: str, *, at: datetime) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"SELECT {_POLICY_COLUMNS} FROM scaivault_policies p WHERE p.owner = ANY($1::text[]) AND p.policy_id = $3",
        list(owners), at, policy_id,
    )


async def binding_rows(conn: Queryable, policy_id: str, *, after: str | None, limit: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {_BINDING_COLUMNS} FROM scaivault_policy_bindings
            WHERE policy_id = $1 AND binding_id > coalesce($2, '') ORDER BY binding_id LIMIT $3""",
        policy_id, after, limit,
    )


async def bound_policy_rows(
    conn: Queryable, owners: Sequence[str], identity_ids: Sequence[str], *, at: datetime
) -> list[asyncpg.Record]:
    """Active policies of ``owners`` with a binding in force at ``at`` naming one of ``identity_ids`` (an identity
    and its groups), one row per such binding."""
    return await conn.fetch(
        """SELECT p.policy_id, p.name, p.rules, b.binding_id, b.identity_type, b.identity_id, b.expires_at
           FROM scaivault_policy_bindings b JOIN scaivault_policies p ON p.policy_id = b.policy_id
           WHERE b.owner = ANY($1::text[]) AND b.identity_id = ANY($2::text[]) AND p.is_active
             AND (b.expires_at IS NULL OR b.expires_at > $3)
           ORDER BY p.policy_id, b.binding_id""",
        list(owners), list(identity_ids), at,
    )

