"""Reading the audit log: a tenant's entries (filtered, newest first, in pages), the trails of one secret and one
identity with their summaries, summaries over a window, and the verification of the tenant's chain.

Every query is confined to one chain, the tenant's: the caller's right to read it (``audit:read``) is checked where
the tenant is resolved, at the edge. Entries appear once the audit-log projection has applied their events.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any

import asyncpg
from pydantic import Field

from projections.audit import queries
from projections.audit.documents import audit_entry_document
from projections.audit.queries import AuditFilter
from projections.audit.verification import verify_audit_chain
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

SECRET_SUMMARY_DAYS = 30


class LogCursor(CursorState):
    """A page of entries resumes below this chain sequence number (whatever the filters: they are the query's)."""

    seq: Annotated[int, Field(ge=1, le=2**63 - 1)]  # the chain's sequence is a bigint: a larger one names nothing


class AuditLogReader:
    def __init__(self, pool: asyncpg.Pool, keyring: KeyRing, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._keyring = keyring
        self._clock = clock

    async def log(self, tenant: str, audit_filter: AuditFilter, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """``{"logs", "cursor", "has_more"}``: a page of the tenant's entries matching ``audit_filter``."""
        state = decode_cursor(cursor, LogCursor)
        rows = await queries.audit_entries(
            self._pool, tenant, audit_filter, before_seq=state.seq if state is not None else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(LogCursor(seq=row["seq"])))
        return page.document("logs", audit_entry_document)

    async def secret_trail(
        self, tenant: str, path: str, audit_filter: AuditFilter, *, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """The entries for one secret (with ``audit_filter``'s other conditions), and a summary of its last 30
        days."""
        page = await self.log(tenant, dataclasses.replace(audit_filter, secret_path=path), limit=limit, cursor=cursor)
        window = AuditFilter(secret_path=path, since=self._clock() - timedelta(days=SECRET_SUMMARY_DAYS))
        summary = await queries.audit_summary(self._pool, tenant, window)
        return {"path": path, **page, "summary": {"period_days": SECRET_SUMMARY_DAYS, **summary}}

    async def identity_trail(
        self, tenant: str, identity_id: str, audit_filter: AuditFilter, *, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """The entries of one identity (with ``audit_filter``'s other conditions), and a summary of all of them."""
        filtered = dataclasses.replace(audit_filter, identity_id=identity_id)
        page = await self.log(tenant, filtered, limit=limit, cursor=cursor)
        summary = await queries.audit_summary(self._pool, tenant, AuditFilter(identity_id=identity_id))
        return {"identity_id": identity_id, **page, "summary": summary}

    async def summary(self, tenant: str, *, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        """Counts over the tenant's entries in ``[since, until)`` (each bound optional)."""
        summary = await queries.audit_summary(self._pool, tenant, AuditFilter(since=since, until=until))
        return {"from": since, "to": until, **summary}

    async def verify(self, tenant: str) -> dict[str, Any]:
        """The tenant's chain recomputed: ``valid``, and the first entry altered, removed or reordered."""
        return {"tenant_id": tenant, **await verify_audit_chain(self._pool, self._keyring, tenant)}
