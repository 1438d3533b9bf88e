"""Revoked JWT ids (``jti``) and PAT ids, kept in memory on every server.

``revoke`` records one (and NOTIFYs ``scaivault_token_revocations`` on commit); ``RevocationCache.refresh`` reads
only rows it has not seen (``id > last_seen``), plus any ids below that it skipped because their transaction had
not committed yet (a bigserial id is taken at INSERT, visible at COMMIT; gaps are re-checked for a while).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from scaivault.database import Queryable

REVOCATION_CHANNEL = "scaivault_token_revocations"
KINDS = frozenset({"jti", "pat"})
GAP_RECHECK_SECONDS = 120.0
MAX_GAPS = 10_000
MAX_GAP_SPAN = 1_000


async def revoke(conn: asyncpg.Connection, kind: str, value: str, expires_at: datetime | None) -> None:
    """Record a revocation (idempotent). ``expires_at``: when the token would have expired anyway (the entry can
    be forgotten after that); None keeps it for ever."""
    if kind not in KINDS:
        raise ValueError("kind must be 'jti' or 'pat'")
    if not isinstance(value, str) or not value:
        raise ValueError("value is required")
    await conn.execute(
        """INSERT INTO scaivault_token_revocations (kind, value, expires_at) VALUES ($1, $2, $3)
           ON CONFLICT (kind, value) DO NOTHING""",
        kind,
        value,
        expires_at,
    )
    await conn.execute("SELECT pg_notify($1, $2)", REVOCATION_CHANNEL, kind)


async def purge_expired(conn: asyncpg.Connection, *, grace: float = 3600.0) -> int:
    """Delete revocations of tokens that expired more than ``grace`` seconds ago. Returns rows deleted."""
    result = await conn.execute(
        "DELETE FROM scaivault_token_revocations WHERE expires_at < now() - make_interval(secs => $1)", grace
    )
    return int(result.split()[-1])


class RevocationCache:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._revoked: dict[tuple[str, str], datetime | None] = {}
        self._last_seen = 0
        self._gaps: dict[int, float] = {}  # id -> when we first noticed it missing
        self._clock = clock
        self.refreshed_at: float | None = None  # clock() of the last successful refresh

    def __repr__(self) -> str:
        return f"<RevocationCache entries={len(self._revoked)} last_seen={self._last_seen}>"

    def __len__(self) -> int:
        return len(self._revoked)

    def age(self) -> float:
        """Seconds since the last successful refresh (infinite if never refreshed)."""
        return float("inf") if self.refreshed_at is None else self._clock() - self.refreshed_at

    def is_revoked(self, kind: str, value: str) -> bool:
        return (kind, value) in self._revoked

    async def refresh(self, conn: Queryable) -> int:
        """Read revocations not seen yet (one query: a connection or a pool will do); return how many were added."""
        rows = await conn.fetch(
            """SELECT id, kind, value, expires_at FROM scaivault_token_revocations
               WHERE id > $1 OR id = ANY($2::bigint[]) ORDER BY id""",
            self._last_seen,
            list(self._gaps),
        )
        now = self._clock()
        added = 0
        for row in rows:
            self._gaps.pop(row["id"], None)
            if row["id"] > self._last_seen:
                # Only recent ids can belong to transactions still in flight; older gaps are rollbacks or purges.
                for missing in range(max(self._last_seen + 1, row["id"] - MAX_GAP_SPAN), row["id"]):
                    if len(self._gaps) >= MAX_GAPS:
                        break
                    self._gaps[missing] = now
                self._last_seen = row["id"]
            key = (row["kind"], row["value"])
            if key not in self._revoked:
                added += 1
            self._revoked[key] = row["expires_at"]
        self._gaps = {gap: seen for gap, seen in self._gaps.items() if now - seen < GAP_RECHECK_SECONDS}
        self._forget_expired()
        self.refreshed_at = now
        return added

    def _forget_expired(self) -> None:
        # Tokens are rejected as expired anyway once past exp (+ leeway); keep a day's margin for clock skew.
        horizon = datetime.now(UTC).timestamp() - 86400
        expired = [key for key, exp in self._revoked.items() if exp is not None and exp.timestamp() < horizon]
        for key in expired:
            del self._revoked[key]
