"""The public event catalogue (spec core-concepts/events-and-webhooks, reference/webhook-events): which domain
event gives which public events, with their ``data`` exactly as the spec shows it. docs/events.md lists them all.

Areas whose events are public register their translations here, one section per area, so the whole catalogue is
one file to read. Nothing here reads a clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, TypedDict

from scaivault.domain.access import AccessRecorded
from scaivault.domain.dynamic import Lease
from scaivault.domain.identities import Group, User
from scaivault.domain.notifications import (
    PublicEvent,
    Subject,
    declare_event_types,
    names_subject,
    translates,
)
from scaivault.domain.pki import Certificate, CertificateAuthority
from scaivault.domain.policies import Policy
from scaivault.domain.secrets import Secret
from scaivault.serialization import format_timestamp


def iso(value: datetime | None) -> str | None:
    """A timestamp in the API's form, or null."""
    return None if value is None else format_timestamp(value)


# ---------------------------------------------------------------------------------------------------------- secrets
declare_event_types(
    "secret.created", "secret.updated", "secret.deleted", "secret.restored", "secret.versions_destroyed",
    "secret.accessed",
)


@names_subject(Secret.Created)
def _secret_subject(e: Secret.Created) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=e.partner_id, path=e.path)


def secret_tags(metadata: dict[str, Any]) -> tuple[str, ...]:
    """A secret's tags as filters match them: the string items of ``metadata.tags``, if it is a list."""
    tags = metadata.get("tags")
    return tuple(t for t in tags if isinstance(t, str)) if isinstance(tags, list) else ()


@translates(Secret.VersionWritten)
def _version_written(e: Secret.VersionWritten, subject: Subject) -> Iterator[PublicEvent]:
    tags = secret_tags(e.metadata)
    if e.created:
        data: dict[str, Any] = {
            "version": e.version, "secret_type": e.secret_type, "created_by": e.actor,
            "tags": list(tags), "expires_at": iso(e.expires_at),
        }
        yield PublicEvent("secret.created", data, e.actor, e.at, e.request_id, secret_type=e.secret_type, tags=tags)
    else:
        data = {
            "old_version": subject.version if subject.version is not None else e.version - 1,
            "new_version": e.version, "updated_by": e.actor, "is_rotation": e.is_rotation,
        }
        yield PublicEvent("secret.updated", data, e.actor, e.at, e.request_id, secret_type=e.secret_type, tags=tags)


class _Facets(TypedDict):
    secret_type: str | None
    tags: tuple[str, ...]


class _Where(TypedDict):
    tenant_id: str | None
    partner_id: str | None
    path: str | None


def _secret_facets(subject: Subject) -> _Facets:
    """A secret's type and tags as of the event: what webhook filters match on."""
    return {"secret_type": subject.secret_type, "tags": subject.tags}


@translates(Secret.Deleted)
def _deleted(e: Secret.Deleted, subject: Subject) -> Iterator[PublicEvent]:
    data = {
        "version_count": subject.version or 0, "deleted_by": e.actor, "permanent": False,
        "recoverable_until": iso(e.recoverable_until),
    }
    yield PublicEvent("secret.deleted", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.Purged)
def _purged(e: Secret.Purged, subject: Subject) -> Iterator[PublicEvent]:
    # A purge at the end of a soft delete's retention is not a new deletion: the secret was deleted already.
    if e.reason == "permanent_delete":
        data = {"version_count": subject.version or 0, "deleted_by": e.actor, "permanent": True}
        yield PublicEvent("secret.deleted", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.Restored)
def _restored(e: Secret.Restored, subject: Subject) -> Iterator[PublicEvent]:
    data = {"restored_by": e.actor}
    yield PublicEvent("secret.restored", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.VersionsDestroyed)
