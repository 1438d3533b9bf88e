"""The identity mirror's inline projector: written in the transaction that appends the events
(scaivault/domain/identities.py), so a command's answer and every later read agree.

Rows of removed users and groups are deleted (with their memberships); a reinstated one is inserted again from
its ``Reinstated`` event. A user's ``authority`` is its author's, and only rises with later changes (as the
aggregate's does). ``last_synced_at`` moves whenever ScaiKey (a sync or a webhook) wrote or confirmed a row.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.identities import (
    SCAIKEY,
    SCAIVAULT,
    Group,
    IdentitySync,
    MirroredPartner,
    MirroredTenant,
    User,
    principal_ref,
)

IDENTITY_EVENTS: tuple[type, ...] = (
    MirroredPartner.Mirrored, MirroredPartner.Changed, MirroredPartner.Synced,
    MirroredTenant.Mirrored, MirroredTenant.Changed, MirroredTenant.Synced,
    User.Created, User.ProfileChanged, User.Reinstated, User.RolesChanged, User.Removed,
    Group.Created, Group.ProfileChanged, Group.Reinstated, Group.MemberAdded, Group.MemberRemoved, Group.Removed,
    IdentitySync.Started, IdentitySync.Completed, IdentitySync.Failed,
)


def _synced_at(e: Any) -> Any:
    return e.at if e.source == SCAIKEY else None


async def _insert_user(conn: asyncpg.Connection, e: Any, tenant_id: str, user_id: str) -> None:
    profile = e.profile
    await conn.execute(
        """INSERT INTO scaivault_identity_users (tenant_id, user_id, stream_id, email, principal_ref, display_name,
               status, mfa_enabled, source, created_at, updated_at, last_synced_at, authority)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12)""",
        tenant_id, user_id, e.originator_id, profile["email"], principal_ref(profile["email"]),
        profile["display_name"], profile["status"], profile["mfa_enabled"], e.source, e.at, _synced_at(e),
        e.authority,
    )


async def _insert_group(conn: asyncpg.Connection, e: Any, tenant_id: str, group_id: str) -> None:
    profile = e.profile
    await conn.execute(
        """INSERT INTO scaivault_identity_groups (tenant_id, group_id, stream_id, name, description, status, source,
               created_at, updated_at, last_synced_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)""",
        tenant_id, group_id, e.originator_id, profile["name"], profile["description"], profile["status"], e.source,
        e.at, _synced_at(e),
    )


async def _project_directory(conn: asyncpg.Connection, e: Any) -> None:
    partner = isinstance(e, (MirroredPartner.Mirrored, MirroredPartner.Changed, MirroredPartner.Synced))
    table = "scaivault_identity_partners" if partner else "scaivault_identity_tenants"
    if isinstance(e, (MirroredPartner.Synced, MirroredTenant.Synced)):
        await conn.execute(f"UPDATE {table} SET last_synced_at = $2 WHERE stream_id = $1", e.originator_id, e.at)
        return
    profile = e.profile
    if isinstance(e, MirroredPartner.Mirrored):
        await conn.execute(
            """INSERT INTO scaivault_identity_partners (partner_id, stream_id, name, slug, region, status,
                   last_synced_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)""",
            e.partner_id, e.originator_id, profile["name"], profile["slug"], profile["region"], profile["status"], e.at,
        )
    elif isinstance(e, MirroredTenant.Mirrored):
        await conn.execute(
            """INSERT INTO scaivault_identity_tenants (tenant_id, stream_id, partner_id, name, slug, region, status,
                   last_synced_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)""",
            e.tenant_id, e.originator_id, e.partner_id, profile["name"], profile["slug"], profile["region"],
            profile["status"], e.at,
        )
    else:
        await conn.execute(
            f"""UPDATE {table} SET name = $2, slug = $3, region = $4, status = $5, last_synced_at = $6,
                    updated_at = $6 WHERE stream_id = $1""",
            e.originator_id, profile["name"], profile["slug"], profile["region"], profile["status"], e.at,
        )


async def project_identity_event(conn: asyncpg.Connection, e: Any) -> None:
    if isinstance(e, (MirroredPartner.Mirrored, MirroredPartner.Changed, MirroredPartner.Synced,
                      MirroredTenant.Mirrored, MirroredTenant.Changed, MirroredTenant.Synced)):
        await _project_directory(conn, e)
    elif isinstance(e, (User.Created, User.Reinstated)):
        await _insert_user(conn, e, e.tenant_id, e.user_id)
    elif isinstance(e, User.ProfileChanged):
        p = e.profile
        await conn.execute(
            """UPDATE scaivault_identity_users SET email = $2, principal_ref = $3, display_name = $4, status = $5,
                   mfa_enabled = $6, updated_at = $7, last_synced_at = coalesce($8, last_synced_at),
                   authority = greatest(authority, $9)
               WHERE stream_id = $1""",
            e.originator_id, p["email"], principal_ref(p["email"]), p["display_name"], p["status"], p["mfa_enabled"],
            e.at, _synced_at(e), e.authority,
        )
    elif isinstance(e, User.RolesChanged):
        await conn.execute(
            """UPDATE scaivault_identity_users SET roles = $2, roles_set_locally = roles_set_locally OR $3,
                   updated_at = $4, last_synced_at = coalesce($5, last_synced_at),
                   authority = greatest(authority, $6) WHERE stream_id = $1""",
            e.originator_id, list(e.roles), e.source == SCAIVAULT, e.at, _synced_at(e), e.authority,
        )
    elif isinstance(e, User.Removed):
        await conn.execute(
            """WITH gone AS (DELETE FROM scaivault_identity_users WHERE stream_id = $1 RETURNING tenant_id, user_id)
               DELETE FROM scaivault_identity_members m USING gone
               WHERE m.tenant_id = gone.tenant_id AND m.user_id = gone.user_id""",
            e.originator_id,
        )
    elif isinstance(e, (Group.Created, Group.Reinstated)):
        await _insert_group(conn, e, e.tenant_id, e.group_id)
    elif isinstance(e, Group.ProfileChanged):
        p = e.profile
        await conn.execute(
            """UPDATE scaivault_identity_groups SET name = $2, description = $3, status = $4, updated_at = $5,
                   last_synced_at = coalesce($6, last_synced_at) WHERE stream_id = $1""",
            e.originator_id, p["name"], p["description"], p["status"], e.at, _synced_at(e),
        )
    elif isinstance(e, Group.MemberAdded):
        await conn.execute(
            """INSERT INTO scaivault_identity_members (tenant_id, group_id, user_id, membership_type, added_at)
               SELECT tenant_id, group_id, $2, $3, $4 FROM scaivault_identity_groups WHERE stream_id = $1""",
            e.originator_id, e.user_id, e.membership_type, e.at,
        )
    elif isinstance(e, Group.MemberRemoved):
        await conn.execute(
            """DELETE FROM scaivault_identity_members m USING scaivault_identity_groups g
               WHERE g.stream_id = $1 AND m.tenant_id = g.tenant_id AND m.group_id = g.group_id AND m.user_id = $2""",
            e.originator_id, e.user_id,
        )
    elif isinstance(e, Group.Removed):
        await conn.execute(
            """WITH gone AS (DELETE FROM scaivault_identity_groups WHERE stream_id = $1 RETURNING tenant_id, group_id)
               DELETE FROM scaivault_identity_members m USING gone
               WHERE m.tenant_id = gone.tenant_id AND m.group_id = gone.group_id""",
            e.originator_id,
        )
    elif isinstance(e, IdentitySync.Started):
        await conn.execute(
            """INSERT INTO scaivault_identity_syncs (sync_id, stream_id, partner_id, tenant_id, trigger, status,
                   requested_by, request_id, started_at) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7, $8)""",
            e.sync_id, e.originator_id, e.partner_id, e.tenant_id, e.trigger, e.actor, e.request_id, e.at,
        )
    elif isinstance(e, (IdentitySync.Completed, IdentitySync.Failed)):
        error = e.error if isinstance(e, IdentitySync.Failed) else None
        await conn.execute(
            """UPDATE scaivault_identity_syncs SET status = $2, stats = $3, error = $4, finished_at = $5
               WHERE stream_id = $1""",
            e.originator_id, "completed" if error is None else "failed", e.stats, error, e.at,
        )
