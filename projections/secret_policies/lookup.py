"""The secret policies read model as commands ask it (``commands.ports.SecretPolicyLookup``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.secret_policies import queries


class PostgresSecretPolicyLookup:
    async def active_recipe(
        self, conn: asyncpg.Connection, owner: str, secret_policy_id: str
    ) -> list[dict[str, Any]] | None:
        row = await queries.secret_policy_row(conn, owner, secret_policy_id)
        if row is None or not row["is_active"]:
            return None
        fields: list[dict[str, Any]] = row["fields"]
        return fields

    async def linked_secrets(self, conn: asyncpg.Connection, owner: str, secret_policy_id: str) -> int:
        return await queries.linked_secret_count(conn, owner, secret_policy_id)

    async def rotation_policies_using(self, conn: asyncpg.Connection, owner: str, secret_policy_id: str) -> list[str]:
        return await queries.rotation_policy_ids_using(conn, owner, secret_policy_id)
