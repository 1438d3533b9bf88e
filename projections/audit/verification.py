"""Verifying an audit chain against its key and its recorded head (the API's and the CLI's shared check)."""

from __future__ import annotations

import hmac
from typing import Any

import asyncpg

from projections.audit.queries import chain_anchor, chain_entries_in_order, chain_head
from scaivault.audit.chain import CHAIN_KEY_NAME, GENESIS, anchor_mac, verify_chain
from scaivault.crypto.keyring import KeyRing


async def verify_audit_chain(pool: asyncpg.Pool, keyring: KeyRing, chain: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        key = await keyring.system_key(conn, CHAIN_KEY_NAME) if await _has_key(conn) else bytes(32)
        head_seq, head_hash = await chain_head(conn, chain)
        anchor = await chain_anchor(conn, chain)
        entries = [entry async for entry in await chain_entries_in_order(conn, chain)]
    start_seq, start_hash = 1, GENESIS
    if anchor is not None:
        expected = anchor_mac(key, chain, anchor["seq"], bytes(anchor["hash"]), anchor["removed_before"])
        if not hmac.compare_digest(expected, bytes(anchor["mac"])):
            broken = _first_invalid(anchor["seq"], "altered", "the retention anchor does not match its MAC")
            return {"valid": False, "verified_entries": 0, "chain_length": head_seq, "first_invalid": broken}
        start_seq, start_hash = anchor["seq"] + 1, bytes(anchor["hash"])
    verified, problem = verify_chain(
        key, entries, head_seq=head_seq, head_hash=head_hash, start_seq=start_seq, start_hash=start_hash
    )
    report: dict[str, Any] = {"valid": problem is None, "verified_entries": verified, "chain_length": head_seq}
    if problem is not None:
        report["first_invalid"] = _first_invalid(problem.seq, problem.problem, problem.detail)
    return report


def _first_invalid(seq: int, problem: str, detail: str) -> dict[str, Any]:
    return {"id": f"log_{seq}", "sequence": seq, "problem": problem, "detail": detail}


async def _has_key(conn: asyncpg.Connection) -> bool:
    # KeyRing.system_key creates a missing key, which this read-only transaction cannot. No key yet means no entries;
    # a key row removed afterwards leaves a zero key, under which no entry verifies.
    return bool(await conn.fetchval("SELECT 1 FROM scaivault_system_keys WHERE name = $1", CHAIN_KEY_NAME))
