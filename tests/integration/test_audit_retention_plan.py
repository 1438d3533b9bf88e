"""Audit retention's once-a-minute question, "which entries are past retention?", must cost the same on a large
audit log as on an empty one: with the plan its prepared statement settles on after its first runs, the statement
reads only the entries past retention (migration 0017), not the whole log (bench/scale.py found it reading all of a
million-secret store's audit log every minute)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from projections.maintenance.retention import enforce_audit_retention
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.root_keys import LocalRootKeyProvider
from scaivault.database import create_pool

ENTRIES = 20_000
# What finding nothing may read: an index descent or two, whatever the size of the log.
MAX_PAGES = 12


Statement = tuple[str, tuple[Any, ...]]  # SQL and its arguments


async def execute_call(conn: asyncpg.Connection, name: str, statement: Statement) -> str:
    """``EXECUTE name(...)`` with the statement's arguments written as typed literals (EXECUTE takes no bound
    parameters), after ``PREPARE name`` of its SQL with its parameters' types."""
    sql, args = statement
    types = [await conn.fetchval("SELECT format_type($1::oid, NULL)", p.oid)
             for p in (await conn.prepare(sql)).get_parameters()]
    literals = [await conn.fetchval(f"SELECT quote_nullable($1::{t}::text) || '::{t}'", arg)
                for t, arg in zip(types, args, strict=True)]
    await conn.execute(f"PREPARE {name} ({', '.join(types)}) AS {sql}")
    return f"EXECUTE {name}({', '.join(literals)})"


def pages(plan: dict[str, Any]) -> int:
    top = plan["Plan"]
    return int(top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0))


def indexes_used(node: dict[str, Any]) -> set[str]:
    found = {node["Index Name"]} if "Index Name" in node else set()
    for child in node.get("Plans", []):
        found |= indexes_used(child)
    return found


@contextlib.asynccontextmanager
async def one_connection_pool(database_url: str) -> AsyncIterator[tuple[asyncpg.Pool, list[Statement]]]:
    """A pool of one connection, and the statements sent through it (so the job's own SQL is what is examined)."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    sent: list[Statement] = []
    try:
        async with pool.acquire() as conn:
            conn.add_query_logger(lambda record: sent.append((record.query, tuple(record.args or ()))))
        yield pool, sent
    finally:
        await pool.close()


async def test_the_retention_check_reads_a_few_pages_of_a_large_audit_log(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    await pool.execute(  # one entry a second until now, in four chains
        """INSERT INTO scaivault_audit_log (chain, seq, notification_id, recorded_at, request_id, action, method,
               route, status, success, duration_ms, extra, prev_hash, hash)
           SELECT 'tnt_' || (n % 4), n, n, $2::timestamptz - make_interval(secs => $1::int - n), 'req_' || n,
                  'read', 'GET', '/v1/secrets/{path}', 200, true, 1, '{}', '\\x00', '\\x00'
           FROM generate_series(1, $1::int) n""",
        ENTRIES,
        now,
    )
    await pool.execute("INSERT INTO scaivault_tracking (application_name, notification_id) VALUES ('audit_log', $1)",
                       ENTRIES)
    await pool.execute("ANALYZE scaivault_audit_log")
    keyring = KeyRing(LocalRootKeyProvider(tmp_path / "data"))
    database = await pool.fetchval("SELECT current_database()")
    async with one_connection_pool(database_url) as (job_pool, sent):
        assert await job_pool.fetchval("SELECT current_database()") == database
        for _ in range(3):  # all within retention: nothing removed
            report = await enforce_audit_retention(job_pool, keyring, retention=timedelta(days=30), now=now)
            assert report.removed_entries == 0
    question = next((sql, args) for sql, args in sent if "FROM scaivault_audit_log" in sql and "recorded_at <" in sql)

    async with pool.acquire() as conn, conn.transaction():
        # As the job's cached statement runs: custom plans first, then, from the sixth run, the generic plan
        # whenever PostgreSQL estimates it no dearer.
        call = await execute_call(conn, "retention_question", question)
        try:
            for _ in range(6):
                await conn.fetch(call)
            raw = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {call}")
        finally:
            await conn.execute("DEALLOCATE retention_question")
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    assert pages(plan) <= MAX_PAGES, f"{pages(plan)} pages read: {plan}"
    assert "scaivault_audit_log_recorded_at_idx" in indexes_used(plan["Plan"]), plan
