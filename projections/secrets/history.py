"""Forensic reads: a secret as it was at a past time T, rebuilt from its event stream (never from the read model).

The Secret stream's events are replayed with eventsourcing's ``mutate`` up to the last event whose time (``at``,
else the event's ``timestamp``) is <= T. What the aggregate does not keep (each version's ciphertext and expiry,
when it was destroyed, who last changed the secret) is collected from the same events on the way. The answers are
rows with the read model's column names, so the HTTP layer treats them like the live ones.

Nothing here decrypts: a value row carries the version's ciphertext (from its VersionWritten event) and the wrapped
data key as stored *now*; a version destroyed since then has no data key any more and stays unreadable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from scaivault.database import Queryable
from scaivault.domain.errors import InvalidRequest
from scaivault.domain.secrets import Secret, secret_stream_id
from scaivault.domain.timestamps import parse_timestamp
from scaivault.eventstore.repository import Repository


def parse_as_of(raw: str, *, now: datetime | None = None) -> datetime:
    """An ISO 8601 timestamp not in the future (naive means UTC). Raises 400 ``invalid_request`` otherwise."""
    text = raw.strip()
    if " " in text and "T" in text:
        text = text.replace(" ", "+")  # an unencoded '+' of the UTC offset arrives as a space
    try:
        value = parse_timestamp(text)
    except ValueError:
        raise InvalidRequest("'as_of' must be an ISO 8601 timestamp", parameter="as_of") from None
    if value > (now or datetime.now(UTC)):
        raise InvalidRequest("'as_of' must not be in the future", parameter="as_of")
    return value


def event_time(domain_event: Any) -> datetime:
    """When an event happened: its ``at`` (the command's clock, what the read model shows), else its timestamp."""
    at = getattr(domain_event, "at", None)
    return at if isinstance(at, datetime) else domain_event.timestamp


@dataclass
class _Version:
    ciphertext: bytes
    data_key_id: str
    expires_at: datetime | None
    destroyed_at: datetime | None = None


@dataclass
class SecretAsOf:
    """The Secret aggregate replayed up to T, plus what its events said on the way."""

    stream_id: UUID
    as_of: datetime
    secret: Secret
    versions: dict[int, _Version] = field(default_factory=dict)
    created_by: str | None = None
    updated_by: str | None = None
    deleted_by: str | None = None

    @property
    def live(self) -> bool:
        """The secret existed at T (live or soft-deleted), as a row of ``scaivault_secrets`` would have."""
        return bool(self.secret.live)

    def version_entry(self, version: int) -> dict[str, Any] | None:
        return next((entry for entry in self.secret.versions if entry["version"] == version), None)


async def secret_as_of(
    conn: Queryable, repository: Repository, owner: str, path: str, as_of: datetime
) -> SecretAsOf | None:
    """The secret at (owner, path) as it was at ``as_of``; None if its stream had no event by then."""
    stream_id = secret_stream_id(owner, path)
    events = await repository.history(conn, stream_id)
    last = None
    for index, domain_event in enumerate(events):
        if event_time(domain_event) <= as_of:
            last = index
    if last is None:
        return None
    state: SecretAsOf | None = None
    aggregate: Any = None
    for domain_event in events[: last + 1]:
        aggregate = domain_event.mutate(aggregate)
        if state is None:
            state = SecretAsOf(stream_id=stream_id, as_of=as_of, secret=aggregate)
        state.secret = aggregate
        _observe(state, domain_event)
    return state


def _observe(state: SecretAsOf, e: Any) -> None:
    """Collect what the read model keeps and the aggregate does not, exactly as the inline projector does."""
    actor = getattr(e, "actor", None)
    if isinstance(e, Secret.VersionWritten):
        state.versions[e.version] = _Version(e.ciphertext, e.data_key_id, e.expires_at)
        if e.created:
            state.created_by = actor
            state.deleted_by = None
        state.updated_by = actor
    elif isinstance(e, Secret.VersionsDestroyed):
        if e.reason != "aged_out":
            for version in e.versions:
                if version in state.versions:
                    state.versions[version].destroyed_at = e.at
        state.updated_by = actor
    elif isinstance(e, Secret.Deleted):
        state.deleted_by = actor
        state.updated_by = actor
    elif isinstance(e, (Secret.MetadataUpdated, Secret.Restored)):
        if isinstance(e, Secret.Restored):
            state.deleted_by = None
        state.updated_by = actor


def _secret_columns(state: SecretAsOf) -> dict[str, Any]:
    s = state.secret
    return {
        "owner": s.owner,
        "path": s.path,
        "stream_id": state.stream_id,
        "partner_id": s.partner_id,
        "tenant_id": s.tenant_id,
        "secret_type": s.secret_type,
        "current_version": s.current_version,
        "metadata": s.metadata,
        "max_versions": s.max_versions,
        "expires_at": s.expires_at,
        "rotation_policy_id": s.rotation_policy_id,
        "secret_policy_id": s.secret_policy_id,
        "created_at": s.created_at,
        "created_by": state.created_by,
        "updated_at": s.updated_at,
        "updated_by": state.updated_by,
        "deleted_at": s.deleted_at,
        "recoverable_until": s.recoverable_until,
        "deleted_by": state.deleted_by,
        # Reads are not part of a secret's history; the audit log has them.
        "last_accessed_at": None,
        "version_count": len(s.versions),
    }


async def secret_metadata_row_as_of(
    conn: Queryable, repository: Repository, owner: str, path: str, as_of: datetime
) -> dict[str, Any] | None:
    """Like ``queries.secret_metadata_row``, at ``as_of``: None when no secret (live or soft-deleted) existed."""
    state = await secret_as_of(conn, repository, owner, path, as_of)
    if state is None or not state.live:
        return None
    return _secret_columns(state)


async def secret_versions_as_of(
    conn: Queryable, repository: Repository, owner: str, path: str, as_of: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """The metadata row and the retained versions (newest first, like ``queries.version_rows``) at ``as_of``."""
    state = await secret_as_of(conn, repository, owner, path, as_of)
    if state is None or not state.live:
        return None
    rows = []
    for entry in reversed(state.secret.versions):
        info = state.versions[entry["version"]]
        rows.append(
            {
                "version": entry["version"],
                "created_at": entry["created_at"],
                "created_by": entry["created_by"],
                "expires_at": info.expires_at,
                "destroyed_at": info.destroyed_at,
            }
        )
    return _secret_columns(state), rows


async def secret_value_row_as_of(
    conn: Queryable, repository: Repository, owner: str, path: str, version: int | None, as_of: datetime
) -> dict[str, Any] | None:
    """Like ``queries.secret_value_row``, at ``as_of``: the secret with one version (the one current at T unless
    ``version`` is given). Version columns are None when that version was not retained at T; ``ciphertext`` is
    None when it was destroyed by T, and ``wrapped_data_key`` when its data key is gone now (destroyed since)."""
    state = await secret_as_of(conn, repository, owner, path, as_of)
    if state is None or not state.live:
        return None
    row = _secret_columns(state)
    wanted = version if version is not None else state.secret.current_version
    entry = state.version_entry(wanted) if wanted else None
    row.update(
        version=None,
        ciphertext=None,
        data_key_id=None,
        version_created_at=None,
        version_created_by=None,
        destroyed_at=None,
        version_expires_at=None,
        wrapped_data_key=None,
    )
    if entry is None:
        return row
    info = state.versions[wanted]
    row.update(
        version=wanted,
        data_key_id=info.data_key_id,
        version_created_at=entry["created_at"],
        version_created_by=entry["created_by"],
        destroyed_at=info.destroyed_at,
        version_expires_at=info.expires_at,
    )
    if entry["destroyed"]:
        return row
    row["ciphertext"] = info.ciphertext
    row["wrapped_data_key"] = await conn.fetchval(
        "SELECT wrapped FROM scaivault_data_keys WHERE id = $1 AND owner = $2", info.data_key_id, state.secret.owner
    )
    return row
