"""Builds the secrets read model from Secret events.

Runs inline (in the transaction that appends the events, so a read after a write sees it) and is the same code a
rebuild replays, so a rebuilt model equals the live one.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import asyncpg

from scaivault.domain.secrets import Secret

Statement = tuple[str, tuple[Any, ...]]


async def project_secret_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    statement = secret_statement(domain_event)
    if statement is not None:
        await conn.execute(statement[0], *statement[1])


def secret_statement(domain_event: Any) -> Statement | None:
    """The one statement that applies a Secret event to the read model (None for other events)."""
    build = _STATEMENTS.get(type(domain_event))
    return None if build is None else build(domain_event)


async def project_secret_events(conn: asyncpg.Connection, events: Sequence[Any]) -> None:
    """Apply many Secret events with few round trips, for a rebuild: in waves, the n-th event of every stream in
    wave n, so each stream's events keep their order while a wave touches each stream once; within a wave the
    statements touch different secrets and commute, so each kind goes as one pipelined ``executemany``."""
    waves: list[dict[str, list[tuple[Any, ...]]]] = []
    seen: dict[Any, int] = defaultdict(int)
    for event in events:
        statement = secret_statement(event)
        if statement is None:
            continue
        wave = seen[event.originator_id]
        seen[event.originator_id] = wave + 1
        if wave == len(waves):
            waves.append(defaultdict(list))
        sql, args = statement
        waves[wave][sql].append(args)
    for wave_statements in waves:
        for sql, rows in wave_statements.items():
            if len(rows) == 1:
                await conn.execute(sql, *rows[0])
            else:
                await conn.executemany(sql, rows)


def _created(e: Any) -> Statement:
    return (
        "INSERT INTO scaivault_secret_streams (stream_id, owner, path, partner_id, tenant_id)"
        " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (stream_id) DO NOTHING",
        (e.originator_id, e.owner, e.path, e.partner_id, e.tenant_id),
    )


# Each event is one statement (data-modifying CTEs), so projecting costs one round trip per event live, and a
# rebuild can pipeline many.
_INSERT_VERSION = """
    INSERT INTO scaivault_secret_versions (stream_id, version, ciphertext, data_key_id, expires_at, created_at,
        created_by) VALUES ($1, $3, $10, $11, $6, $8, $9)
"""
_CREATE_SECRET_WITH_VERSION = f"""
    WITH secret AS (
        INSERT INTO scaivault_secrets (owner, path, stream_id, partner_id, tenant_id, secret_type, current_version,
            metadata, max_versions, expires_at, rotation_policy_id, secret_policy_id,
            created_at, created_by, updated_at, updated_by)
        SELECT owner, path, stream_id, partner_id, tenant_id, $2, $3, $4, $5, $6, $7, NULL, $8, $9, $8, $9
        FROM scaivault_secret_streams WHERE stream_id = $1
    )
    {_INSERT_VERSION}
"""
_ADD_VERSION = f"""
    WITH secret AS (
        UPDATE scaivault_secrets SET secret_type = $2, current_version = $3, metadata = $4, max_versions = $5,
            expires_at = $6, rotation_policy_id = $7, updated_at = $8, updated_by = $9
        WHERE stream_id = $1
    )
    {_INSERT_VERSION}
"""


def _version_written(e: Any) -> Statement:
    return (
        _CREATE_SECRET_WITH_VERSION if e.created else _ADD_VERSION,
        (e.originator_id, e.secret_type, e.version, e.metadata, e.max_versions, e.expires_at, e.rotation_policy_id,
         e.at, e.actor, e.ciphertext, e.data_key_id),
    )


def _metadata_updated(e: Any) -> Statement:
    return (
        """
        UPDATE scaivault_secrets SET metadata = $2, secret_type = $3, max_versions = $4, expires_at = $5,
            rotation_policy_id = $6, secret_policy_id = $7, updated_at = $8, updated_by = $9
        WHERE stream_id = $1
        """,
        (e.originator_id, e.metadata, e.secret_type, e.max_versions, e.expires_at, e.rotation_policy_id,
         e.secret_policy_id, e.at, e.actor),
    )


_TOUCH_SECRET = "UPDATE scaivault_secrets SET updated_at = $3, updated_by = $4 WHERE stream_id = $1"
_AGE_OUT_VERSIONS = f"""
    WITH gone AS (DELETE FROM scaivault_secret_versions WHERE stream_id = $1 AND version = ANY($2::int[]))
    {_TOUCH_SECRET}
"""
_DESTROY_VERSIONS = f"""
    WITH gone AS (
        UPDATE scaivault_secret_versions SET ciphertext = NULL, destroyed_at = $3
        WHERE stream_id = $1 AND version = ANY($2::int[])
    )
    {_TOUCH_SECRET}
"""


def _versions_destroyed(e: Any) -> Statement:
    return (
        _AGE_OUT_VERSIONS if e.reason == "aged_out" else _DESTROY_VERSIONS,
        (e.originator_id, e.versions, e.at, e.actor),
    )


def _deleted(e: Any) -> Statement:
    return (
        "UPDATE scaivault_secrets SET deleted_at = $2, recoverable_until = $3, deleted_by = $4, updated_at = $2,"
        " updated_by = $4 WHERE stream_id = $1",
        (e.originator_id, e.at, e.recoverable_until, e.actor),
    )


def _restored(e: Any) -> Statement:
    return (
        "UPDATE scaivault_secrets SET deleted_at = NULL, recoverable_until = NULL, deleted_by = NULL,"
        " updated_at = $2, updated_by = $3 WHERE stream_id = $1",
        (e.originator_id, e.at, e.actor),
    )


def _purged(e: Any) -> Statement:
    return (
        "WITH versions AS (DELETE FROM scaivault_secret_versions WHERE stream_id = $1),"
        " last_access AS (DELETE FROM scaivault_secret_last_access WHERE stream_id = $1)"
        " DELETE FROM scaivault_secrets WHERE stream_id = $1",
        (e.originator_id,),
    )


def _rotated(e: Any) -> Statement:
    """The version a rotation superseded stays readable until its grace period ends (docs/rotation.md)."""
    return (
        "UPDATE scaivault_secret_versions SET readable_until = $3 WHERE stream_id = $1 AND version = $2",
        (e.originator_id, e.old_version, e.grace_period_ends),
    )


_STATEMENTS: dict[type, Any] = {
    Secret.Created: _created,
    Secret.VersionWritten: _version_written,
    Secret.MetadataUpdated: _metadata_updated,
    Secret.VersionsDestroyed: _versions_destroyed,
    Secret.Deleted: _deleted,
    Secret.Restored: _restored,
    Secret.Purged: _purged,
    Secret.Rotated: _rotated,
}

SECRET_EVENTS = tuple(_STATEMENTS)
