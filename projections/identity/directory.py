"""Reading the identity mirror: partners, tenants, users, groups, members, resolution, roles and sync runs, as the
API and the CLI show them (JSON-ready documents, and pages of them).

Users and groups are read within one tenant, which the caller (or the operator) names; another tenant's answers
exactly like a missing one (``identity_not_found``). What depends on who asks is decided here, from its ``Caller``:
which partners and tenants it sees, and which sync runs (``SyncVisibility``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import asyncpg

from projections.identity import queries
from projections.identity.queries import PageRequest, SyncVisibility
from scaivault.auth.caller import Caller
from scaivault.database import Queryable
from scaivault.domain.errors import IdentityNotFound, RouteNotFound, TenantAccessDenied
from scaivault.domain.identities import SCAIVAULT, group_ref, identity_not_found, is_sync_id

__all__ = [
    "OPERATOR", "IdentityDirectory", "IdentityType", "Listing", "Operator", "PageRequest", "group_document",
    "member_document", "registry_document", "sync_document", "sync_visibility", "user_document",
]

IdentityType = Literal["user", "group", "service_account"]
Row = Mapping[str, Any]


class Operator:
    """Who acts with the database and the root key (the CLI): above every caller's visibility rules."""


OPERATOR = Operator()


@dataclass(frozen=True)
class Listing:
    """One page of a list, with the list's total (``key``: the name the items go under in the answer)."""

    key: str
    items: list[dict[str, Any]]
    total: int
    page: PageRequest

    @property
    def has_more(self) -> bool:
        return self.page.offset + len(self.items) < self.total

    def document(self) -> dict[str, Any]:
        return {
            self.key: self.items, "total": self.total, "page": self.page.page, "page_size": self.page.page_size,
            "has_more": self.has_more,
        }


def _listing(
    key: str, found: tuple[list[asyncpg.Record], int], page: PageRequest, document: Callable[[Row], dict[str, Any]]
) -> Listing:
    rows, total = found
    return Listing(key, [document(row) for row in rows], total, page)


# --- documents ------------------------------------------------------------------------------------------------------


