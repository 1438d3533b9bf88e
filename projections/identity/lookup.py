"""The identity mirror's read model as the identity commands ask it (``commands.ports.IdentityLookup``), in their
transaction."""

from __future__ import annotations

import asyncpg

from projections.identity import queries
from scaivault.domain.identities import MirrorState


class PostgresIdentityLookup:
    async def email_taken(self, conn: asyncpg.Connection, tenant_id: str, email: str) -> bool:
        return await queries.email_taken(conn, tenant_id, email)

    async def group_name_taken(self, conn: asyncpg.Connection, tenant_id: str, name: str) -> bool:
        return await queries.group_name_taken(conn, tenant_id, name)

    async def user_group_ids(self, conn: asyncpg.Connection, tenant_id: str, user_id: str) -> list[str]:
        return await queries.user_group_ids(conn, tenant_id, user_id)

    async def scaikey_state(self, conn: asyncpg.Connection, tenant_id: str) -> MirrorState:
        return await queries.scaikey_state(conn, tenant_id)