def _versions_destroyed(e: Secret.VersionsDestroyed, subject: Subject) -> Iterator[PublicEvent]:
    if e.reason == "destroyed":  # versions aging out past max_versions are routine, not news
        data = {"versions": list(e.versions), "destroyed_by": e.actor}
        yield PublicEvent("secret.versions_destroyed", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


# --------------------------------------------------------------------------------------- access: reads and denials
declare_event_types("policy.violation")
VIOLATION_CODES = frozenset(
    {"access_denied", "ip_not_allowed", "time_window_violation", "mfa_required", "tenant_access_denied"}
)


@translates(AccessRecorded)
def _access(e: AccessRecorded, subject: Subject) -> Iterator[PublicEvent]:
    identity = e.identity_id or "anonymous"
    where: _Where = {"tenant_id": e.tenant_id, "partner_id": e.partner_id, "path": e.secret_path}
    if e.success and e.accessed_streams and e.secret_path:
        data = {"accessed_by": identity, "action": e.action, "source_ip": e.source_ip}
        if "version" in e.extra:
            data["version"] = e.extra["version"]
        yield PublicEvent("secret.accessed", data, identity, e.timestamp, e.request_id, **where)
    elif e.status == 403 and e.error_code in VIOLATION_CODES and e.identity_id:
        data = {
            "action": e.action, "method": e.method, "route": e.route, "error_code": e.error_code,
            "source_ip": e.source_ip, "identity_type": e.identity_type,
        }
        yield PublicEvent("policy.violation", data, identity, e.timestamp, e.request_id, **where)


# --------------------------------------------------------------------------------------------------------- policies
declare_event_types(
    "policy.created", "policy.updated", "policy.deleted", "policy.binding.created", "policy.binding.deleted"
)


@names_subject(Policy.Created)
def _policy_subject(e: Policy.Created) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=e.partner_id, name=e.policy_id)


@translates(Policy.Created, Policy.Updated)
def _policy_written(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    kind = "policy.created" if isinstance(e, Policy.Created) else "policy.updated"
    data = {"policy_id": _policy_id(e, subject), "name": e.name, "rule_count": len(e.rules), "is_active": e.is_active}
    yield PublicEvent(kind, data, e.actor, e.at, e.request_id)


@translates(Policy.Deleted)
def _policy_deleted(e: Policy.Deleted, subject: Subject) -> Iterator[PublicEvent]:
    yield PublicEvent("policy.deleted", {"policy_id": _policy_id(e, subject)}, e.actor, e.at, e.request_id)


@translates(Policy.BindingCreated)
def _binding_created(e: Policy.BindingCreated, subject: Subject) -> Iterator[PublicEvent]:
    data = {
        "policy_id": _policy_id(e, subject), "binding_id": e.binding_id, "identity_type": e.identity_type,
        "identity_id": e.identity_id, "expires_at": iso(e.expires_at),
    }
    yield PublicEvent("policy.binding.created", data, e.actor, e.at, e.request_id)


@translates(Policy.BindingDeleted)
def _binding_deleted(e: Policy.BindingDeleted, subject: Subject) -> Iterator[PublicEvent]:
    data = {"policy_id": _policy_id(e, subject), "binding_id": e.binding_id}
    yield PublicEvent("policy.binding.deleted", data, e.actor, e.at, e.request_id)


def _policy_id(e: Any, subject: Subject) -> str | None:
    """A policy's id: its ``Created`` event has it; the projection keeps it as the stream's subject ``name``."""
    return getattr(e, "policy_id", None) or subject.name


# --------------------------------------------------------------------------------------------- identity (mirror)
declare_event_types(
    "identity.user.created", "identity.user.updated", "identity.user.removed", "identity.group.created",
    "identity.group.removed", "identity.group.member_added", "identity.group.member_removed",
)


@names_subject(User.Created, Group.Created)
def _identity_subject(e: Any) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=None, name=getattr(e, "user_id", None) or e.group_id)


