"""The rotation read models as commands ask them (``commands.ports.RotationLookup``), in their transaction."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg

from projections.rotation.projector import policy_terms
from scaivault.domain.rotation import RotationTerms


class PostgresRotationLookup:
    async def policy_terms(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> RotationTerms | None:
        return await policy_terms(conn, owner, policy_id)

    async def policy_exists(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> bool:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM scaivault_rotation_policies WHERE owner = $1 AND policy_id = $2)",
            owner, policy_id,
        ))

    async def name_taken(self, conn: asyncpg.Connection, owner: str, name: str) -> bool:
        return bool(await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM scaivault_rotation_policies WHERE owner = $1 AND name = $2)", owner, name
        ))

    async def attached_paths(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> list[str]:
        rows = await conn.fetch(
            """SELECT path FROM scaivault_secret_schedules
               WHERE owner = $1 AND rotation_policy_id = $2 AND live ORDER BY path""",
            owner, policy_id,
        )
        return [row["path"] for row in rows]

    async def due_schedules(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        rows = await conn.fetch(
            """SELECT stream_id FROM (
                   SELECT stream_id, next_rotation_step_at AS step_at FROM scaivault_secret_schedules
                   WHERE next_rotation_step_at <= $1
                   UNION ALL
                   SELECT stream_id, next_expiry_step_at FROM scaivault_secret_schedules
                   WHERE next_expiry_step_at <= $1
               ) due GROUP BY stream_id ORDER BY min(step_at) LIMIT $2""",
            at, limit,
        )
        return [row["stream_id"] for row in rows]

    async def current_ciphertext(self, conn: asyncpg.Connection, stream_id: UUID, version: int) -> bytes | None:
        return await conn.fetchval(
            "SELECT ciphertext FROM scaivault_secret_versions WHERE stream_id = $1 AND version = $2",
            stream_id, version,
        )