def user_document(row: Row) -> dict[str, Any]:
    return {
        "id": row["user_id"],
        "tenant_id": row["tenant_id"],
        "email": row["email"],
        "display_name": row["display_name"],
        "status": row["status"],
        "mfa_enabled": row["mfa_enabled"],
        "groups": list(row["groups"]),
        "roles": list(row["roles"]),
        "source": row["source"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_synced_at": row["last_synced_at"],
    }


def group_document(row: Row) -> dict[str, Any]:
    return {
        "id": row["group_id"],
        "tenant_id": row["tenant_id"],
        "name": row["name"],
        "description": row["description"],
        "status": row["status"],
        "member_count": row["member_count"],
        "source": row["source"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "last_synced_at": row["last_synced_at"],
    }


def member_document(row: Row) -> dict[str, Any]:
    return {key: row[key] for key in ("user_id", "email", "display_name", "membership_type", "added_at")}


def registry_document(row: Row) -> dict[str, Any]:
    """A partner or tenant: ScaiVault's registry entry with what ScaiKey says about it."""
    return dict(row)


def sync_document(row: Row) -> dict[str, Any]:
    return {
        "sync_id": row["sync_id"],
        "status": row["status"],
        "trigger": row["trigger"],
        "partner_id": row["partner_id"],
        "tenant_id": row["tenant_id"],
        "requested_by": row["requested_by"],
        "started_at": row["started_at"],
        "completed_at": row["finished_at"],
        "stats": row["stats"],
        "error": row["error"],
    }


def sync_visibility(viewer: Caller | Operator) -> SyncVisibility:
    """Which sync runs ``viewer`` sees: every one (a super_admin, the operator), its partner's (partner admins), or
    those that covered its tenant (anyone else)."""
    if isinstance(viewer, Operator) or viewer.principal.has_role("super_admin"):
        return SyncVisibility(everything=True)
    if viewer.principal.is_partner_admin:
        return SyncVisibility(partner_id=viewer.require_partner())
    return SyncVisibility(partner_id=viewer.partner_id, tenant_id=viewer.require_tenant())


def _unnamed(reference: str) -> bool:
    """No identity is named with a NUL (nor can PostgreSQL hold one in text)."""
    return "\x00" in reference


class IdentityDirectory:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    # --- the registry: partners and tenants ---------------------------------------------------------------------

    async def partners(self, caller: Caller, page: PageRequest, *, status: str | None = None) -> Listing:
        """Every partner for a super_admin; the caller's own partner for everyone else."""
        only = None if caller.principal.has_role("super_admin") else [caller.require_partner()]
        found = await queries.partner_rows(self._pool, page, only=only, status=status)
        return _listing("partners", found, page, registry_document)

    async def tenants(
        self, caller: Caller, page: PageRequest, *, partner_id: str | None = None, status: str | None = None
    ) -> Listing:
        """Every tenant for a super_admin (``partner_id`` filters), its partner's for a partner admin, its own
        tenant for anyone else. Naming another partner is ``tenant_access_denied``."""
        only: list[str] | None = None
        if not caller.principal.has_role("super_admin"):
            own = caller.require_partner()
            if partner_id is not None and partner_id != own:
                raise TenantAccessDenied("The partner is not yours", partner_id=partner_id)
            partner_id = own
            if not caller.principal.is_partner_admin:
                only = [caller.require_tenant()]
        found = await queries.tenant_rows(self._pool, page, partner_id=partner_id, only=only, status=status)
        return _listing("tenants", found, page, registry_document)

    # --- one tenant's users and groups --------------------------------------------------------------------------

    async def users(
        self, tenant_id: str, page: PageRequest, *, status: str | None = None, query: str | None = None
    ) -> Listing:
        """By e-mail address; ``query`` matches inside the address or the display name, case-insensitively."""
        found = await queries.user_rows(self._pool, tenant_id, page, status=status, query=query)
        return _listing("users", found, page, user_document)

    async def user(self, tenant_id: str, reference: str) -> dict[str, Any]:
        """A user by id, ``user:<email>`` or e-mail address; else ``identity_not_found``."""
        return user_document(await self._user_row(self._pool, tenant_id, reference))

    async def user_roles(self, tenant_id: str, reference: str) -> dict[str, Any]:
        """A user's mirrored roles, and who manages them: ScaiVault once they were set here, else their source."""
        row = await self._user_row(self._pool, tenant_id, reference)
        return {
            "user_id": row["user_id"], "roles": list(row["roles"]),
            "managed_by": SCAIVAULT if row["roles_set_locally"] else row["source"],
        }

    async def groups(self, tenant_id: str, page: PageRequest, *, status: str | None = None) -> Listing:
        """By name."""
        found = await queries.group_rows(self._pool, tenant_id, page, status=status)
        return _listing("groups", found, page, group_document)

    async def group(self, tenant_id: str, reference: str) -> dict[str, Any]:
        """A group by id, ``group:<name>`` or name; else ``identity_not_found``."""
        return group_document(await self._group_row(self._pool, tenant_id, reference))

    async def members(self, tenant_id: str, group_reference: str, page: PageRequest) -> Listing:
        """A group's members by e-mail address; the group must exist in the tenant."""
        group = await self._group_row(self._pool, tenant_id, group_reference)
        found = await queries.member_rows(self._pool, tenant_id, group["group_id"], page)
        return _listing("members", found, page, member_document)

    async def resolve(self, tenant_id: str, identity_type: IdentityType, reference: str) -> dict[str, Any]:
        """One identity of the tenant, named by id, by the form tokens carry (``user:<email>``, ``group:<name>``) or
        by bare e-mail address or group name. A user comes with its groups and ``effective_groups`` (what policy
        bindings match). Service accounts live in ScaiKey and are not mirrored: never found."""
        if identity_type == "user":
            async with self._pool.acquire() as conn:
                row = await self._user_row(conn, tenant_id, reference)
                groups = await queries.groups_by_id(conn, tenant_id, list(row["groups"]))
                effective = await queries.groups_of(conn, tenant_id, row["user_id"])
            user = user_document(row)
            return {
                "id": user.pop("id"),
                "type": "user",
                "identity_ref": row["principal_ref"],
                **{key: value for key, value in user.items() if key != "groups"},
                "groups": [
                    {"id": g["group_id"], "name": g["name"], "identity_ref": group_ref(g["name"]),
                     "status": g["status"]}
                    for g in groups
                ],
                "effective_groups": effective,
            }
        if identity_type == "group":
            group = group_document(await self._group_row(self._pool, tenant_id, reference))
            return {"id": group.pop("id"), "type": "group", "identity_ref": group_ref(group["name"]), **group}
        raise IdentityNotFound(
            "Service accounts are not mirrored", identity_type=identity_type, identity_id=reference[:80]
        )

    @staticmethod
    async def _user_row(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record:
        if _unnamed(reference):
            raise identity_not_found("user", reference.replace("\x00", ""))
        return await queries.existing_user(conn, tenant_id, reference)

    @staticmethod
    async def _group_row(conn: Queryable, tenant_id: str, reference: str) -> asyncpg.Record:
        if _unnamed(reference):
            raise identity_not_found("group", reference.replace("\x00", ""))
        return await queries.existing_group(conn, tenant_id, reference)

    # --- sync runs ----------------------------------------------------------------------------------------------

    async def sync_runs(self, viewer: Caller | Operator, page: PageRequest) -> Listing:
        """Newest first: the runs ``viewer`` sees (``sync_visibility``)."""
        found = await queries.sync_rows(self._pool, sync_visibility(viewer), page)
        return _listing("syncs", found, page, sync_document)

    async def sync_run(self, viewer: Caller | Operator, sync_id: str) -> dict[str, Any]:
        """One run; a run ``viewer`` may not see answers exactly like a missing one (``not_found``)."""
        row = None
        if is_sync_id(sync_id):
            row = await queries.visible_sync_row(self._pool, sync_visibility(viewer), sync_id)
        if row is None:
            raise RouteNotFound("No sync run with that id", sync_id=sync_id[:80])
        return sync_document(row)
