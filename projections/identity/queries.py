"""Queries on the identity mirror. Everything about users and groups is asked within one tenant: a caller never
names a user or group of another tenant, and another tenant's answers exactly like a missing one.

``groups_of``, ``policy_groups`` and ``role_records`` answer for authorization: only an ACTIVE user in an ACTIVE
group counts, a group the mirror holds as not ACTIVE counts for nothing even when a token claims it, and a user the
mirror holds with no ACTIVE record gets nothing at all (``projections/identity/roles.py: cut_off``), so suspending a
user or a group in ScaiKey (or here) takes away what they gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from scaivault.database import Queryable
from scaivault.domain.identities import (
    ACTIVE,
    SCAIKEY,
    MirroredUser,
    MirrorState,
    RoleRecord,
    group_ref,
    identity_not_found,
    is_group_id,
    is_user_id,
)


@dataclass(frozen=True)
class PageRequest:
    page: int
    page_size: int

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size


def _user_key(identity_id: str) -> str:
    """A user id (``usr_...``) as it is; ``user:<email>`` or a bare e-mail address as the canonical
    ``user:<lower-case email>``."""
    if is_user_id(identity_id):
        return identity_id
    lowered = identity_id.lower()
    return lowered if lowered.startswith("user:") else "user:" + lowered


async def groups_of(conn: Queryable, tenant_id: str | None, identity_id: str) -> list[str]:
    """What the identity is known as through its groups, for group bindings: each ACTIVE group the ACTIVE user
    belongs to, by its id (``grp_...``) and by its reference (``group:<name>``, the form tokens and the spec's policy
    bindings use), so a binding naming either matches. ``identity_id`` is a user id or ``user:<email>`` (e-mail
    compared case-insensitively). Sorted; empty for an identity the mirror does not know (or no tenant)."""
    if tenant_id is None:
        return []
    rows = await conn.fetch(
        """SELECT g.group_id, g.name FROM scaivault_identity_users u
           JOIN scaivault_identity_members m ON m.tenant_id = u.tenant_id AND m.user_id = u.user_id
           JOIN scaivault_identity_groups g ON g.tenant_id = m.tenant_id AND g.group_id = m.group_id
           WHERE u.tenant_id = $1 AND (u.user_id = $2 OR u.principal_ref = $2) AND u.status = $3 AND g.status = $3""",
        tenant_id, _user_key(identity_id), ACTIVE,
    )
    return sorted({row["group_id"] for row in rows} | {group_ref(row["name"]) for row in rows})


async def policy_groups(
    conn: Queryable, tenant_id: str | None, identity_id: str, claimed: Sequence[str] = ()
) -> list[str]:
    """The groups that count for the identity's group bindings: ``groups_of``, plus the groups its token claims
    (``claimed``, in lower case) except those the mirror holds in the tenant with no ACTIVE record, since a group
    suspended in ScaiKey must not keep granting through tokens issued before. Sorted."""
    claims = {claim.strip().lower() for claim in claimed}
    if tenant_id is None:
        return sorted(claims)
    inactive = await _inactive_groups(conn, tenant_id, claims) if claims else set()
    return sorted(set(await groups_of(conn, tenant_id, identity_id)) | (claims - inactive))


async def _inactive_groups(conn: Queryable, tenant_id: str, claims: set[str]) -> set[str]:
    """Of the claimed references (lower-case ``group:<name>`` or group ids), those naming only groups that are not
    ACTIVE."""
    names = [claim.removeprefix("group:") for claim in claims if claim.startswith("group:")]
    rows = await conn.fetch(
        """SELECT lower(group_id) AS id, name, status FROM scaivault_identity_groups
           WHERE tenant_id = $1 AND (name = ANY($2::text[]) OR lower(group_id) = ANY($3::text[]))""",
        tenant_id, names, [claim for claim in claims if claim.startswith("grp_")],
    )
    active: dict[str, bool] = {}
    for row in rows:
        for reference in (row["id"], group_ref(row["name"])):
            active[reference] = active.get(reference, False) or row["status"] == ACTIVE
    return {claim for claim in claims if active.get(claim) is False}


async def role_records(conn: Queryable, tenant_id: str | None, identity_id: str) -> list[RoleRecord]:
    """What the mirror holds of a user for its roles (each record: roles, ACTIVE or not, authority); empty when the
    mirror does not know the identity (or no tenant). ScaiKey may report two users with one address: both count."""
    if tenant_id is None or not (is_user_id(identity_id) or identity_id.lower().startswith("user:")):
        return []
    rows = await conn.fetch(
        """SELECT roles, status, authority FROM scaivault_identity_users
           WHERE tenant_id = $1 AND (user_id = $2 OR principal_ref = $2)""",
        tenant_id, _user_key(identity_id),
    )
    return [RoleRecord(frozenset(row["roles"]), row["status"] == ACTIVE, row["authority"]) for row in rows]


_USER_COLUMNS = """u.user_id, u.tenant_id, u.email, u.display_name, u.status, u.mfa_enabled, u.roles,
    u.roles_set_locally, u.source, u.created_at, u.updated_at, u.principal_ref,
    CASE WHEN u.last_synced_at IS NULL THEN NULL ELSE greatest(u.last_synced_at, t.last_synced_at) END
        AS last_synced_at,
    ARRAY(SELECT m.group_id FROM scaivault_identity_members m
          WHERE m.tenant_id = u.tenant_id AND m.user_id = u.user_id ORDER BY m.group_id) AS groups"""
_USER_FROM = """scaivault_identity_users u
    LEFT JOIN scaivault_identity_tenants t ON t.tenant_id = u.tenant_id"""

_GROUP_COLUMNS = """g.group_id, g.tenant_id, g.name, g.description, g.status, g.source, g.created_at, g.updated_at,
    CASE WHEN g.last_synced_at IS NULL THEN NULL ELSE greatest(g.last_synced_at, t.last_synced_at) END
        AS last_synced_at,
    (SELECT count(*) FROM scaivault_identity_members m
     WHERE m.tenant_id = g.tenant_id AND m.group_id = g.group_id) AS member_count"""
_GROUP_FROM = """scaivault_identity_groups g
    LEFT JOIN scaivault_identity_tenants t ON t.tenant_id = g.tenant_id"""


async def find_user(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record | None:
    """A user of the tenant by id, ``user:<email>`` or e-mail address."""
    return await conn.fetchrow(
        f"""SELECT {_USER_COLUMNS} FROM {_USER_FROM}
            WHERE u.tenant_id = $1 AND (u.user_id = $2 OR u.principal_ref = $2) ORDER BY u.user_id LIMIT 1""",
        tenant_id, _user_key(reference),
    )


async def find_group(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record | None:
    """A group of the tenant by id, ``group:<name>`` or name."""
    if is_group_id(reference):
        condition, key = "g.group_id = $2", reference
    else:
        condition, key = "g.name = $2", reference.lower().removeprefix("group:")
    return await conn.fetchrow(
        f"SELECT {_GROUP_COLUMNS} FROM {_GROUP_FROM} WHERE g.tenant_id = $1 AND {condition} "
        "ORDER BY g.group_id LIMIT 1",
        tenant_id, key,
    )


def _existing(row: asyncpg.Record | None, kind: str, reference: str) -> asyncpg.Record:
    if row is None:
        raise identity_not_found(kind, reference)
    return row


async def existing_user(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record:
    """``find_user``, else ``identity_not_found``."""
    return _existing(await find_user(conn, tenant_id, reference), "user", reference)


async def existing_group(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record:
    """``find_group``, else ``identity_not_found``."""
    return _existing(await find_group(conn, tenant_id, reference), "group", reference)


async def _paged(
    conn: Queryable, count: str, select: str, args: Sequence[Any], page: PageRequest
) -> tuple[list[asyncpg.Record], int]:
    """One page of ``select`` (ordered, without LIMIT/OFFSET: they follow ``args``) and the total, which ``count``
    counts with the same ``args``."""
    total = await conn.fetchval(count, *args)
    rows = await conn.fetch(
        f"{select} LIMIT ${len(args) + 1} OFFSET ${len(args) + 2}", *args, page.page_size, page.offset
    )
    return rows, int(total)


async def user_rows(
    conn: Queryable, tenant_id: str, page: PageRequest, *, status: str | None = None, query: str | None = None
) -> tuple[list[asyncpg.Record], int]:
    """The tenant's users by e-mail address; ``query`` matches inside the address or the display name."""
    where = """u.tenant_id = $1 AND ($2::text IS NULL OR u.status = $2)
        AND ($3::text IS NULL OR strpos(u.email, lower($3)) > 0 OR strpos(lower(u.display_name), lower($3)) > 0)"""
    return await _paged(
        conn,
        f"SELECT count(*) FROM scaivault_identity_users u WHERE {where}",
        f"SELECT {_USER_COLUMNS} FROM {_USER_FROM} WHERE {where} ORDER BY u.email, u.user_id",
        (tenant_id, status, query),
        page,
    )


