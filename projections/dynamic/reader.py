"""Reading engines, roles and leases (answers never hold a secret: engines show their config, which names the
root-credentials secret; leases show the user name, never the password).

An engine or lease of another tenant answers exactly like a missing one. Lists page by name (engines) or id
(leases: ids sort by creation time); a cursor is bound to its filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.dynamic import queries
from scaivault.domain.dynamic import ACTIVE, REVOKED, REVOKING
from scaivault.domain.errors import EngineNotFound, LeaseNotFound, RoleNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]
LEASE_STATES = {"active": [ACTIVE], "revoking": [REVOKING], "revoked": [REVOKED], "open": [ACTIVE, REVOKING],
                "all": [ACTIVE, REVOKING, REVOKED]}


class EngineListCursor(CursorState):
    v: Literal[1]
    engine_type: str | None = Field(default=None, max_length=32)
    after: str = Field(max_length=64)


class LeaseListCursor(CursorState):
    v: Literal[1]
    engine: str | None = Field(default=None, max_length=64)
    role: str | None = Field(default=None, max_length=64)
    state: str = Field(max_length=16)
    requested_by: str | None = Field(default=None, max_length=320)
    after: str = Field(max_length=64)


def engine_document(row: Row, roles: list[str] | None = None) -> dict[str, Any]:
    engine_type = row["engine_type"]
    plugin = engine_type.split(".", 1)[1] if engine_type.startswith("database.") else None
    document: dict[str, Any] = {
        "id": row["engine_id"],
        "name": row["name"],
        "type": "database" if plugin else engine_type,
        "engine_type": engine_type,
        "description": row["description"],
        "config": {**({"plugin": plugin} if plugin else {}), **row["config"]},
        "default_ttl": row["default_ttl"],
        "max_ttl": row["max_ttl"],
        "root_rotation_period": row["root_rotation_period"],
        "root_rotated_at": row["root_rotated_at"],
        "identity": f"dynamic:{row['name']}",
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }
    if row["ca_public_key"] is not None:
        document["public_key"] = row["ca_public_key"]
    if roles is not None:
        document["roles"] = roles
    return document


def role_document(engine: str, row: Row) -> dict[str, Any]:
    role = row["role"]
    return {
        "name": row["name"],
        "engine": engine,
        "description": role["description"],
        "default_ttl": role["default_ttl"],
        "max_ttl": role["max_ttl"],
        "max_leases": role["max_leases"],
        "username_template": role["username_template"],
        "creation_statements": role["creation_statements"],
        "revocation_statements": role["revocation_statements"],
        "renew_statements": role["renew_statements"],
        **role["settings"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


def lease_document(row: Row) -> dict[str, Any]:
    return {
        "lease_id": row["lease_id"],
        "engine": row["engine_name"],
        "role": row["role_name"],
        "engine_type": row["engine_type"],
        "username": row["username"],
        "state": row["state"],
        "renewable": row["renewable"] and row["state"] == ACTIVE,
        "issued_at": row["issued_at"],
        "expires_at": row["expires_at"],
        "max_expires_at": row["max_expires_at"],
        "requested_by": row["requested_by"],
        "revoked_at": row["revoked_at"],
        "revoke_reason": row["revoke_reason"],
        "revocation_attempts": row["attempts"],
        "last_error": row["last_error"],
        "next_attempt_at": row["next_attempt_at"],
    }


class DynamicReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def engines(
        self, tenant_id: str, *, engine_type: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        state = decode_cursor(cursor, EngineListCursor, expected={"engine_type": engine_type})
        rows = await queries.engine_rows(self._pool, tenant_id, engine_type=engine_type,
                                         after=state.after if state else None, limit=limit + 1)
        page = page_of(rows, limit, lambda row: encode_cursor(EngineListCursor(
            v=1, engine_type=engine_type, after=row["name"])))
        return page.document("engines", engine_document)

    async def engine(self, tenant_id: str, name: str) -> dict[str, Any]:
        row = await self._engine_row(tenant_id, name)
        roles = [r["name"] for r in await queries.role_rows(self._pool, row["engine_id"])]
        return engine_document(row, roles)

    async def roles(self, tenant_id: str, engine: str) -> dict[str, Any]:
        row = await self._engine_row(tenant_id, engine)
        return {"roles": [role_document(engine, r) for r in await queries.role_rows(self._pool, row["engine_id"])]}

    async def role(self, tenant_id: str, engine: str, name: str) -> dict[str, Any]:
        row = await self._engine_row(tenant_id, engine)
        found = await queries.role_row(self._pool, row["engine_id"], name)
        if found is None:
            raise RoleNotFound(f"The engine {engine} has no role named {name[:64]}", role=name[:64])
        return role_document(engine, found)

    async def leases(
        self, tenant_id: str, *, engine: str | None, role: str | None, state: str, requested_by: str | None,
        limit: int, cursor: str | None,
    ) -> dict[str, Any]:
        expected = {"engine": engine, "role": role, "state": state, "requested_by": requested_by}
        decoded = decode_cursor(cursor, LeaseListCursor, expected=expected)
        rows = await queries.lease_rows(
            self._pool, tenant_id, engine=engine, role=role, states=LEASE_STATES[state], requested_by=requested_by,
            after=decoded.after if decoded else None, limit=limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(LeaseListCursor(
            v=1, engine=engine, role=role, state=state, requested_by=requested_by, after=row["lease_id"])))
        return page.document("leases", lease_document)

    async def lease(self, tenant_id: str, lease_id: str, *, requested_by: str | None = None) -> dict[str, Any]:
        """One lease; with ``requested_by``, only if that identity requested it (a lease of someone else answers
        like a missing one)."""
        row = await queries.lease_row(self._pool, tenant_id, lease_id)
        if row is None or (requested_by is not None and row["requested_by"] != requested_by):
            raise LeaseNotFound(f"No lease {lease_id[:64]}", lease_id=lease_id[:64])
        return lease_document(row)

    async def _engine_row(self, tenant_id: str, name: str) -> Row:
        row = await queries.engine_row(self._pool, tenant_id, name)
        if row is None:
            raise EngineNotFound(f"No engine named {name[:64]}", engine=name[:64])
        return row
