"""Audit retention: entries older than the retention period (default 7 years) are removed, with the access events
they came from, their event-index rows and the last-access times only they supported, and each chain keeps a MAC'd
anchor so what remains still verifies. Runs in any server process; one at a time (a session advisory lock shared
with rebuilds)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from projections.audit.projector import AuditLogProjection
from projections.event_index import EventIndexProjection
from projections.runner import swap_key, tracked_position
from scaivault.audit.chain import CHAIN_KEY_NAME, anchor_mac
from scaivault.crypto.keyring import KeyRing
from scaivault.domain.access import ACCESS_TOPIC
from scaivault.eventstore.locks import EXCLUSIVE_READ_MODEL_LOCK, MAINTENANCE_KEY


@dataclass(frozen=True)
class RetentionReport:
    removed_entries: int
    removed_events: int
    chains: int
    skipped: bool = False


async def enforce_audit_retention(
    pool: asyncpg.Pool, keyring: KeyRing, *, retention: timedelta, now: datetime
) -> RetentionReport:
    cutoff = now - retention
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_KEY):
            return RetentionReport(0, 0, 0, skipped=True)  # another process is on it, or a rebuild runs
        try:
            async with conn.transaction():
                # The runners of projections that hold access events are between batches while we cut; only
                # entries the audit log already applied are cut.
                for projection in (AuditLogProjection.name, EventIndexProjection.name):
                    await conn.execute(EXCLUSIVE_READ_MODEL_LOCK, swap_key(projection))
                position = await tracked_position(conn, AuditLogProjection.name)
                anchors = await conn.fetch(
                    """SELECT DISTINCT ON (chain) chain, seq, hash FROM scaivault_audit_log
                       WHERE recorded_at < $1 AND notification_id <= $2 ORDER BY chain, seq DESC""",
                    cutoff,
                    position,
                )
                if not anchors:
                    return RetentionReport(0, 0, 0)
                key = await keyring.system_key(conn, CHAIN_KEY_NAME)
                await conn.executemany(
                    """INSERT INTO scaivault_audit_anchors (chain, seq, hash, removed_before, mac)
                       VALUES ($1, $2, $3, $4, $5)
                       ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,
                           removed_before = excluded.removed_before, mac = excluded.mac""",
                    [
                        (row["chain"], row["seq"], bytes(row["hash"]), cutoff,
                         anchor_mac(key, row["chain"], row["seq"], bytes(row["hash"]), cutoff))
                        for row in anchors
                    ],
                )
                removed = await conn.fetch(
                    """DELETE FROM scaivault_audit_log l USING unnest($1::text[], $2::bigint[]) AS a(chain, seq)
                       WHERE l.chain = a.chain AND l.seq <= a.seq RETURNING l.notification_id""",
                    [row["chain"] for row in anchors],
                    [row["seq"] for row in anchors],
                )
                removed_ids = [row["notification_id"] for row in removed]
                removed_events = await conn.execute(
                    "DELETE FROM scaivault_events WHERE topic = $1 AND notification_id = ANY($2::bigint[])",
                    ACCESS_TOPIC,
                    removed_ids,
                )
                await conn.execute(
                    "DELETE FROM scaivault_event_index WHERE notification_id = ANY($1::bigint[])", removed_ids
                )
                # Last-access times older than the cut rest only on removed access events: a rebuild could not
                # reproduce them, so they go too.
                await conn.execute("DELETE FROM scaivault_secret_last_access WHERE last_accessed_at < $1", cutoff)
                return RetentionReport(len(removed), int(removed_events.split()[-1]), len(anchors))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_KEY)
