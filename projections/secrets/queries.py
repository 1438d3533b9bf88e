"""Queries over the secrets read model. Plain functions; they never load aggregates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

from scaivault.database import Queryable

_SECRET_COLUMNS = """
    s.owner, s.path, s.stream_id, s.partner_id, s.tenant_id, s.secret_type, s.current_version, s.metadata,
    s.max_versions, s.expires_at, s.rotation_policy_id, s.secret_policy_id, s.created_at, s.created_by,
    s.updated_at, s.updated_by, s.deleted_at, s.recoverable_until, s.deleted_by, a.last_accessed_at,
    (SELECT count(*) FROM scaivault_secret_versions c WHERE c.stream_id = s.stream_id) AS version_count
"""


_VALUE_QUERY = """
SELECT s.owner, s.path, s.stream_id, s.secret_type, s.current_version, s.metadata, s.expires_at,
       s.rotation_policy_id, s.secret_policy_id, s.created_at, s.updated_at, s.deleted_at,
       s.recoverable_until, a.last_accessed_at,
       v.version, v.ciphertext, v.data_key_id, v.created_at AS version_created_at,
       v.created_by AS version_created_by, v.destroyed_at, v.expires_at AS version_expires_at, v.readable_until,
       k.wrapped AS wrapped_data_key
FROM scaivault_secrets s
LEFT JOIN scaivault_secret_versions v ON v.stream_id = s.stream_id AND v.version = coalesce($3, s.current_version)
LEFT JOIN scaivault_data_keys k ON k.id = v.data_key_id
LEFT JOIN scaivault_secret_last_access a ON a.stream_id = s.stream_id
WHERE s.owner = $1 AND s.path = ANY($2::text[])
"""


async def secret_value_rows(conn: Queryable, owner: str, paths: list[str], version: int | None) -> list[asyncpg.Record]:
    """Secrets with one version's ciphertext and wrapped data key each (the current version when ``version`` is
    None). Version columns are NULL when the secret exists but that version does not (or no longer does)."""
    return await conn.fetch(_VALUE_QUERY, owner, paths, version)


async def secret_value_row(conn: Queryable, owner: str, path: str, version: int | None) -> asyncpg.Record | None:
    rows = await secret_value_rows(conn, owner, [path], version)
    return rows[0] if rows else None


async def secret_metadata_row(conn: Queryable, owner: str, path: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        f"""SELECT {_SECRET_COLUMNS} FROM scaivault_secrets s
        LEFT JOIN scaivault_secret_last_access a ON a.stream_id = s.stream_id
        WHERE s.owner = $1 AND s.path = $2""",
        owner,
        path,
    )


async def list_secret_rows(
    conn: Queryable, owner: str, *, prefix: str, after: str | None, limit: int, include_deleted: bool,
    expiring_before: datetime | None = None,
) -> list[asyncpg.Record]:
    """Secrets whose path starts with ``prefix``, in path order, after the path ``after`` (keyset pagination).

    Paths use only a-z 0-9 - _ /, all below '~' in byte order, so [prefix, prefix || '~') is exactly the prefix
    range and stays an index range scan (no LIKE, whose '_' wildcard would also be wrong here).
    ``expiring_before``: only secrets with an expiry before then (expired ones included)."""
    return await conn.fetch(
        f"""SELECT {_SECRET_COLUMNS} FROM scaivault_secrets s
        LEFT JOIN scaivault_secret_last_access a ON a.stream_id = s.stream_id
        WHERE s.owner = $1 AND s.path >= $2 AND s.path < $2 || '~' AND s.path > coalesce($3, '')
          AND ($5 OR s.deleted_at IS NULL) AND ($6::timestamptz IS NULL OR s.expires_at < $6)
        ORDER BY s.path LIMIT $4""",
        owner,
        prefix,
        after,
        limit,
        include_deleted,
        expiring_before,
    )


async def version_rows(conn: Queryable, stream_id: Any) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT version, created_at, created_by, expires_at, destroyed_at, readable_until"
        " FROM scaivault_secret_versions"
        " WHERE stream_id = $1 ORDER BY version DESC",
        stream_id,
    )


def metadata_document(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    """The public metadata shape of a secret (never its value)."""
    document = {
        "path": row["path"],
        "secret_type": row["secret_type"],
        "version": row["current_version"],
        "current_version": row["current_version"],
        "version_count": row["version_count"],
        "max_versions": row["max_versions"],
        "metadata": row["metadata"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
        "expires_at": row["expires_at"],
        "last_accessed_at": row["last_accessed_at"],
        "rotation_policy_id": row["rotation_policy_id"],
        "secret_policy_id": row["secret_policy_id"],
        "deleted": row["deleted_at"] is not None,
    }
    if row["deleted_at"] is not None:
        document["deleted_at"] = row["deleted_at"]
        document["recoverable_until"] = row["recoverable_until"]
    return document

