"""Verifying an audit chain against its key and its recorded head (the API's and the CLI's shared check)."""

from __future__ import annotations

from typing import Any

import asyncpg

from projections.audit.queries import chain_entries_in_order, chain_head
from scaivault.audit.chain import CHAIN_KEY_NAME, verify_chain
from scaivault.crypto.keyring import KeyRing


async def verify_audit_chain(pool: asyncpg.Pool, keyring: KeyRing, chain: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        key = await keyring.system_key(conn, CHAIN_KEY_NAME) if await _has_key(conn) else bytes(32)
        head_seq, head_hash = await chain_head(conn, chain)
        entries = [entry async for entry in await chain_entries_in_order(conn, chain)]
    verified, problem = verify_chain(key, entries, head_seq=head_seq, head_hash=head_hash)
    report: dict[str, Any] = {"valid": problem is None, "verified_entries": verified, "chain_length": head_seq}
    if problem is not None:
        report["first_invalid"] = {"id": f"log_{problem.seq}", "sequence": problem.seq, "problem": problem.problem,
                                   "detail": problem.detail}
    return report


async def _has_key(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM scaivault_system_keys WHERE name = $1", CHAIN_KEY_NAME))