async def group_rows(
    conn: Queryable, tenant_id: str, page: PageRequest, *, status: str | None = None
) -> tuple[list[asyncpg.Record], int]:
    where = "g.tenant_id = $1 AND ($2::text IS NULL OR g.status = $2)"
    return await _paged(
        conn,
        f"SELECT count(*) FROM scaivault_identity_groups g WHERE {where}",
        f"SELECT {_GROUP_COLUMNS} FROM {_GROUP_FROM} WHERE {where} ORDER BY g.name, g.group_id",
        (tenant_id, status),
        page,
    )


async def member_rows(
    conn: Queryable, tenant_id: str, group_id: str, page: PageRequest
) -> tuple[list[asyncpg.Record], int]:
    return await _paged(
        conn,
        "SELECT count(*) FROM scaivault_identity_members WHERE tenant_id = $1 AND group_id = $2",
        """SELECT m.user_id, u.email, u.display_name, m.membership_type, m.added_at
           FROM scaivault_identity_members m
           JOIN scaivault_identity_users u ON u.tenant_id = m.tenant_id AND u.user_id = m.user_id
           WHERE m.tenant_id = $1 AND m.group_id = $2 ORDER BY u.email, m.user_id""",
        (tenant_id, group_id),
        page,
    )


async def groups_by_id(conn: Queryable, tenant_id: str, group_ids: Sequence[str]) -> list[asyncpg.Record]:
    """The tenant's groups among ``group_ids`` (id, name, status), by id."""
    return await conn.fetch(
        """SELECT group_id, name, status FROM scaivault_identity_groups
           WHERE tenant_id = $1 AND group_id = ANY($2::text[]) ORDER BY group_id""",
        tenant_id, list(group_ids),
    )


