"""Verifying an audit chain against its key and its recorded head (the API's and the CLI's shared check)."""

from __future__ import annotations

import hmac
from typing import Any

import asyncpg

from projections.audit.queries import chain_entries_in_order, chain_head
from scaivault.audit.chain import CHAIN_KEY_NAME, GENESIS, anchor_mac, verify_chain
from scaivault.crypto.keyring import KeyRing


async def verify_audit_chain(pool: asyncpg.Pool, keyring: KeyRing, chain: str) -> dict[str, Any]:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        key = await keyring.system_key(conn, CHAIN_KEY_NAME) if await _has_key(conn) else bytes(32)
        head_seq, head_hash = await chain_head(conn, chain)
        anchor = await conn.fetchrow("SELECT * FROM scaivault_audit_anchors WHERE chain = $1", chain)
        entries = [entry async for entry in await chain_entries_in_order(conn, chain)]
    start_seq, start_hash = 1, GENESIS
    if anchor is not None:
        expected = anchor_mac(key, chain, anchor["seq"], bytes(anchor["hash"]), anchor["removed_before"])
        if not hmac.compare_digest(expected, bytes(anchor["mac"])):
            return {"valid": False, "verified_entries": 0, "chain_length": head_seq,
                    "first_invalid": {"id": f"log_{anchor['seq']}", "sequence": anchor["seq"], "problem": "altered",
                                      "detail": "the retention anchor does not match its MAC"}}
        start_seq, start_hash = anchor["seq"] + 1, bytes(anchor["hash"])
    verified, problem = verify_chain(
        key, entries, head_seq=head_seq, head_hash=head_hash, start_seq=start_seq, start_hash=start_hash
    )
    report: dict[str, Any] = {"valid": problem is None, "verified_entries": verified, "chain_length": head_seq}
    if problem is not None:
        report["first_invalid"] = {"id": f"log_{problem.seq}", "sequence": problem.seq, "problem": problem.problem,
                                   "detail": problem.detail}
    return report


async def _has_key(conn: asyncpg.Connection) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM scaivault_system_keys WHERE name = $1", CHAIN_KEY_NAME))
