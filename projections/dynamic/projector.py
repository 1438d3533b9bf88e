"""Dynamic secrets read models (inline: written in the transaction that appends DynamicEngine and Lease events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.dynamic import ACTIVE, REVOKED, REVOKING, DynamicEngine, Lease

DYNAMIC_EVENTS = (
    DynamicEngine.Created, DynamicEngine.Updated, DynamicEngine.RoleWritten, DynamicEngine.RoleDeleted,
    DynamicEngine.RootRotated, DynamicEngine.Deleted, Lease.Granted, Lease.Renewed, Lease.RevocationFailed,
    Lease.Revoked,
)


async def project_dynamic_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, DynamicEngine.Created):
        await conn.execute(
            """INSERT INTO scaivault_dynamic_engines (engine_id, stream_id, tenant_id, partner_id, name, engine_type,
                   description, config, default_ttl, max_ttl, root_rotation_period, ca_public_key, created_at,
                   created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $13, $14)""",
            e.engine_id, e.originator_id, e.tenant_id, e.partner_id, e.name, e.engine_type, e.description, e.config,
            e.default_ttl, e.max_ttl, e.root_rotation_period, e.ca_public_key, e.at, e.actor,
        )
    elif isinstance(e, DynamicEngine.Updated):
        await conn.execute(
            """UPDATE scaivault_dynamic_engines SET description = $2, config = $3, default_ttl = $4, max_ttl = $5,
                   root_rotation_period = $6, updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.description, e.config, e.default_ttl, e.max_ttl, e.root_rotation_period, e.at, e.actor,
        )
    elif isinstance(e, DynamicEngine.RoleWritten):
        await conn.execute(
            """INSERT INTO scaivault_dynamic_roles (engine_id, name, tenant_id, role, updated_at, updated_by)
               SELECT engine_id, $2, tenant_id, $3, $4, $5 FROM scaivault_dynamic_engines WHERE stream_id = $1
               ON CONFLICT (engine_id, name) DO UPDATE SET role = $3, updated_at = $4, updated_by = $5""",
            e.originator_id, e.name, e.role, e.at, e.actor,
        )
    elif isinstance(e, DynamicEngine.RoleDeleted):
        await conn.execute(
            """DELETE FROM scaivault_dynamic_roles r USING scaivault_dynamic_engines g
               WHERE g.stream_id = $1 AND r.engine_id = g.engine_id AND r.name = $2""",
            e.originator_id, e.name,
        )
    elif isinstance(e, DynamicEngine.RootRotated):
        await conn.execute(
            "UPDATE scaivault_dynamic_engines SET root_rotated_at = $2 WHERE stream_id = $1", e.originator_id, e.at,
        )
    elif isinstance(e, DynamicEngine.Deleted):
        await conn.execute(
            """WITH gone AS (DELETE FROM scaivault_dynamic_engines WHERE stream_id = $1 RETURNING engine_id)
               DELETE FROM scaivault_dynamic_roles WHERE engine_id IN (SELECT engine_id FROM gone)""",
            e.originator_id,
        )
    elif isinstance(e, Lease.Granted):
        await conn.execute(
            """INSERT INTO scaivault_dynamic_leases (lease_id, stream_id, tenant_id, partner_id, engine_id,
                   engine_name, engine_type, role_name, username, requested_by, issued_at, expires_at, max_expires_at,
                   renewable, state, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $11)""",
            e.lease_id, e.originator_id, e.tenant_id, e.partner_id, e.engine_id, e.engine_name, e.engine_type,
            e.role_name, e.username, e.requested_by, e.issued_at, e.expires_at, e.max_expires_at, e.renewable, ACTIVE,
        )
        await conn.execute(
            """INSERT INTO scaivault_dynamic_lease_counts (tenant_id, engine_id, role_name, open_leases)
               VALUES ($1, $2, $3, 1)
               ON CONFLICT (tenant_id, engine_id, role_name) DO UPDATE
               SET open_leases = scaivault_dynamic_lease_counts.open_leases + 1""",
            e.tenant_id, e.engine_id, e.role_name,
        )
    elif isinstance(e, Lease.Renewed):
        await conn.execute(
            "UPDATE scaivault_dynamic_leases SET expires_at = $2, updated_at = $3 WHERE stream_id = $1",
            e.originator_id, e.expires_at, e.at,
        )
    elif isinstance(e, Lease.RevocationFailed):
        await conn.execute(
            """UPDATE scaivault_dynamic_leases SET state = $2, attempts = $3, last_error = $4, next_attempt_at = $5,
                   revoke_reason = $6, updated_at = $7 WHERE stream_id = $1""",
            e.originator_id, REVOKING, e.attempts, e.error, e.next_attempt_at, e.reason, e.at,
        )
    elif isinstance(e, Lease.Revoked):
        row = await conn.fetchrow(
            """UPDATE scaivault_dynamic_leases SET state = $2, revoke_reason = $3, revoked_at = $4, updated_at = $4,
                   next_attempt_at = NULL WHERE stream_id = $1
               RETURNING tenant_id, engine_id, role_name""",
            e.originator_id, REVOKED, e.reason, e.at,
        )
        if row is not None:
            await conn.execute(
                """UPDATE scaivault_dynamic_lease_counts SET open_leases = open_leases - 1
                   WHERE tenant_id = $1 AND engine_id = $2 AND role_name = $3""",
                row["tenant_id"], row["engine_id"], row["role_name"],
            )
