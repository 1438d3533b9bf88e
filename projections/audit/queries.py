"""Queries over the audit log. Every query is confined to one chain (one tenant)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from scaivault.database import Queryable

_ENTRY_COLUMNS = """seq, recorded_at, action, identity_type, identity_id, secret_path, source_ip, user_agent, success,
    status, error_code, duration_ms, request_id, method, route, extra, hash"""


@dataclass
class AuditFilter:
    """The spec's filters; each None means "any"."""

    since: datetime | None = None
    until: datetime | None = None
    actions: list[str] | None = None
    identity_id: str | None = None
    identity_type: str | None = None
    path_prefix: str | None = None
    secret_path: str | None = None
    success: bool | None = None
    source_ip: str | None = None
    request_id: str | None = None

    @classmethod
    def of(cls, filters: dict[str, Any], *, since: datetime | None, until: datetime | None) -> AuditFilter:
        """From an export's stored filters (the query parameters' names, ``actions`` as a list)."""
        return cls(
            since=since,
            until=until,
            actions=filters.get("actions"),
            identity_id=filters.get("identity_id"),
            identity_type=filters.get("identity_type"),
            path_prefix=filters.get("path_prefix"),
            success=filters.get("success"),
            source_ip=filters.get("source_ip"),
            request_id=filters.get("request_id"),
        )

    def where(self, chain: str) -> tuple[str, list[Any]]:
        clauses, args = ["chain = $1"], [chain]

        def add(sql: str, value: Any) -> None:
            args.append(value)
            clauses.append(sql.replace("?", f"${len(args)}"))

        if self.since is not None:
            add("recorded_at >= ?", self.since)
        if self.until is not None:
            add("recorded_at < ?", self.until)
        if self.actions:
            add("action = ANY(?::text[])", self.actions)
        if self.identity_id is not None:
            add("identity_id = ?", self.identity_id)
        if self.identity_type is not None:
            add("identity_type = ?", self.identity_type)
        if self.path_prefix is not None:
            # Paths use only a-z 0-9 - _ /, all below '~': the prefix range, without LIKE's '_' wildcard.
            add("secret_path >= ?", self.path_prefix)
            add("secret_path < ? || '~'", self.path_prefix)
        if self.secret_path is not None:
            add("secret_path = ?", self.secret_path)
        if self.success is not None:
            add("success = ?", self.success)
        if self.source_ip is not None:
            add("source_ip = ?", self.source_ip)
        if self.request_id is not None:
            add("request_id = ?", self.request_id)
        return " AND ".join(clauses), args


async def audit_entries(
    conn: Queryable, chain: str, audit_filter: AuditFilter, *, before_seq: int | None, limit: int
) -> list[asyncpg.Record]:
    """Newest first; keyset pagination on the chain's sequence number."""
    where, args = audit_filter.where(chain)
    if before_seq is not None:
        args.append(before_seq)
        where += f" AND seq < ${len(args)}"
    args.append(limit)
    return await conn.fetch(
        f"SELECT {_ENTRY_COLUMNS} FROM scaivault_audit_log WHERE {where} ORDER BY seq DESC LIMIT ${len(args)}", *args
    )


async def audit_entries_ascending(
    conn: Queryable, chain: str, audit_filter: AuditFilter, *, after_seq: int, through_seq: int, limit: int
) -> list[asyncpg.Record]:
    """Oldest first, in the sequence range (after_seq, through_seq]: pages of a stream read (audit exports)."""
    where, args = audit_filter.where(chain)
    args += [after_seq, through_seq, limit]
    n = len(args)
    return await conn.fetch(
        f"""SELECT {_ENTRY_COLUMNS} FROM scaivault_audit_log WHERE {where} AND seq > ${n - 2} AND seq <= ${n - 1}
            ORDER BY seq LIMIT ${n}""",
        *args,
    )


async def audit_count(conn: Queryable, chain: str, audit_filter: AuditFilter) -> int:
    where, args = audit_filter.where(chain)
    return int(await conn.fetchval(f"SELECT count(*) FROM scaivault_audit_log WHERE {where}", *args))


async def audit_summary(conn: Queryable, chain: str, audit_filter: AuditFilter) -> dict[str, Any]:
    where, args = audit_filter.where(chain)
    totals = await conn.fetchrow(
        f"""SELECT count(*) AS total, count(*) FILTER (WHERE success) AS successful,
                   count(DISTINCT identity_id) AS identities, count(DISTINCT secret_path) AS secrets,
                   min(recorded_at) AS first_at, max(recorded_at) AS last_at,
                   max(recorded_at) FILTER (WHERE action = 'read' AND success) AS last_read_at
            FROM scaivault_audit_log WHERE {where}""",
        *args,
    )

    async def counts(column: str, top: int | None = None) -> list[asyncpg.Record]:
        limit = f" LIMIT {int(top)}" if top else ""
        return await conn.fetch(
            f"""SELECT {column} AS key, count(*) AS n FROM scaivault_audit_log
                WHERE {where} AND {column} IS NOT NULL GROUP BY {column} ORDER BY n DESC, key{limit}""",
            *args,
        )

    return {
        "total_events": totals["total"],
        "successful_events": totals["successful"],
        "failed_events": totals["total"] - totals["successful"],
        "unique_identities": totals["identities"],
        "unique_secrets": totals["secrets"],
        "first_event_at": totals["first_at"],
        "last_event_at": totals["last_at"],
        "last_read_at": totals["last_read_at"],
        "by_action": {row["key"]: row["n"] for row in await counts("action")},
        "by_identity_type": {row["key"]: row["n"] for row in await counts("identity_type")},
        "top_identities": [{"identity_id": r["key"], "count": r["n"]} for r in await counts("identity_id", 10)],
        "top_secrets": [{"path": r["key"], "count": r["n"]} for r in await counts("secret_path", 10)],
    }


async def chain_entries_in_order(conn: asyncpg.Connection, chain: str) -> Any:
    """Every entry of a chain, oldest first, streamed (a cursor inside the caller's transaction)."""
    return conn.cursor("SELECT * FROM scaivault_audit_log WHERE chain = $1 ORDER BY seq", chain, prefetch=2000)


async def chain_head(conn: Queryable, chain: str) -> tuple[int, bytes]:
    row = await conn.fetchrow("SELECT seq, head FROM scaivault_audit_chains WHERE chain = $1", chain)
    return (0, bytes(32)) if row is None else (row["seq"], bytes(row["head"]))


async def chain_anchor(conn: Queryable, chain: str) -> asyncpg.Record | None:
    """Where retention cut the chain (None while nothing was removed)."""
    return await conn.fetchrow("SELECT * FROM scaivault_audit_anchors WHERE chain = $1", chain)


async def chains(conn: Queryable) -> list[str]:
    return [row["chain"] for row in await conn.fetch("SELECT chain FROM scaivault_audit_chains ORDER BY chain")]
