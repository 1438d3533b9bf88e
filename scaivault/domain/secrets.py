"""The Secret aggregate: one stream per (owner, path), holding its versions, metadata and lifecycle.

Lifecycle: absent -> live -> soft-deleted (restorable until ``recoverable_until``) -> live again, or -> purged
(every remaining version's data key destroyed; the path is free again). Version numbers are never reused for a path,
even after a purge, so a version number identifies one value for the whole audit history.

Values arrive already encrypted: the domain sees ciphertext and the id of the data key that sealed it, nothing more.
Every mutator takes the time ``at`` from the caller, so the domain reads no clock.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import (
    InvalidRequest,
    InvalidSecretType,
    SecretExists,
    SecretNotFound,
    ValidationFailed,
    VersionConflict,
    VersionNotFound,
)

MAX_METADATA_BYTES = 16 * 1024
SECRET_TYPES = frozenset({"kv", "json", "certificate", "ssh_key", "api_key"})
DEFAULT_SECRET_TYPE = "kv"
_STREAM_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/secret")


def secret_stream_id(owner: str, path: str) -> UUID:
    """Deterministic, so a command can load a secret by its address without any index lookup."""
    return uuid5(_STREAM_NAMESPACE, f"{owner}\x00{path}")


@dataclass(frozen=True)
class SecretAddress:
    """Where a secret lives: its owner (a tenant id, or a partner id for partner secrets) and its path."""

    owner: str
    partner_id: str
    tenant_id: str | None
    path: str

    @property
    def stream_id(self) -> UUID:
        return secret_stream_id(self.owner, self.path)

    @property
    def partner_owned(self) -> bool:
        """A partner secret: readable by every tenant of its partner, not governed by tenants' policies."""
        return self.tenant_id is None


def check_secret_type(secret_type: str) -> str:
    if secret_type not in SECRET_TYPES:
        raise InvalidSecretType(
            f"Unknown secret_type {secret_type[:40]!r}; expected one of {', '.join(sorted(SECRET_TYPES))}"
        )
    return secret_type


