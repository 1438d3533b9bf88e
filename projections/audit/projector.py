"""Builds the audit log from AccessRecorded events, extending each tenant's hash chain."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from scaivault.audit.chain import ENTRY_FIELDS, GENESIS, SYSTEM_CHAIN, entry_hash
from scaivault.domain.access import AccessRecorded

_COLUMNS = (*ENTRY_FIELDS, "prev_hash", "hash")
_INSERT = f"""
INSERT INTO scaivault_audit_log ({", ".join(_COLUMNS)})
VALUES ({", ".join(f"${n}" for n in range(1, len(_COLUMNS) + 1))})
"""


def audit_entry(notification_id: int, event: AccessRecorded) -> dict[str, Any]:
    return {
        "chain": event.tenant_id or SYSTEM_CHAIN,
        "seq": 0,
        "notification_id": notification_id,
        "recorded_at": event.timestamp,
        "request_id": event.request_id,
        "partner_id": event.partner_id,
        "tenant_id": event.tenant_id,
        "identity_id": event.identity_id,
        "identity_type": event.identity_type,
        "action": event.action,
        "method": event.method,
        "route": event.route,
        "secret_path": event.secret_path,
        "status": event.status,
        "success": event.success,
        "error_code": event.error_code,
        "source_ip": event.source_ip,
        "user_agent": event.user_agent,
        "duration_ms": event.duration_ms,
        "extra": event.extra,
    }


class AuditLogProjection(Projection):
    name = "audit_log"
    topics = frozenset({get_topic(AccessRecorded)})
    tables = ("scaivault_audit_log", "scaivault_audit_chains")

    def __init__(self, chain_key: Callable[[asyncpg.Connection], Awaitable[bytes]]) -> None:
        self._chain_key = chain_key

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        if not events:
            return
        key = await self._chain_key(conn)
        entries = [audit_entry(notification_id, event) for notification_id, event in events]
        chains = sorted({entry["chain"] for entry in entries})
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
        rows = []
        for entry in entries:
            seq, prev_hash = heads.get(entry["chain"], (0, GENESIS))
            entry["seq"] = seq + 1
            digest = entry_hash(key, prev_hash, entry)
            heads[entry["chain"]] = (seq + 1, digest)
            rows.append((*(entry[name] for name in ENTRY_FIELDS), prev_hash, digest))
        await conn.executemany(_INSERT, rows)
        await conn.execute(
            """INSERT INTO scaivault_audit_chains (chain, seq, head)
               SELECT * FROM unnest($1::text[], $2::bigint[], $3::bytea[])
               ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, head = excluded.head""",
            chains,
            [heads[chain][0] for chain in chains],
            [heads[chain][1] for chain in chains],
        )
