"""Secret policies read model (inline: written in the transaction that appends the SecretPolicy events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.secret_policies import SecretPolicy

SECRET_POLICY_EVENTS = (SecretPolicy.Created, SecretPolicy.Updated, SecretPolicy.Deleted)


async def project_secret_policy_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, SecretPolicy.Created):
        await conn.execute(
            """INSERT INTO scaivault_secret_policies (policy_id, stream_id, owner, partner_id, tenant_id, name,
                   policy_type, description, fields, is_active, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $12)""",
            e.policy_id, e.originator_id, e.owner, e.partner_id, e.tenant_id, e.name, e.policy_type, e.description,
            e.fields, e.is_active, e.at, e.actor,
        )
    elif isinstance(e, SecretPolicy.Updated):
        await conn.execute(
            """UPDATE scaivault_secret_policies SET name = $2, policy_type = $3, description = $4, fields = $5,
                   is_active = $6, updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.name, e.policy_type, e.description, e.fields, e.is_active, e.at, e.actor,
        )
    elif isinstance(e, SecretPolicy.Deleted):
        await conn.execute("DELETE FROM scaivault_secret_policies WHERE stream_id = $1", e.originator_id)