@translates(User.Created, User.Reinstated)
def _user_created(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    data = {"user_id": getattr(e, "user_id", None) or subject.name, "source": e.source,
            "email": e.profile.get("email"), "status": e.profile.get("status")}
    yield PublicEvent("identity.user.created", data, e.actor, e.at, e.request_id)


@translates(User.ProfileChanged, User.RolesChanged)
def _user_updated(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    changed = "roles" if isinstance(e, User.RolesChanged) else "profile"
    data = {"user_id": subject.name, "source": e.source, "changed": changed}
    yield PublicEvent("identity.user.updated", data, e.actor, e.at, e.request_id)


@translates(User.Removed)
def _user_removed(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    yield PublicEvent("identity.user.removed", {"user_id": subject.name, "source": e.source}, e.actor, e.at,
                      e.request_id)


@translates(Group.Created, Group.Reinstated)
def _group_created(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    data = {"group_id": getattr(e, "group_id", None) or subject.name, "source": e.source,
            "name": e.profile.get("name")}
    yield PublicEvent("identity.group.created", data, e.actor, e.at, e.request_id)


@translates(Group.Removed)
def _group_removed(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    yield PublicEvent("identity.group.removed", {"group_id": subject.name, "source": e.source}, e.actor, e.at,
                      e.request_id)


@translates(Group.MemberAdded, Group.MemberRemoved)
def _membership(e: Any, subject: Subject) -> Iterator[PublicEvent]:
    kind = "identity.group.member_added" if isinstance(e, Group.MemberAdded) else "identity.group.member_removed"
    data = {"group_id": subject.name, "user_id": e.user_id, "source": e.source}
    yield PublicEvent(kind, data, e.actor, e.at, e.request_id)


# --------------------------------------------------------------------------------------------------------- rotation
# Secret streams carry their own rotation events (docs/rotation.md); the subject is the secret's. A rotation gives
# ``secret.updated`` (is_rotation: true, from its VersionWritten), ``secret.rotated`` and ``rotation.completed``.
declare_event_types("secret.rotated", "rotation.due", "rotation.overdue", "rotation.completed", "rotation.failed")


@translates(Secret.RotationDue)
def _rotation_due(e: Secret.RotationDue, subject: Subject) -> Iterator[PublicEvent]:
    data = {"threshold": e.threshold, "due_at": iso(e.due_at), "due_now": e.due_now,
            "rotation_policy_id": e.rotation_policy_id}
    yield PublicEvent("rotation.due", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.Rotated)
def _rotated(e: Secret.Rotated, subject: Subject) -> Iterator[PublicEvent]:
    data = {
        "old_version": e.old_version, "new_version": e.new_version, "rotation_policy_id": e.rotation_policy_id,
        "rotation_policy_name": e.rotation_policy_name, "grace_period_ends": iso(e.grace_period_ends),
        "auto_generated": e.auto_generated,
    }
    yield PublicEvent("secret.rotated", data, e.actor, e.at, e.request_id, **_secret_facets(subject))
    yield PublicEvent("rotation.completed", dict(data), e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.RotationFailed)
def _rotation_failed(e: Secret.RotationFailed, subject: Subject) -> Iterator[PublicEvent]:
    data = {
        "rotation_policy_id": e.rotation_policy_id, "rotation_policy_name": e.rotation_policy_name,
        "due_at": iso(e.due_at), "error": {"code": e.error_code, "message": e.error_message},
    }
    yield PublicEvent("rotation.failed", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.RotationOverdue)
def _rotation_overdue(e: Secret.RotationOverdue, subject: Subject) -> Iterator[PublicEvent]:
    data = {"rotation_policy_id": e.rotation_policy_id, "due_at": iso(e.due_at)}
    yield PublicEvent("rotation.overdue", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


# ----------------------------------------------------------------------------------------------------------- expiry
declare_event_types("secret.expiring", "secret.expired")


@translates(Secret.ExpiryWarned)
def _expiring(e: Secret.ExpiryWarned, subject: Subject) -> Iterator[PublicEvent]:
    data = {"expires_at": iso(e.expires_at), "days_remaining": e.days_remaining, "threshold": e.threshold}
    yield PublicEvent("secret.expiring", data, e.actor, e.at, e.request_id, **_secret_facets(subject))


@translates(Secret.Expired)
def _expired(e: Secret.Expired, subject: Subject) -> Iterator[PublicEvent]:
    yield PublicEvent("secret.expired", {"expires_at": iso(e.expires_at)}, e.actor, e.at, e.request_id,
                      **_secret_facets(subject))


# ----------------------------------------------------------------------------------------------------- certificates
declare_event_types("certificate.issued", "certificate.renewed", "certificate.revoked", "certificate.expiring")


@names_subject(Certificate.Issued)
def _certificate_subject(e: Certificate.Issued) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=e.partner_id, name=e.certificate_id)


@names_subject(CertificateAuthority.Created)
def _ca_subject(e: CertificateAuthority.Created) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=e.partner_id, name=e.ca_id)


@translates(Certificate.Issued)
def _certificate_issued(e: Certificate.Issued, subject: Subject) -> Iterator[PublicEvent]:
    data: dict[str, Any] = {
        "certificate_id": e.certificate_id, "serial_number": e.serial_number, "common_name": e.common_name,
        "alt_names": list(e.dns_names), "ip_sans": list(e.ip_sans), "ca_id": e.ca_id, "role": e.role_name,
        "not_before": iso(e.not_before), "not_after": iso(e.not_after), "source": e.source,
        "issued_by": e.actor,
    }
    if e.renewal_of is not None:
        yield PublicEvent("certificate.renewed", {**data, "renewal_of": e.renewal_of}, e.actor, e.at, e.request_id)
    else:
        yield PublicEvent("certificate.issued", data, e.actor, e.at, e.request_id)


@translates(Certificate.Revoked)
def _certificate_revoked(e: Certificate.Revoked, subject: Subject) -> Iterator[PublicEvent]:
    data = {"certificate_id": subject.name, "reason": e.reason, "revoked_by": e.actor, "revoked_at": iso(e.at)}
    yield PublicEvent("certificate.revoked", data, e.actor, e.at, e.request_id)


@translates(CertificateAuthority.Revoked)
def _ca_revoked(e: CertificateAuthority.Revoked, subject: Subject) -> Iterator[PublicEvent]:
    """A CA's revocation revokes everything under it as one fact: one event names the CA (``ca_id``, no
    ``certificate_id``) rather than one per certificate."""
    data = {
        "ca_id": subject.name, "certificate_authority": True, "reason": e.reason, "cascade_from": e.cascade_from,
        "revoked_by": e.actor, "revoked_at": iso(e.at),
    }
    yield PublicEvent("certificate.revoked", data, e.actor, e.at, e.request_id)


@translates(Certificate.ExpiryWarned)
def _certificate_expiring(e: Certificate.ExpiryWarned, subject: Subject) -> Iterator[PublicEvent]:
    remaining = e.expires_at - e.at
    data = {
        "certificate_id": subject.name, "expires_at": iso(e.expires_at),
        "days_remaining": max(0, remaining.days), "seconds_remaining": max(0, int(remaining.total_seconds())),
    }
    yield PublicEvent("certificate.expiring", data, e.actor, e.at, None)


# ---------------------------------------------------------------------------------------------- dynamic secrets
# The spec describes lease grant and revocation events without naming them: these are ScaiVault's names. No event
# carries a credential: the user name only (what the target and its own logs show), never the password.
declare_event_types("lease.granted", "lease.renewed", "lease.revoked", "lease.revocation_failed")


@names_subject(Lease.Granted)
def _lease_subject(e: Lease.Granted) -> Subject:
    return Subject(tenant_id=e.tenant_id, partner_id=e.partner_id, name=e.lease_id,
                   path=f"dynamic/{e.engine_name}/creds/{e.role_name}")


@translates(Lease.Granted)
def _lease_granted(e: Lease.Granted, subject: Subject) -> Iterator[PublicEvent]:
    data = {
        "lease_id": e.lease_id, "engine": e.engine_name, "role": e.role_name, "engine_type": e.engine_type,
        "username": e.username, "issued_at": iso(e.issued_at), "expires_at": iso(e.expires_at),
        "renewable": e.renewable, "requested_by": e.requested_by,
    }
    yield PublicEvent("lease.granted", data, e.requested_by, e.issued_at, e.request_id)


@translates(Lease.Renewed)
def _lease_renewed(e: Lease.Renewed, subject: Subject) -> Iterator[PublicEvent]:
    data = {"lease_id": subject.name, "expires_at": iso(e.expires_at), "renewed_by": e.actor}
    yield PublicEvent("lease.renewed", data, e.actor, e.at, e.request_id)


@translates(Lease.Revoked)
def _lease_revoked(e: Lease.Revoked, subject: Subject) -> Iterator[PublicEvent]:
    data = {"lease_id": subject.name, "reason": e.reason, "revoked_by": e.actor, "revoked_at": iso(e.at)}
    yield PublicEvent("lease.revoked", data, e.actor, e.at, e.request_id)


@translates(Lease.RevocationFailed)
def _lease_revocation_failed(e: Lease.RevocationFailed, subject: Subject) -> Iterator[PublicEvent]:
    data = {"lease_id": subject.name, "reason": e.reason, "error": e.error, "attempts": e.attempts,
            "next_attempt_at": iso(e.next_attempt_at)}
    yield PublicEvent("lease.revocation_failed", data, e.actor, e.at, None)


# ------------------------------------------------------------------------------------------ areas not built yet
# Types the spec names for areas that have no aggregates yet, declared so that webhooks and subscriptions may ask for
# them today; each area adds its translators when it lands. Every area the spec names has landed.
AWAITING_AREA: dict[str, tuple[str, ...]] = {}
