"""Advisory locks that coordinate writers of inline read models with a rebuild swapping those read models.

Every transaction that writes an inline read model holds ``READ_MODEL_SWAP_KEY`` shared; a rebuild's swap takes it
exclusively, so it waits for those in flight and holds back new ones until the swapped tables are live. Without
it, a command that updated the old table and then appended its events would be lost from the new one.
"""

from __future__ import annotations

import hashlib


def advisory_key(name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"scaivault:{name}".encode()).digest()[:8], "big", signed=True)


READ_MODEL_SWAP_KEY = advisory_key("read-model-swap")
SHARED_READ_MODEL_LOCK = "SELECT pg_advisory_xact_lock_shared($1)"
EXCLUSIVE_READ_MODEL_LOCK = "SELECT pg_advisory_xact_lock($1)"

# Held (session-level) by maintenance that rewrites history-derived state: a rebuild, audit retention.
MAINTENANCE_KEY = advisory_key("maintenance")
