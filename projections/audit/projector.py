"""Builds the audit log from AccessRecorded events, extending each tenant's hash chain.

A batch is written with one binary COPY, the cheapest way into this table and its six indexes (a rebuild writes
a million entries). Events are decoded and chained by a fast path
(``projections/audit/fast_chain.py``) that gives what ``audit_entry`` and ``scaivault.audit.chain.entry_hash`` give.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import asyncpg
import orjson
from eventsourcing.persistence import Mapper, StoredEvent

from projections.audit.fast_chain import (
    ChainedPage,
    Decoded,
    chain_entries,
    decoded_as_stored,
    utc_text,
)
from projections.runner import Projection
from scaivault.audit.access_encoding import ACCESS_FIELDS_AS_STORED, access_fields
from scaivault.audit.chain import ENTRY_FIELDS, SYSTEM_CHAIN
from scaivault.domain.access import ACCESS_TOPIC

_TABLE = "scaivault_audit_log"
_COLUMNS = (*ENTRY_FIELDS, "prev_hash", "hash")
# Connections whose jsonb codec is binary, which asyncpg's binary COPY needs (the pool's is text).
_binary_jsonb: weakref.WeakSet[asyncpg.Connection] = weakref.WeakSet()


def audit_entry(notification_id: int, event: Mapping[str, Any]) -> dict[str, Any]:
    """The entry for an AccessRecorded event's fields (as ``access_fields`` decodes them)."""
    return {
        "chain": event["tenant_id"] or SYSTEM_CHAIN,
        "seq": 0,
        "notification_id": notification_id,
        "recorded_at": event["timestamp"],
        "request_id": event["request_id"],
        "partner_id": event["partner_id"],
        "tenant_id": event["tenant_id"],
        "identity_id": event["identity_id"],
        "identity_type": event["identity_type"],
        "action": event["action"],
        "method": event["method"],
        "route": event["route"],
        "secret_path": event["secret_path"],
        "status": event["status"],
        "success": event["success"],
        "error_code": event["error_code"],
        "source_ip": event["source_ip"],
        "user_agent": event["user_agent"],
        "duration_ms": event["duration_ms"],
        "extra": event["extra"],
    }


class AuditLogProjection(Projection):
    name = "audit_log"
    topics = frozenset({ACCESS_TOPIC})
    tables = ("scaivault_audit_log", "scaivault_audit_chains")
    # Paths arrive in any order: maintained row by row during a rebuild, this index costs PostgreSQL several times
    # its sorted build, more than the other five together (docs/performance.md, rebuilds).
    indexes_built_after_replay = frozenset({("scaivault_audit_log", "chain, secret_path, seq")})

    def __init__(self, chain_key: Callable[[asyncpg.Connection], Awaitable[bytes]]) -> None:
        self._chain_key = chain_key

    def decode(self, mapper: Mapper[Any], stored: StoredEvent) -> Decoded:
        """The event as an entry ready to chain, without building the DomainEvent (a rebuild decodes a million of
        them): straight from the stored JSON when it has the usual shape, else from its decoded fields."""
        if not ACCESS_FIELDS_AS_STORED:
            return decoded_from_fields(vars(mapper.to_domain_event(stored)))
        return decoded_as_stored(stored.state) or decoded_from_fields(access_fields(stored.state, streams=False))

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]] | ChainedPage) -> None:
        if isinstance(events, ChainedPage):  # a rebuild's page, chained ahead by page_preparer()
            await self._write(conn, events)
            return
        if not events:
            return
        chains = sorted({entry["chain"] for _, (entry, _at) in events})
        heads = {
            row["chain"]: (row["seq"], bytes(row["head"]))
            for row in await conn.fetch(
                # A chain with no head yet (in a rebuild, after retention) continues from its retention anchor.
                """SELECT a.chain, a.seq, a.hash AS head FROM scaivault_audit_anchors a
                   WHERE a.chain = ANY($1::text[])
                     AND NOT EXISTS (SELECT 1 FROM scaivault_audit_chains c WHERE c.chain = a.chain)
                   UNION ALL
                   SELECT chain, seq, head FROM scaivault_audit_chains WHERE chain = ANY($1::text[])""",
                chains,
            )
        }
        await self._write(conn, chain_entries(await self._chain_key(conn), heads, events))

    def page_preparer(self) -> Callable[[asyncpg.Connection, list[tuple[int, Any]]], Awaitable[ChainedPage]]:
        """For a rebuild into an empty copy: pages are chained (entries, hashes) as they are read, while the pages
        before them are still being written, so hashing in Python and indexing in PostgreSQL overlap. The heads
        stay in memory from page to page; a chain starts from its retention anchor, if it has one."""
        heads: dict[str, tuple[int, bytes]] = {}
        anchored: set[str] = set()

        async def prepare(conn: asyncpg.Connection, events: list[tuple[int, Any]]) -> ChainedPage:
            new = sorted({entry["chain"] for _, (entry, _at) in events} - anchored)
            if new:
                for row in await conn.fetch(
                    "SELECT chain, seq, hash FROM scaivault_audit_anchors WHERE chain = ANY($1::text[])", new
                ):
                    heads[row["chain"]] = (row["seq"], bytes(row["hash"]))
                anchored.update(new)
            key = await self._chain_key(conn)
            page = ChainedPage([], {})
            for start in range(0, len(events), _CHAIN_CHUNK):  # yields, so the page being written keeps flowing
                chunk = chain_entries(key, heads, events[start : start + _CHAIN_CHUNK])
                page.rows += chunk.rows
                page.heads.update(chunk.heads)
                await asyncio.sleep(0)
            return page

        return prepare

    @staticmethod
    async def _write(conn: asyncpg.Connection, page: ChainedPage) -> None:
        if not page.rows:
            return
        await _binary_jsonb_codec(conn)
        await conn.copy_records_to_table(_TABLE, records=page.rows, columns=_COLUMNS)
        chains = sorted(page.heads)
        await conn.execute(
            """INSERT INTO scaivault_audit_chains (chain, seq, head)
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
               ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, head = excluded.head""",
            chains,
            [page.heads[chain][0] for chain in chains],
            [page.heads[chain][1] for chain in chains],
        )


_CHAIN_CHUNK = 500  # entries chained between yields to the event loop


def decoded_from_fields(fields: Mapping[str, Any]) -> Decoded:
    """The reference path, from an AccessRecorded event's fields."""
    entry = audit_entry(0, fields)
    at = entry["recorded_at"]
    entry["recorded_at"] = utc_text(at)
    return entry, at


async def _binary_jsonb_codec(conn: asyncpg.Connection) -> None:
    """Give ``conn`` a binary jsonb codec (same JSON, sent as jsonb's binary format: a version byte, then the
    text), once per connection."""
    raw = getattr(conn, "_con", None) or conn  # a pool's connection proxy: the connection behind it
    if raw in _binary_jsonb:
        return
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: b"\x01" + orjson.dumps(value),
        decoder=lambda data: orjson.loads(data[1:]),
        schema="pg_catalog",
        format="binary",
    )
    _binary_jsonb.add(raw)