class Secret(Aggregate):
    @staticmethod
    def create_id(owner: str, path: str) -> UUID:
        return secret_stream_id(owner, path)

    # Event classes are declared, not made by ``@event("Name")``, so that a type checker sees them; each keeps the
    # name, and so the stored topic (``scaivault.domain.secrets:Secret.<Name>``), and the fields it was stored with.
    class Created(Aggregate.Created):
        owner: str
        path: str
        partner_id: str
        tenant_id: str | None

    @event(Created)
    def __init__(self, owner: str, path: str, partner_id: str, tenant_id: str | None) -> None:
        self.owner = owner
        self.path = path
        self.partner_id = partner_id
        self.tenant_id = tenant_id
        self.live = False
        self.secret_type = DEFAULT_SECRET_TYPE
        self.metadata: dict[str, Any] = {}
        self.max_versions = 0
        self.expires_at: datetime | None = None
        self.rotation_policy_id: str | None = None
        self.secret_policy_id: str | None = None
        self.last_version = 0  # the highest version number ever written at this path
        self.versions: list[dict[str, Any]] = []  # retained versions of the live secret, oldest first
        self.created_at: datetime | None = None
        self.updated_at: datetime | None = None
        self.deleted_at: datetime | None = None
        self.recoverable_until: datetime | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret:
        """Copies what mutators change in place (the version entries) and shares what they only ever replace
        (metadata and the other values): a generic deep copy cost more than the rest of a write."""
        clone = copy.copy(self)
        clone.__dict__["_pending_events"] = []
        clone.versions = [dict(entry) for entry in self.versions]
        return clone

    # ---- queries on state -------------------------------------------------------------------------------------

    @property
    def current_version(self) -> int:
        """The version a plain read returns; 0 when there is no live secret."""
        return self.versions[-1]["version"] if self.live and self.versions else 0

    @property
    def is_deleted(self) -> bool:
        return self.live and self.deleted_at is not None

    def in_retention(self, at: datetime) -> bool:
        return self.is_deleted and self.recoverable_until is not None and at < self.recoverable_until

    def version_entry(self, version: int) -> dict[str, Any]:
        for entry in self.versions:
            if entry["version"] == version:
                return entry
        raise VersionNotFound(path=self.path, version=version)

    # ---- commands ---------------------------------------------------------------------------------------------

    def write(
        self,
        *,
        version: int,
        ciphertext: bytes,
        data_key_id: str,
        at: datetime,
        actor: str,
        request_id: str | None,
        secret_type: str | None,
        metadata: dict[str, Any] | None,
        max_versions: int | None,
        default_max_versions: int,
        expires_in: timedelta | None,
        rotation_policy_id: str | None,
        cas: int | None,
        is_rotation: bool = False,
    ) -> None:
        """Write a new version. ``version`` must be ``next_version``: the caller sealed the value for it."""
        self.check_writable(at=at, cas=cas, actor=actor, request_id=request_id)
        assert version == self.next_version, "the value was sealed for another version"
        self._version_written(
            version=version,
            ciphertext=ciphertext,
            data_key_id=data_key_id,
            at=at,
            actor=actor,
            request_id=request_id,
            secret_type=check_secret_type(secret_type) if secret_type else self.secret_type,
            metadata=metadata if metadata is not None else self.metadata,
            max_versions=max_versions or self.max_versions or default_max_versions,
            expires_at=at + expires_in if expires_in else None,
            rotation_policy_id=rotation_policy_id if rotation_policy_id is not None else self.rotation_policy_id,
            created=not self.live,
            is_rotation=is_rotation,
        )
        self._age_out(at=at, actor=actor, request_id=request_id)

    def check_writable(self, *, at: datetime, cas: int | None, actor: str, request_id: str | None) -> None:
        """Whether a write may happen now (call it before sealing a value, so a refused write costs nothing)."""
        self._expire_deletion(at, actor, request_id)
        if self.is_deleted:
            raise SecretExists(path=self.path, recoverable_until=self.recoverable_until)
        if cas is not None and cas != self.current_version:
            raise VersionConflict(
                f"cas {cas} does not match the current version {self.current_version}",
                path=self.path,
                current_version=self.current_version,
            )

    @property
    def next_version(self) -> int:
        return self.last_version + 1

    def update_metadata(
        self,
        *,
        at: datetime,
        actor: str,
        request_id: str | None,
        metadata_patch: dict[str, Any] | None,
        secret_type: str | None,
        max_versions: int | None,
        expires_in: timedelta | None,
        clear_expiry: bool,
        rotation_policy_id: str | None,
        secret_policy_id: str | None,
    ) -> None:
        self._require_live(at, actor, request_id)
        metadata = dict(self.metadata)
        for key, value in (metadata_patch or {}).items():  # RFC 7396 merge patch, one level deep
            if value is None:
                metadata.pop(key, None)
            else:
                metadata[key] = value
        if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
            raise ValidationFailed(fields=[{"field": "metadata", "message": f"larger than {MAX_METADATA_BYTES} bytes"}])
        expires_at = None if clear_expiry else (at + expires_in if expires_in else self.expires_at)
        new_max = max_versions or self.max_versions
        self._metadata_updated(
            at=at,
            actor=actor,
            request_id=request_id,
            metadata=metadata,
            secret_type=check_secret_type(secret_type) if secret_type else self.secret_type,
            max_versions=new_max,
            expires_at=expires_at,
            rotation_policy_id=rotation_policy_id if rotation_policy_id is not None else self.rotation_policy_id,
            secret_policy_id=secret_policy_id if secret_policy_id is not None else self.secret_policy_id,
        )
        self._age_out(at=at, actor=actor, request_id=request_id)

    def delete(self, *, at: datetime, retention: timedelta, actor: str, request_id: str | None) -> None:
        self._require_live(at, actor, request_id)
        self._deleted(at=at, recoverable_until=at + retention, actor=actor, request_id=request_id)

    def restore(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self._expire_deletion(at, actor, request_id)
        if not self.live:
            raise SecretNotFound(path=self.path)
        if not self.is_deleted:
            raise InvalidRequest("The secret is not deleted", path=self.path)
        self._restored(at=at, actor=actor, request_id=request_id)

    def destroy_version(self, version: int, *, at: datetime, actor: str, request_id: str | None) -> None:
        """Destroy one version for good: its data key is shredded; the record that it existed stays."""
        self._expire_deletion(at, actor, request_id)
        if not self.live:
            raise SecretNotFound(path=self.path)
        entry = self.version_entry(version)
        if entry["destroyed"]:
            raise VersionNotFound("That version is already destroyed", path=self.path, version=version)
        self._versions_destroyed(
            versions=[version],
            data_key_ids=[entry["data_key_id"]],
            reason="destroyed",
            at=at,
            actor=actor,
            request_id=request_id,
        )

    def destroy(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        """Permanent delete: every version destroyed and the path freed (live or soft-deleted alike)."""
        self._expire_deletion(at, actor, request_id)
        if not self.live:
            raise SecretNotFound(path=self.path)
        self._purge(reason="permanent_delete", at=at, actor=actor, request_id=request_id)

    def purge_if_retention_expired(self, *, at: datetime, actor: str, request_id: str | None = None) -> bool:
        before = self.live
        self._expire_deletion(at, actor, request_id)
        return before and not self.live

    def versions_lost_to_cap(self, max_versions: int | None, *, writing: bool) -> int:
        """How many more retained versions a new ``max_versions`` destroys (now, or with the write about to be made)
        than the cap in force would: lowering the cap destroys history, which is the ``delete`` permission's to do."""
        if max_versions is None or not self.live:
            return 0
        kept = len(self.versions) + (1 if writing else 0)
        in_force = self.max_versions or max_versions
        return max(0, kept - max_versions) - max(0, kept - in_force) if writing else max(0, kept - max_versions)

    # ---- helpers ----------------------------------------------------------------------------------------------

    def _age_out(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        """Versions beyond ``max_versions``, oldest first, leave for good (their data keys are shredded)."""
        excess = len(self.versions) - self.max_versions
        if excess > 0:
            aged_out = self.versions[:excess]
            self._versions_destroyed(
                versions=[entry["version"] for entry in aged_out],
                data_key_ids=[entry["data_key_id"] for entry in aged_out if not entry["destroyed"]],
                reason="aged_out",
                at=at,
                actor=actor,
                request_id=request_id,
            )

    def _require_live(self, at: datetime, actor: str, request_id: str | None) -> None:
        self._expire_deletion(at, actor, request_id)
        if not self.live or self.is_deleted:
            raise SecretNotFound(path=self.path)

    def _expire_deletion(self, at: datetime, actor: str, request_id: str | None) -> None:
        """A soft-deleted secret whose retention has passed is purged before anything else happens to it."""
        if self.is_deleted and not self.in_retention(at):
            self._purge(reason="retention_expired", at=at, actor="system:retention", request_id=request_id)

    def _purge(self, *, reason: str, at: datetime, actor: str, request_id: str | None) -> None:
        self._purged(
            versions=[entry["version"] for entry in self.versions],
            data_key_ids=[entry["data_key_id"] for entry in self.versions if not entry["destroyed"]],
            reason=reason,
            at=at,
            actor=actor,
            request_id=request_id,
        )

    # ---- events (the method bodies are the mutators, replayed on load) ------------------------------------------

    class VersionWritten(Aggregate.Event):
        version: int
        ciphertext: bytes
        data_key_id: str
        at: datetime
        actor: str
        request_id: str | None
        secret_type: str
        metadata: dict[str, Any]
        max_versions: int
        expires_at: datetime | None
        rotation_policy_id: str | None
        created: bool
        is_rotation: bool

    @event(VersionWritten)
    def _version_written(
        self,
        *,
        version: int,
        ciphertext: bytes,
        data_key_id: str,
        at: datetime,
        actor: str,
        request_id: str | None,
        secret_type: str,
        metadata: dict[str, Any],
        max_versions: int,
        expires_at: datetime | None,
        rotation_policy_id: str | None,
        created: bool,
        is_rotation: bool,
    ) -> None:
        if created:
            self.live = True
            self.created_at = at
            self.versions = []
            self.secret_policy_id = None
        self.last_version = version
        self.versions.append(
            {"version": version, "created_at": at, "created_by": actor, "data_key_id": data_key_id, "destroyed": False}
        )
        self.secret_type = secret_type
        self.metadata = metadata
        self.max_versions = max_versions
        self.expires_at = expires_at
        self.rotation_policy_id = rotation_policy_id
        self.updated_at = at

    class MetadataUpdated(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None
        metadata: dict[str, Any]
        secret_type: str
        max_versions: int
        expires_at: datetime | None
        rotation_policy_id: str | None
        secret_policy_id: str | None

    @event(MetadataUpdated)
    def _metadata_updated(
        self,
        *,
        at: datetime,
        actor: str,
        request_id: str | None,
        metadata: dict[str, Any],
        secret_type: str,
        max_versions: int,
        expires_at: datetime | None,
        rotation_policy_id: str | None,
        secret_policy_id: str | None,
    ) -> None:
        self.metadata = metadata
        self.secret_type = secret_type
        self.max_versions = max_versions
        self.expires_at = expires_at
        self.rotation_policy_id = rotation_policy_id
        self.secret_policy_id = secret_policy_id
        self.updated_at = at

    class VersionsDestroyed(Aggregate.Event):
        versions: list[int]
        data_key_ids: list[str]
        reason: str
        at: datetime
        actor: str
        request_id: str | None

    @event(VersionsDestroyed)
    def _versions_destroyed(
        self,
        *,
        versions: list[int],
        data_key_ids: list[str],
        reason: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        gone = set(versions)
        if reason == "aged_out":
            self.versions = [entry for entry in self.versions if entry["version"] not in gone]
        else:
            for entry in self.versions:
                if entry["version"] in gone:
                    entry["destroyed"] = True
        self.updated_at = at

    class Deleted(Aggregate.Event):
        at: datetime
        recoverable_until: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, *, at: datetime, recoverable_until: datetime, actor: str, request_id: str | None) -> None:
        self.deleted_at = at
        self.recoverable_until = recoverable_until
        self.updated_at = at

    class Restored(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Restored)
    def _restored(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted_at = None
        self.recoverable_until = None
        self.updated_at = at

    class Purged(Aggregate.Event):
        versions: list[int]
        data_key_ids: list[str]
        reason: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Purged)
    def _purged(
        self,
        *,
        versions: list[int],
        data_key_ids: list[str],
        reason: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        self.live = False
        self.versions = []
        self.metadata = {}
        self.deleted_at = None
        self.recoverable_until = None
        self.expires_at = None
        self.created_at = None
        self.updated_at = at


def shredded_data_keys(events: list[Any]) -> list[str]:
    """The data keys that the given new events require destroyed (crypto-shredding happens in the same commit)."""
    keys: list[str] = []
    for domain_event in events:
        if isinstance(domain_event, (Secret.VersionsDestroyed, Secret.Purged)):
            keys.extend(domain_event.data_key_ids)
    return keys
