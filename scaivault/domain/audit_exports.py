"""The AuditExport aggregate: one stream per export job, and the rules for the names a destination may carry.

Lifecycle: pending (Requested) -> running (Started; again after a crash, counting attempts) -> completed (with its
manifest) or failed (with an error message safe to show to anyone who may see the export: never a credential, nor
the host, address or a field value of a secret). Every mutator takes the time ``at`` from the caller, so the domain
reads no clock.

An export records who requested it (``Requester``: never the token itself), because its job acts on that identity's
behalf: it reads the upload credentials only if the requester may still read them when the job runs, with a token
that has neither expired nor been revoked meanwhile.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import InvalidRequest
from scaivault.domain.secrets import SecretAddress

FORMATS = frozenset({"jsonl", "csv"})
DESTINATION_TYPES = frozenset({"s3", "local"})
MAX_ERROR_LENGTH = 1000
EXPORT_ID_PATTERN = re.compile(r"exp_[0-9a-z]{26}")
PREFIX_PATTERN = re.compile(r"[a-z0-9_-]+(/[a-z0-9_-]+)*")
MAX_PREFIX_LENGTH = 256
BUCKET_PATTERN = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/audit-export")
# What reading an S3 export's credentials secret takes, when the export is requested and again when its job runs.
CREDENTIALS_SCOPE = "secrets:read"
CREDENTIALS_PERMISSION = "read"


def audit_export_stream_id(export_id: str) -> UUID:
    return uuid5(_NAMESPACE, export_id)


def valid_export_id(export_id: str) -> bool:
    return EXPORT_ID_PATTERN.fullmatch(export_id) is not None


def valid_prefix(prefix: str) -> bool:
    """A destination prefix: lower-case segments separated by '/', nothing that could climb out of a folder."""
    return prefix == "" or (len(prefix) <= MAX_PREFIX_LENGTH and PREFIX_PATTERN.fullmatch(prefix) is not None)


def valid_bucket(bucket: str) -> bool:
    return BUCKET_PATTERN.fullmatch(bucket) is not None and ".." not in bucket


def object_key(prefix: str, export_id: str, name: str) -> str:
    return f"{prefix}/{export_id}/{name}" if prefix else f"{export_id}/{name}"


def credentials_address(export_tenant: str, partner_id: str | None, path: str) -> SecretAddress:
    """Where an export's credentials live: a secret of the export's own tenant."""
    return SecretAddress(owner=export_tenant, partner_id=partner_id or "", tenant_id=export_tenant, path=path)


@dataclass(frozen=True)
class Requester:
    """Who requested an export, as a job acting for them needs it to decide again: the identity, the token's tenant
    and partner, its scopes, its own roles (the claim: the job derives the roles held from them, through the identity
    mirror as it is then) and groups, when MFA was verified, when the token expires, and the request's source
    address. The token's kind and id (a JWT's ``jti`` or a PAT's id: names, not credentials) let the job see a
    revocation. ``token_roles`` is None for an export recorded before they were (see ``_token_roles_unknown``)."""

    identity_id: str
    identity_type: str
    tenant_id: str | None
    partner_id: str | None
    scopes: tuple[str, ...]
    token_roles: tuple[str, ...] | None
    groups: tuple[str, ...]
    mfa_verified_at: datetime | None
    expires_at: datetime | None
    source_ip: str | None
    token_kind: str
    token_id: str

    def state(self) -> dict[str, Any]:
        token_roles = list(self.token_roles) if self.token_roles is not None else None
        return {**asdict(self), "scopes": list(self.scopes), "token_roles": token_roles, "groups": list(self.groups)}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Requester:
        token_roles = state["token_roles"]
        return cls(
            **{
                **state,
                "scopes": tuple(state["scopes"]),
                "token_roles": tuple(token_roles) if token_roles is not None else None,
                "groups": tuple(state["groups"]),
            }
        )


def _nobody_recorded(state: dict[str, Any]) -> None:
    """Upcasts an export (its request event, or a snapshot) stored before exports recorded their requester: with no
    requester, its job can read no credentials (it fails its credentials check rather than pass it)."""
    state["requester"] = None


def _token_roles_unknown(state: dict[str, Any]) -> None:
    """Upcasts an export stored when its requester's ``roles`` were the roles it held after the identity mirror,
    and without its token's expiry. Taken as the token's roles, they would outlive a mirror record removed before
    the job ran (the record's roles would stay), and the expiry cannot be checked: so the job trusts neither and
    fails such an export (``token_roles`` None) rather than act on it."""
    requester = state.get("requester")
    if requester is not None:
        requester.pop("roles", None)
        requester["token_roles"] = None
        requester["expires_at"] = None


class AuditExport(Aggregate):
    class_version = 3  # snapshots: version 1 had no requester, version 2 its effective roles and no token expiry
    upcast_v1_v2 = staticmethod(_nobody_recorded)
    upcast_v2_v3 = staticmethod(_token_roles_unknown)

    @staticmethod
    def create_id(export_id: str) -> UUID:
        return audit_export_stream_id(export_id)

    class Requested(Aggregate.Created):
        class_version = 3
        export_id: str
        tenant_id: str
        partner_id: str | None
        format: str
        since: datetime
        until: datetime
        filters: dict[str, Any]
        destination: dict[str, Any]
        estimated_records: int
        at: datetime
        actor: str
        request_id: str | None
        requester: dict[str, Any] | None
        upcast_v1_v2 = staticmethod(_nobody_recorded)
        upcast_v2_v3 = staticmethod(_token_roles_unknown)

    @event(Requested)
    def __init__(
        self,
        export_id: str,
        tenant_id: str,
        partner_id: str | None,
        format: str,
        since: datetime,
        until: datetime,
        filters: dict[str, Any],
        destination: dict[str, Any],
        estimated_records: int,
        at: datetime,
        actor: str,
        request_id: str | None,
        requester: dict[str, Any] | None,
    ) -> None:
        if format not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(sorted(FORMATS))}")
        if destination.get("type") not in DESTINATION_TYPES:
            raise InvalidRequest(f"destination type must be one of {', '.join(sorted(DESTINATION_TYPES))}")
        if not since < until:
            raise InvalidRequest("'from' must be before 'to'")
        self.export_id = export_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.format = format
        self.since = since
        self.until = until
        self.filters = filters
        self.destination = destination
        self.estimated_records = estimated_records
        self.created_at = at
        self.created_by = actor
        self.requester = requester
        self.status = "pending"
        self.attempts = 0
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.manifest: dict[str, Any] | None = None
        self.error: str | None = None

    @property
    def requested_by(self) -> Requester | None:
        """Who requested the export; None for an export stored before requesters were recorded."""
        return Requester.from_state(self.requester) if self.requester is not None else None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def start(self, *, at: datetime) -> bool:
        """Start (or, after a crash left it running, restart) the job; False when it already finished."""
        if self.finished:
            return False
        self._started(at=at, attempt=self.attempts + 1)
        return True

    class Started(Aggregate.Event):
        at: datetime
        attempt: int

    @event(Started)
    def _started(self, *, at: datetime, attempt: int) -> None:
        self.status = "running"
        self.attempts = attempt
        self.started_at = at

    def complete(self, *, manifest: dict[str, Any], at: datetime) -> bool:
        if self.status != "running":
            return False
        self._completed(manifest=manifest, at=at)
        return True

    class Completed(Aggregate.Event):
        manifest: dict[str, Any]
        at: datetime

    @event(Completed)
    def _completed(self, *, manifest: dict[str, Any], at: datetime) -> None:
        self.status = "completed"
        self.manifest = manifest
        self.completed_at = at

    def fail(self, *, error: str, at: datetime) -> bool:
        if self.finished:
            return False
        self._failed(error=error[:MAX_ERROR_LENGTH], at=at)
        return True

    class Failed(Aggregate.Event):
        error: str
        at: datetime

    @event(Failed)
    def _failed(self, *, error: str, at: datetime) -> None:
        self.status = "failed"
        self.error = error
        self.completed_at = at
