"""The Secret aggregate: one stream per (owner, path), holding its versions, metadata and lifecycle.

Lifecycle: absent -> live -> soft-deleted (restorable until ``recoverable_until``) -> live again, or -> purged
(every remaining version's data key destroyed; the path is free again). Version numbers are never reused for a path,
even after a purge, so a version number identifies one value for the whole audit history.

Values arrive already encrypted: the domain sees ciphertext and the id of the data key that sealed it, nothing more.
Every mutator takes the time ``at`` from the caller, so the domain reads no clock.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

import orjson
from eventsourcing.domain import Aggregate, event

from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.errors import (
    InvalidRequest,
    InvalidSecretType,
    SecretExists,
    SecretNotFound,
    ValidationFailed,
    VersionConflict,
    VersionNotFound,
)
from scaivault.domain.rotation import (
    SCHEDULER_IDENTITY,
    RotationTerms,
    days_remaining,
    notify_thresholds,
    reached_thresholds,
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
    # Rotation and expiry schedules (docs/rotation.md). Class defaults, so that snapshots taken before these existed
    # load without them. ``rotation_notice``: the cycle's notices so far (policy id and name, due_at, grace_period):
    # once given, the owner's next write is the rotation.
    rotation_cycle_start: datetime | None = None
    rotation_warned: Sequence[str] = ()  # lists once set (as a snapshot gives them back)
    rotation_notice: dict[str, Any] | None = None
    rotation_pending: bool = False
    rotation_overdue: bool = False
    last_rotated_at: datetime | None = None
    expiry_warned: Sequence[str] = ()
    expired_notified: bool = False

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
        notice = self.rotation_notice if self.live and not is_rotation else None
        old_version = self.current_version
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
            is_rotation=is_rotation or notice is not None,
        )
        if notice is not None:
            self._rotated(
                old_version=old_version, new_version=version, rotation_policy_id=notice["policy_id"],
                rotation_policy_name=notice["policy_name"],
                grace_period_ends=at + parse_duration(notice["grace_period"]), auto_generated=False, at=at,
                actor=actor, request_id=request_id,
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
        clear_rotation_policy: bool = False,
        clear_secret_policy: bool = False,
    ) -> None:
        """A policy id of None keeps the current link; ``clear_*`` removes it (a PATCH's explicit null)."""
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
            rotation_policy_id=_link(rotation_policy_id, self.rotation_policy_id, clear=clear_rotation_policy),
            secret_policy_id=_link(secret_policy_id, self.secret_policy_id, clear=clear_secret_policy),
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

    # ---- rotation and expiry (docs/rotation.md): each step decided from this aggregate's own state ------------

    def attach_rotation_policy(
        self, policy_id: str | None, *, at: datetime, actor: str, request_id: str | None
    ) -> bool:
        """Attach (or, with None, detach) a rotation policy; the secret's cycle starts now. False: no change. A
        soft-deleted secret can be detached (its policy is being deleted), not attached."""
        if policy_id is not None:
            self._require_live(at, actor, request_id)
        if not self.live or policy_id == self.rotation_policy_id:
            return False
        self._metadata_updated(
            at=at, actor=actor, request_id=request_id, metadata=self.metadata, secret_type=self.secret_type,
            max_versions=self.max_versions, expires_at=self.expires_at, rotation_policy_id=policy_id,
            secret_policy_id=self.secret_policy_id,
        )
        return True

    @property
    def _schedulable(self) -> bool:
        return self.live and not self.is_deleted

    def _follows(self, terms: RotationTerms | None) -> bool:
        return (
            terms is not None and self._schedulable and terms.policy_id == self.rotation_policy_id
            and self.rotation_cycle_start is not None
        )

    def advance_rotation(
        self, terms: RotationTerms | None, *, at: datetime, actor: str = SCHEDULER_IDENTITY,
        request_id: str | None = None,
    ) -> bool:
        """Take the rotation step due by ``at``, if any: a warning, ``due_now``, or ``overdue``. True when a new
        value must be generated now (auto-generate): the caller then calls ``rotate`` or ``rotation_failed``."""
        if terms is None or not terms.is_active or not self._follows(terms) or self.rotation_overdue:
            return False
        assert self.rotation_cycle_start is not None
        due_at = terms.due_at(self.rotation_cycle_start)
        if self.rotation_pending:
            assert self.rotation_notice is not None
            if at >= self.rotation_notice["due_at"] + terms.grace_period:
                self._rotation_overdue(rotation_policy_id=terms.policy_id, due_at=self.rotation_notice["due_at"],
                                       at=at, actor=actor, request_id=request_id)
            return False
        if at >= due_at:
            if terms.auto_generate:
                return True
            self._announce_due(terms, due_at, at=at, actor=actor, request_id=request_id)
            return False
        reached = reached_thresholds(terms.warn_before, due_at, at, self.rotation_warned)
        if reached:
            self._rotation_due(
                rotation_policy_id=terms.policy_id, rotation_policy_name=terms.name, threshold=reached[-1],
                covers=reached, due_at=due_at, due_now=False, grace_period=_duration_text(terms.grace_period),
                at=at, actor=actor, request_id=request_id,
            )
        return False

    def request_rotation(self, terms: RotationTerms, *, at: datetime, actor: str, request_id: str | None) -> bool:
        """Rotate now (``POST .../rotate``). True when a new value must be generated now; otherwise the owner is
        asked for one (``due_now``), unless that was asked already."""
        if not self._follows(terms):
            raise InvalidRequest("The secret is not attached to this rotation policy", path=self.path)
        if terms.auto_generate:
            return True
        if not self.rotation_pending:
            self._announce_due(terms, at, at=at, actor=actor, request_id=request_id)
        return False

    def _announce_due(
        self, terms: RotationTerms, due_at: datetime, *, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self._rotation_due(
            rotation_policy_id=terms.policy_id, rotation_policy_name=terms.name, threshold=None,
            covers=[label for label, _ in terms.warn_before], due_at=due_at, due_now=True,
            grace_period=_duration_text(terms.grace_period), at=at, actor=actor, request_id=request_id,
        )

    def rotate(
        self, terms: RotationTerms, *, version: int, ciphertext: bytes, data_key_id: str, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        """Write the auto-generated new version: everything but the value stays as it was."""
        assert self._follows(terms) and version == self.next_version, "the value was sealed for another version"
        old_version = self.current_version
        self._version_written(
            version=version, ciphertext=ciphertext, data_key_id=data_key_id, at=at, actor=actor,
            request_id=request_id, secret_type=self.secret_type, metadata=self.metadata,
            max_versions=self.max_versions, expires_at=self.expires_at, rotation_policy_id=self.rotation_policy_id,
            created=False, is_rotation=True,
        )
        self._rotated(
            old_version=old_version, new_version=version, rotation_policy_id=terms.policy_id,
            rotation_policy_name=terms.name, grace_period_ends=at + terms.grace_period, auto_generated=True, at=at,
            actor=actor, request_id=request_id,
        )
        self._age_out(at=at, actor=actor, request_id=request_id)

    def rotation_failed(
        self, terms: RotationTerms, *, error_code: str, error_message: str, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        """An auto-generated rotation could not be made: reported once; the owner's next write is the rotation."""
        assert self.rotation_cycle_start is not None
        self._rotation_failed(
            rotation_policy_id=terms.policy_id, rotation_policy_name=terms.name, error_code=error_code,
            error_message=error_message[:500], due_at=min(at, terms.due_at(self.rotation_cycle_start)),
            grace_period=_duration_text(terms.grace_period), at=at, actor=actor, request_id=request_id,
        )

    def advance_expiry(self, *, at: datetime, actor: str = SCHEDULER_IDENTITY, request_id: str | None = None) -> None:
        """Send the expiry notice due by ``at``, if any: a ``notify_before`` threshold, or the expiry itself."""
        if not self._schedulable or self.expires_at is None or self.expired_notified:
            return
        if at >= self.expires_at:
            self._expired(expires_at=self.expires_at, at=at, actor=actor, request_id=request_id)
            return
        reached = reached_thresholds(notify_thresholds(self.metadata), self.expires_at, at, self.expiry_warned)
        if reached:
            self._expiry_warned(
                threshold=reached[-1], covers=reached, expires_at=self.expires_at,
                days_remaining=days_remaining(self.expires_at, at), at=at, actor=actor, request_id=request_id,
            )

    def _track_schedules(self, *, at: datetime, rotation_policy_id: str | None, expires_at: datetime | None,
                         restart: bool) -> None:
        """A newly attached policy starts a rotation cycle; a new expiry starts a new set of expiry notices."""
        if restart or rotation_policy_id != self.rotation_policy_id:
            self._start_rotation_cycle(at if rotation_policy_id is not None else None)
        if restart or expires_at != self.expires_at:
            self.expiry_warned = []
            self.expired_notified = False

    def _start_rotation_cycle(self, at: datetime | None) -> None:
        self.rotation_cycle_start = at
        self.rotation_warned = []
        self.rotation_notice = None
        self.rotation_pending = False
        self.rotation_overdue = False

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
        self._track_schedules(at=at, rotation_policy_id=rotation_policy_id, expires_at=expires_at, restart=created)
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
        self._track_schedules(at=at, rotation_policy_id=rotation_policy_id, expires_at=expires_at, restart=False)
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


    class RotationDue(Aggregate.Event):
        """A ``warn_before`` threshold reached (``threshold``; ``covers``: the thresholds it speaks for), or the
        rotation due now (``due_now``, no threshold) when the owner must write the new value."""

        rotation_policy_id: str
        rotation_policy_name: str
        threshold: str | None
        covers: list[str]
        due_at: datetime
        due_now: bool
        grace_period: str
        at: datetime
        actor: str
        request_id: str | None

    @event(RotationDue)
    def _rotation_due(
        self, *, rotation_policy_id: str, rotation_policy_name: str, threshold: str | None, covers: list[str],
        due_at: datetime, due_now: bool, grace_period: str, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        warned = self.rotation_warned
        self.rotation_warned = [*warned, *(label for label in covers if label not in warned)]
        self.rotation_notice = {"policy_id": rotation_policy_id, "policy_name": rotation_policy_name,
                                "due_at": due_at, "grace_period": grace_period}
        if due_now:
            self.rotation_pending = True

    class Rotated(Aggregate.Event):
        """The version written just before (``VersionWritten`` with ``is_rotation``) completed a rotation; the old
        version stays readable until ``grace_period_ends``."""

        old_version: int
        new_version: int
        rotation_policy_id: str
        rotation_policy_name: str
        grace_period_ends: datetime
        auto_generated: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Rotated)
    def _rotated(
        self, *, old_version: int, new_version: int, rotation_policy_id: str, rotation_policy_name: str,
        grace_period_ends: datetime, auto_generated: bool, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self._start_rotation_cycle(at)
        self.last_rotated_at = at
        for entry in self.versions:
            if entry["version"] == old_version:
                entry["readable_until"] = grace_period_ends

    class RotationFailed(Aggregate.Event):
        rotation_policy_id: str
        rotation_policy_name: str
        error_code: str
        error_message: str
        due_at: datetime
        grace_period: str
        at: datetime
        actor: str
        request_id: str | None

    @event(RotationFailed)
    def _rotation_failed(
        self, *, rotation_policy_id: str, rotation_policy_name: str, error_code: str, error_message: str,
        due_at: datetime, grace_period: str, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.rotation_notice = {"policy_id": rotation_policy_id, "policy_name": rotation_policy_name,
                                "due_at": due_at, "grace_period": grace_period}
        self.rotation_pending = True

    class RotationOverdue(Aggregate.Event):
        rotation_policy_id: str
        due_at: datetime
        at: datetime
        actor: str
        request_id: str | None

    @event(RotationOverdue)
    def _rotation_overdue(
        self, *, rotation_policy_id: str, due_at: datetime, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.rotation_overdue = True

    class ExpiryWarned(Aggregate.Event):
        threshold: str
        covers: list[str]
        expires_at: datetime
        days_remaining: int
        at: datetime
        actor: str
        request_id: str | None

    @event(ExpiryWarned)
    def _expiry_warned(
        self, *, threshold: str, covers: list[str], expires_at: datetime, days_remaining: int, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        warned = self.expiry_warned
        self.expiry_warned = [*warned, *(label for label in covers if label not in warned)]

    class Expired(Aggregate.Event):
        expires_at: datetime
        at: datetime
        actor: str
        request_id: str | None

    @event(Expired)
    def _expired(self, *, expires_at: datetime, at: datetime, actor: str, request_id: str | None) -> None:
        self.expired_notified = True


def _link(given: str | None, current: str | None, *, clear: bool) -> str | None:
    if clear:
        if given is not None:
            raise ValueError("a link is either set or cleared")
        return None
    return given if given is not None else current


def _duration_text(duration: timedelta) -> str:
    return format_duration(duration)


def shredded_data_keys(events: list[Any]) -> list[str]:
    """The data keys that the given new events require destroyed (crypto-shredding happens in the same commit)."""
    keys: list[str] = []
    for domain_event in events:
        if isinstance(domain_event, (Secret.VersionsDestroyed, Secret.Purged)):
            keys.extend(domain_event.data_key_ids)
    return keys
