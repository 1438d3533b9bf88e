"""The audit chain: each entry commits to the one before it, per tenant.

``hash = HMAC-SHA256(key, prev_hash || canonical(entry))``. Under a key the database never holds in the clear, a
row altered, removed or reordered in PostgreSQL cannot be given a matching hash, and verification names the first
entry where the chain breaks.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

CHAIN_KEY_NAME = "audit-chain"
GENESIS = bytes(32)
SYSTEM_CHAIN = ""  # requests that resolved no tenant

# The fields an entry's hash covers, in the order they are stored.
ENTRY_FIELDS = (
    "chain",
    "seq",
    "notification_id",
    "recorded_at",
    "request_id",
    "partner_id",
    "tenant_id",
    "identity_id",
    "identity_type",
    "action",
    "method",
    "route",
    "secret_path",
    "status",
    "success",
    "error_code",
    "source_ip",
    "user_agent",
    "duration_ms",
    "extra",
)


def canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value


def canonical(entry: Mapping[str, Any]) -> bytes:
    """One byte string per entry, whether built from an event or read back from PostgreSQL (jsonb reorders keys,
    so keys are sorted; timestamps are microsecond UTC strings)."""
    return orjson.dumps({name: canonical_value(entry[name]) for name in ENTRY_FIELDS}, option=orjson.OPT_SORT_KEYS)


def entry_hash(key: bytes, prev_hash: bytes, entry: Mapping[str, Any]) -> bytes:
    return hmac.new(key, prev_hash + canonical(entry), hashlib.sha256).digest()


def chain_mac(key: bytes) -> Callable[[bytes], bytes]:
    """HMAC-SHA256 under ``key``, for hashing many entries: the key is set up once and copied for each message
    (OpenSSL 3 looks the algorithm up again on every one-shot ``hmac.digest``; copying a keyed context is much
    cheaper)."""
    keyed = hmac.new(key, digestmod=hashlib.sha256)

    def mac(message: bytes) -> bytes:
        h = keyed.copy()
        h.update(message)
        return h.digest()

    return mac


@dataclass(frozen=True)
class ChainBreak:
    seq: int
    problem: str  # altered | removed | reordered
    detail: str


def verify_chain(
    key: bytes, entries: Iterable[Mapping[str, Any]], *, head_seq: int, head_hash: bytes, start_seq: int = 1,
    start_hash: bytes = GENESIS,
) -> tuple[int, ChainBreak | None]:
    """Check entries (in stored ``seq`` order) against the chain; return how many verified and the first break.

    - ``removed``: a sequence number is missing (a row deleted), or the chain ends before its recorded head;
    - ``reordered``: an entry does not point at the entry before it (rows swapped or moved);
    - ``altered``: an entry points at the right predecessor, but its own fields no longer match its hash.
    """
    expected_seq, prev_hash, verified = start_seq, start_hash, 0
    mac = chain_mac(key)
    for entry in entries:
        seq = entry["seq"]
        if seq > expected_seq:
            return verified, ChainBreak(expected_seq, "removed", f"entries {expected_seq}..{seq - 1} are missing")
        if seq < expected_seq or bytes(entry["prev_hash"]) != prev_hash:
            return verified, ChainBreak(seq, "reordered", "the entry does not follow its predecessor")
        if not hmac.compare_digest(mac(prev_hash + canonical(entry)), bytes(entry["hash"])):
            return verified, ChainBreak(seq, "altered", "the entry's fields do not match its hash")
        prev_hash, expected_seq, verified = bytes(entry["hash"]), seq + 1, verified + 1
    if expected_seq <= head_seq:
        return verified, ChainBreak(expected_seq, "removed", f"entries {expected_seq}..{head_seq} are missing")
    if head_seq and not hmac.compare_digest(prev_hash, head_hash):
        return verified, ChainBreak(head_seq, "altered", "the last entry does not match the chain's head")
    return verified, None


def anchor_mac(key: bytes, chain: str, seq: int, entry_hash: bytes, removed_before: datetime) -> bytes:
    """Seals a retention anchor (where a chain resumes after its oldest entries were removed)."""
    message = b"\x00".join(
        [b"audit-anchor", chain.encode(), str(seq).encode(), entry_hash, canonical_value(removed_before).encode()]
    )
    return hmac.new(key, message, hashlib.sha256).digest()
