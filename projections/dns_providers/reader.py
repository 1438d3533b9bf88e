"""Reading DNS providers: the tenant's list and one provider.

A provider of another tenant answers exactly like a missing one (``dns_provider_not_found``). No answer holds a
credential: ``credential_fields`` names the fields stored, never their values. Listings page by id (ids sort by
creation time); a cursor is bound to its filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.dns_providers import queries
from scaivault.domain.errors import DnsProviderNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]


class DnsProviderListCursor(CursorState):
    v: Literal[1]
    provider_type: str | None = Field(default=None, max_length=32)
    active_only: bool
    after: str = Field(max_length=64)


def _document(row: Row) -> dict[str, Any]:
    return {
        "id": row["provider_id"],
        "name": row["name"],
        "provider_type": row["provider_type"],
        "description": row["description"],
        "managed_zones": list(row["managed_zones"]),
        "config": row["config"],
        "credential_fields": list(row["credential_fields"]),
        "is_active": row["is_active"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


class DnsProviderReader:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def providers(
        self, tenant_id: str, *, provider_type: str | None, active_only: bool, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        state = decode_cursor(
            cursor, DnsProviderListCursor, expected={"provider_type": provider_type, "active_only": active_only}
        )
        rows = await queries.provider_rows(
            self._pool, tenant_id, provider_type=provider_type, active_only=active_only,
            after=state.after if state else None, limit=limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(DnsProviderListCursor(
            v=1, provider_type=provider_type, active_only=active_only, after=row["provider_id"],
        )))
        return page.document("providers", _document)

    async def provider(self, tenant_id: str, provider_id: str) -> dict[str, Any]:
        row = await queries.provider_row(self._pool, tenant_id, provider_id)
        if row is None:
            raise DnsProviderNotFound(dns_provider_id=provider_id[:64])
        return _document(row)