async def user_group_ids(conn: Queryable, tenant_id: str, user_id: str) -> list[str]:
    rows = await conn.fetch(
        "SELECT group_id FROM scaivault_identity_members WHERE tenant_id = $1 AND user_id = $2 ORDER BY group_id",
        tenant_id, user_id,
    )
    return [row["group_id"] for row in rows]


async def email_taken(conn: Queryable, tenant_id: str, email: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM scaivault_identity_users WHERE tenant_id = $1 AND principal_ref = $2",
        tenant_id, _user_key(email),
    ))


async def group_name_taken(conn: Queryable, tenant_id: str, name: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT 1 FROM scaivault_identity_groups WHERE tenant_id = $1 AND name = $2", tenant_id, name
    ))


# --- partners and tenants: ScaiVault's registry, with what ScaiKey says about them --------------------------------

_PARTNERS = """SELECT coalesce(p.partner_id, ip.partner_id) AS id, coalesce(ip.name, p.name) AS name, ip.slug,
        ip.region, coalesce(ip.status, 'ACTIVE') AS status, ip.last_synced_at
    FROM scaivault_partners p FULL JOIN scaivault_identity_partners ip ON ip.partner_id = p.partner_id"""
_TENANTS = """SELECT coalesce(t.tenant_id, it.tenant_id) AS id, coalesce(t.partner_id, it.partner_id) AS partner_id,
        coalesce(it.name, t.name) AS name, it.slug, it.region, coalesce(it.status, 'ACTIVE') AS status,
        it.last_synced_at
    FROM scaivault_tenants t FULL JOIN scaivault_identity_tenants it ON it.tenant_id = t.tenant_id"""


async def partner_rows(
    conn: Queryable, page: PageRequest, *, only: Sequence[str] | None, status: str | None
) -> tuple[list[asyncpg.Record], int]:
    """Partners (``only``: those the caller may see; None for all)."""
    where = "($1::text[] IS NULL OR id = ANY($1)) AND ($2::text IS NULL OR status = $2)"
    return await _paged(
        conn,
        f"SELECT count(*) FROM ({_PARTNERS}) x WHERE {where}",
        f"SELECT * FROM ({_PARTNERS}) x WHERE {where} ORDER BY id",
        (only, status),
        page,
    )


