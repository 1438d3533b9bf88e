"""Personal access tokens: ``skt_`` + 43 URL-safe characters (32 random bytes), stored only as their SHA-256.

A lookup hashes whatever it is given (so an unknown or malformed token costs the same as a known one), finds the row
by the indexed hash, and compares the hashes again in constant time.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

import asyncpg

from scaivault.auth.principal import identity_type_of
from scaivault.auth.revocation import revoke
from scaivault.domain.durations import MAX_DURATION
from scaivault.ids import new_id

PAT_PREFIX = "skt_"
PAT_ID_PREFIX = "pat_"
DEFAULT_PAT_TTL = timedelta(days=90)
_PAT_FORMAT = re.compile(r"^skt_[A-Za-z0-9_-]{43}$")
_PAT_ID_FORMAT = re.compile(r"^pat_[0-9a-z]{26}$")

_COLUMNS = """id, token_hash, identity_id, identity_type, display_name, tenant_id, partner_id, scopes, roles, groups,
              created_at, expires_at, revoked_at"""


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def looks_like_pat(token: str) -> bool:
    return bool(_PAT_FORMAT.match(token))


async def issue_pat(
    conn: asyncpg.Connection,
    *,
    identity_id: str,
    tenant_id: str | None,
    partner_id: str | None,
    scopes: Iterable[str],
    roles: Iterable[str] = (),
    groups: Iterable[str] = (),
    display_name: str | None = None,
    identity_type: str | None = None,
    ttl: timedelta = DEFAULT_PAT_TTL,
) -> tuple[str, str]:
    """Create a PAT; return (the token, shown once and never stored; its id ``pat_...``)."""
    if not isinstance(identity_id, str) or not identity_id:
        raise ValueError("identity_id is required")
    if not timedelta(0) < ttl <= MAX_DURATION:
        raise ValueError("ttl must be positive and at most 100 years")
    if isinstance(scopes, str):
        scopes = scopes.split()
    token = PAT_PREFIX + secrets.token_urlsafe(32)
    pat_id = new_id(PAT_ID_PREFIX)
    await conn.execute(
        """INSERT INTO scaivault_personal_access_tokens
               (id, token_hash, identity_id, identity_type, display_name, tenant_id, partner_id, scopes, roles,
                groups, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        pat_id,
        hash_token(token),
        identity_id,
        identity_type or identity_type_of(identity_id),
        display_name,
        tenant_id,
        partner_id,
        list(dict.fromkeys(scopes)),
        list(roles),
        list(groups),
        datetime.now(UTC) + ttl,
    )
    return token, pat_id


async def find_pat(conn: asyncpg.Connection, token: str) -> asyncpg.Record | None:
    """The PAT's row (revoked and expired ones included: the caller decides), or None if there is no such token."""
    digest = hash_token(token if isinstance(token, str) else "")
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM scaivault_personal_access_tokens WHERE token_hash = $1", digest)
    stored = bytes(row["token_hash"]) if row is not None else bytes(32)
    matches = hmac.compare_digest(stored, digest)
    return row if row is not None and matches and looks_like_pat(token) else None


async def revoke_pat(conn: asyncpg.Connection, pat_id_or_token: str) -> bool:
    """Revoke by id (``pat_...``) or by the token itself; True if a live PAT was revoked now, False if unknown or
    already revoked. Also records the revocation so every server's RevocationCache drops cached verifications."""
    if isinstance(pat_id_or_token, str) and pat_id_or_token.startswith(PAT_PREFIX):
        row = await find_pat(conn, pat_id_or_token)
        if row is None:
            return False
        pat_id = row["id"]
    elif isinstance(pat_id_or_token, str) and _PAT_ID_FORMAT.match(pat_id_or_token):
        pat_id = pat_id_or_token
    else:
        return False
    # Inside a command's transaction already (begun by hand, so asyncpg could not nest a savepoint in it), or alone.
    async with contextlib.nullcontext() if conn.is_in_transaction() else conn.transaction():
        row = await conn.fetchrow(
            """UPDATE scaivault_personal_access_tokens SET revoked_at = now()
               WHERE id = $1 AND revoked_at IS NULL RETURNING id, expires_at""",
            pat_id,
        )
        if row is None:
            return False
        await revoke(conn, "pat", row["id"], row["expires_at"])
    return True