async def tenant_rows(
    conn: Queryable,
    page: PageRequest,
    *,
    partner_id: str | None,
    only: Sequence[str] | None,
    status: str | None,
) -> tuple[list[asyncpg.Record], int]:
    """Tenants of ``partner_id`` (None: every partner), ``only`` those named (None: all)."""
    where = """($1::text IS NULL OR partner_id = $1) AND ($2::text[] IS NULL OR id = ANY($2))
        AND ($3::text IS NULL OR status = $3)"""
    return await _paged(
        conn,
        f"SELECT count(*) FROM ({_TENANTS}) x WHERE {where}",
        f"SELECT * FROM ({_TENANTS}) x WHERE {where} ORDER BY id",
        (partner_id, only, status),
        page,
    )


# --- sync runs ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncVisibility:
    """Which sync runs a caller sees: every one (super_admin), its partner's (partner admins), or those that
    covered its tenant."""

    everything: bool = False
    partner_id: str | None = None
    tenant_id: str | None = None


# The one statement of which runs a visibility covers ($1 everything, $2 partner_id, $3 tenant_id).
_SYNC_VISIBLE = """($1 OR ($2::text IS NOT NULL AND $3::text IS NULL AND partner_id = $2)
    OR ($3::text IS NOT NULL AND (tenant_id = $3 OR (tenant_id IS NULL AND partner_id = $2))))"""
_SYNC_COLUMNS = "sync_id, partner_id, tenant_id, trigger, status, stats, error, requested_by, started_at, finished_at"


def _visibility_args(visibility: SyncVisibility) -> tuple[bool, str | None, str | None]:
    return visibility.everything, visibility.partner_id, visibility.tenant_id


async def sync_rows(
    conn: Queryable, visibility: SyncVisibility, page: PageRequest
) -> tuple[list[asyncpg.Record], int]:
    return await _paged(
        conn,
        f"SELECT count(*) FROM scaivault_identity_syncs WHERE {_SYNC_VISIBLE}",
        f"""SELECT {_SYNC_COLUMNS} FROM scaivault_identity_syncs WHERE {_SYNC_VISIBLE}
            ORDER BY started_at DESC, sync_id DESC""",
        _visibility_args(visibility),
        page,
    )


async def sync_row(conn: Queryable, sync_id: str) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {_SYNC_COLUMNS} FROM scaivault_identity_syncs WHERE sync_id = $1", sync_id)


async def visible_sync_row(conn: Queryable, visibility: SyncVisibility, sync_id: str) -> asyncpg.Record | None:
    """``sync_row``, when ``visibility`` covers the run."""
    return await conn.fetchrow(
        f"SELECT {_SYNC_COLUMNS} FROM scaivault_identity_syncs WHERE {_SYNC_VISIBLE} AND sync_id = $4",
        *_visibility_args(visibility), sync_id,
    )


# --- what a sync compares with ScaiKey's report ---------------------------------------------------------------------


async def scaikey_state(conn: Queryable, tenant_id: str) -> MirrorState:
    """The tenant's users and groups that came from ScaiKey, and the memberships in those groups."""
    state = MirrorState()
    for row in await conn.fetch(
        """SELECT user_id, email, display_name, status, mfa_enabled, roles, roles_set_locally
           FROM scaivault_identity_users WHERE tenant_id = $1 AND source = $2""",
        tenant_id, SCAIKEY,
    ):
        profile = {key: row[key] for key in ("email", "display_name", "status", "mfa_enabled")}
        state.users[row["user_id"]] = MirroredUser(profile, tuple(row["roles"]), row["roles_set_locally"])
    for row in await conn.fetch(
        """SELECT group_id, name, description, status FROM scaivault_identity_groups
           WHERE tenant_id = $1 AND source = $2""",
        tenant_id, SCAIKEY,
    ):
        state.groups[row["group_id"]] = {key: row[key] for key in ("name", "description", "status")}
    state.memberships = {
        (row["group_id"], row["user_id"])
        for row in await conn.fetch(
            """SELECT m.group_id, m.user_id FROM scaivault_identity_members m
               JOIN scaivault_identity_groups g ON g.tenant_id = m.tenant_id AND g.group_id = m.group_id
               WHERE m.tenant_id = $1 AND g.source = $2""",
            tenant_id, SCAIKEY,
        )
    }
    return state
