"""Public events: stable ids, type patterns, the catalogue (every type the spec names, each translation's
payload keys, docs/events.md) and the catalogue's translation of a secret's life."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.access import AccessRecorded
from scaivault.domain.dynamic import Lease
from scaivault.domain.event_catalog import AWAITING_AREA
from scaivault.domain.identities import Group, User
from scaivault.domain.notifications import (
    UNKNOWN_SUBJECT,
    Subject,
    event_id,
    event_types,
    public_events,
    subject_named_by,
    translated_classes,
    type_matches,
    valid_type_pattern,
)
from scaivault.domain.pki import Certificate, CertificateAuthority
from scaivault.domain.policies import Policy
from scaivault.domain.secrets import Secret

AT = datetime(2026, 4, 23, 14, 0, tzinfo=UTC)


@given(st.uuids(), st.integers(1, 10**6), st.integers(0, 5))
def test_event_ids_are_derived_from_the_domain_event(stream, version, index) -> None:
    first = event_id(stream, version, index, AT)
    assert first == event_id(stream, version, index, AT)
    assert first != event_id(stream, version, index + 1, AT) and first != event_id(stream, version + 1, index, AT)
    assert first.startswith("evt_") and len(first) == 30


def test_event_ids_sort_by_time() -> None:
    stream = uuid4()
    ids = [event_id(stream, v, 0, AT + timedelta(milliseconds=v)) for v in range(1, 50)]
    assert ids == sorted(ids)


def test_type_patterns() -> None:
    assert type_matches(["secret.rotated"], "secret.rotated")
    assert type_matches(["secret.*"], "secret.rotated") and not type_matches(["secret.*"], "secretive.x")
    assert type_matches(["*"], "policy.violation")
    assert not type_matches(["secret.rotated"], "secret.updated") and not type_matches([], "secret.updated")
    assert valid_type_pattern("secret.created") and valid_type_pattern("policy.*") and valid_type_pattern("*")
    assert not valid_type_pattern("secret.exploded") and not valid_type_pattern("nothing.*")
    assert not valid_type_pattern("secret") and not valid_type_pattern("")


# Every type the spec names (core-concepts/events-and-webhooks, reference/webhook-events, the rotation pages). The
# spec describes lease grant and revocation events without naming them: ``lease.*`` are ScaiVault's names.
SPEC_TYPES = frozenset({
    "secret.created", "secret.updated", "secret.deleted", "secret.rotated", "secret.expiring", "secret.expired",
    "secret.accessed",
    "policy.created", "policy.updated", "policy.deleted", "policy.binding.created", "policy.binding.deleted",
    "policy.violation",
    "rotation.due", "rotation.overdue", "rotation.completed", "rotation.failed",
    "certificate.issued", "certificate.renewed", "certificate.revoked", "certificate.expiring",
    "lease.granted", "lease.revoked",
})


def test_every_type_the_spec_names_is_in_the_catalogue() -> None:
    assert event_types() >= SPEC_TYPES
    assert all(valid_type_pattern(name) for name in SPEC_TYPES)
    assert valid_type_pattern("certificate.*") and valid_type_pattern("lease.*") and valid_type_pattern("rotation.*")


# ---------------------------------------------------------------------------- each translation and its payload keys
STREAM = UUID("0190a0c0-0000-7000-8000-000000000001")
_BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}
# A sample value for every field of the translated events (a case names the ones that matter to it).
_SAMPLE: dict[str, Any] = {
    "at": AT, "actor": "user:a@x", "request_id": "req_1", "tenant_id": "tnt_a", "partner_id": "ptn_a",
    # secrets
    "owner": "tnt_a", "path": "app/db", "version": 4, "ciphertext": b"\x01" * 40, "data_key_id": "dk_4",
    "secret_type": "json", "metadata": {"tags": ["db"]}, "max_versions": None, "expires_at": None,
    "rotation_policy_id": "rot_quarterly", "created": False, "is_rotation": False,
    "recoverable_until": AT + timedelta(days=30), "versions": [1, 2], "data_key_ids": ["dk_1", "dk_2"],
    "reason": "destroyed",
    # rotation and expiry
    "rotation_policy_name": "quarterly", "threshold": "7d", "covers": ["7d"], "due_at": AT + timedelta(days=7),
    "due_now": False, "grace_period": "48h", "old_version": 3, "new_version": 4,
    "grace_period_ends": AT + timedelta(days=2), "auto_generated": True, "error_code": "generation_failed",
    "error_message": "the secret policy could not make a value", "days_remaining": 7,
    # policies
    "policy_id": "pol_1", "scope": "tenant", "name": "readers", "description": "",
    "rules": [{"paths": ["app/*"], "permissions": ["read"]}], "is_active": True, "binding_id": "bnd_1",
    "identity_type": "user", "identity_id": "user:b@x",
    # identity mirror
    "user_id": "usr_1", "group_id": "grp_1", "source": "scaikey", "authority": 3, "roles": ["auditor"],
    "profile": {"email": "b@x", "status": "active", "name": "ops"}, "membership_type": "DIRECT",
    # access records
    "method": "GET", "route": "/v1/secrets/{path}", "action": "read", "secret_path": "app/db", "status": 200,
    "success": True, "source_ip": "10.0.0.1", "user_agent": "test", "duration_ms": 1, "extra": {},
    "accessed_streams": [STREAM],
}


def sample(cls: type, **given: Any) -> Any:
    """An instance of a domain event class: ``given`` fields, sample values for the rest."""
    fields = {f.name for f in dataclasses.fields(cls)}
    assert set(given) <= fields - _BASE_FIELDS, set(given) - fields
    values = {name: given.get(name, _SAMPLE.get(name)) for name in fields - _BASE_FIELDS}
    if "originator_topic" in fields:
        values["originator_topic"] = "test:Aggregate"
    return cls(originator_id=STREAM, originator_version=5, timestamp=AT, **values)


SECRET = Subject("tnt_a", "ptn_a", "app/db", version=3, secret_type="json", tags=("db",))
CERTIFICATE = Subject("tnt_a", "ptn_a", name="cert_1")
CA = Subject("tnt_a", "ptn_a", name="ca_1")
_CERTIFICATE: dict[str, Any] = {
    "certificate_id": "cert_1", "serial_number": "01:02", "common_name": "api.svc.local",
    "dns_names": ["api.svc.local"], "ip_sans": [], "ca_id": "ca_1", "role_name": "svc", "not_before": AT,
    "not_after": AT + timedelta(days=7), "source": "issue", "renewal_of": None,
}
CERTIFICATE_ISSUED = {"certificate_id", "serial_number", "common_name", "alt_names", "ip_sans", "ca_id", "role",
                      "not_before", "not_after", "source", "issued_by"}
LEASE = Subject("tnt_a", "ptn_a", "dynamic/support-db/creds/readonly", name="lease_1")
_LEASE: dict[str, Any] = {
    "lease_id": "lease_1", "engine_id": "dyn_1", "engine_name": "support-db", "engine_type": "database.postgresql",
    "role_name": "readonly", "username": "v_readonly_abc", "issued_at": AT, "expires_at": AT + timedelta(hours=1),
    "max_expires_at": AT + timedelta(hours=8), "renewable": True, "requested_by": "sa:svc",
}
POLICY = Subject("tnt_a", "ptn_a", name="pol_1")
USER = Subject("tnt_a", None, name="usr_1")
GROUP = Subject("tnt_a", None, name="grp_1")

# The spec's payloads (reference/webhook-events), key for key.
SECRET_CREATED = {"version", "secret_type", "created_by", "tags", "expires_at"}
SECRET_UPDATED = {"old_version", "new_version", "updated_by", "is_rotation"}
SECRET_DELETED = {"version_count", "deleted_by", "permanent", "recoverable_until"}
SECRET_ROTATED = {"old_version", "new_version", "rotation_policy_id", "rotation_policy_name", "grace_period_ends",
                  "auto_generated"}
SECRET_EXPIRING = {"expires_at", "days_remaining", "threshold"}
# Where the spec names a type without its payload: ScaiVault's (docs/events.md), holding what the spec says it
# carries (``due_now`` for rotation.due, error details for rotation.failed).
ROTATION_DUE = {"threshold", "due_at", "due_now", "rotation_policy_id"}
ROTATION_FAILED = {"rotation_policy_id", "rotation_policy_name", "due_at", "error"}
POLICY_WRITTEN = {"policy_id", "name", "rule_count", "is_active"}
VIOLATION = {"action", "method", "route", "error_code", "source_ip", "identity_type"}
_DENIED = {"status": 403, "success": False, "error_code": "access_denied", "accessed_streams": []}

# (case, domain event, its stream's subject, [(public type, its data's keys)], in order)
CASES: list[tuple[str, Any, Subject, list[tuple[str, set[str]]]]] = [
    ("first write", sample(Secret.VersionWritten, version=1, created=True), SECRET,
     [("secret.created", SECRET_CREATED)]),
    ("next write", sample(Secret.VersionWritten), SECRET, [("secret.updated", SECRET_UPDATED)]),
    ("soft delete", sample(Secret.Deleted), SECRET, [("secret.deleted", SECRET_DELETED)]),
    ("hard delete", sample(Secret.Purged, reason="permanent_delete"), SECRET,
     [("secret.deleted", SECRET_DELETED - {"recoverable_until"})]),
    ("purge after retention", sample(Secret.Purged, reason="retention_expired"), SECRET, []),
    ("restore", sample(Secret.Restored), SECRET, [("secret.restored", {"restored_by"})]),
    ("destroy versions", sample(Secret.VersionsDestroyed), SECRET,
     [("secret.versions_destroyed", {"versions", "destroyed_by"})]),
    ("versions aging out", sample(Secret.VersionsDestroyed, reason="aged_out"), SECRET, []),
    ("value read", sample(AccessRecorded, extra={"version": 2}), UNKNOWN_SUBJECT,
     [("secret.accessed", {"accessed_by", "action", "source_ip", "version"})]),
    ("listing read nothing", sample(AccessRecorded, accessed_streams=[]), UNKNOWN_SUBJECT, []),
    ("denied", sample(AccessRecorded, **_DENIED), UNKNOWN_SUBJECT, [("policy.violation", VIOLATION)]),
    ("denied anonymously", sample(AccessRecorded, **{**_DENIED, "identity_id": None}), UNKNOWN_SUBJECT, []),
    ("policy created", sample(Policy.Created), POLICY, [("policy.created", POLICY_WRITTEN)]),
    ("policy updated", sample(Policy.Updated), POLICY, [("policy.updated", POLICY_WRITTEN)]),
    ("policy deleted", sample(Policy.Deleted), POLICY, [("policy.deleted", {"policy_id"})]),
    ("binding created", sample(Policy.BindingCreated), POLICY,
     [("policy.binding.created", {"policy_id", "binding_id", "identity_type", "identity_id", "expires_at"})]),
    ("binding deleted", sample(Policy.BindingDeleted), POLICY,
     [("policy.binding.deleted", {"policy_id", "binding_id"})]),
    ("rotation warning", sample(Secret.RotationDue), SECRET, [("rotation.due", ROTATION_DUE)]),
    ("rotation due now", sample(Secret.RotationDue, threshold=None, due_now=True), SECRET,
     [("rotation.due", ROTATION_DUE)]),
    ("rotated", sample(Secret.Rotated), SECRET,
     [("secret.rotated", SECRET_ROTATED), ("rotation.completed", SECRET_ROTATED)]),
    ("rotation failed", sample(Secret.RotationFailed), SECRET, [("rotation.failed", ROTATION_FAILED)]),
    ("rotation overdue", sample(Secret.RotationOverdue), SECRET,
     [("rotation.overdue", {"rotation_policy_id", "due_at"})]),
    ("expiry warning", sample(Secret.ExpiryWarned, expires_at=AT + timedelta(days=7)), SECRET,
     [("secret.expiring", SECRET_EXPIRING)]),
    ("expired", sample(Secret.Expired, expires_at=AT), SECRET, [("secret.expired", {"expires_at"})]),
    ("user created", sample(User.Created), USER,
     [("identity.user.created", {"user_id", "source", "email", "status"})]),
    ("user reinstated", sample(User.Reinstated), USER,
     [("identity.user.created", {"user_id", "source", "email", "status"})]),
    ("user profile", sample(User.ProfileChanged), USER,
     [("identity.user.updated", {"user_id", "source", "changed"})]),
    ("user roles", sample(User.RolesChanged), USER, [("identity.user.updated", {"user_id", "source", "changed"})]),
    ("user removed", sample(User.Removed), USER, [("identity.user.removed", {"user_id", "source"})]),
    ("group created", sample(Group.Created), GROUP,
     [("identity.group.created", {"group_id", "source", "name"})]),
    ("group reinstated", sample(Group.Reinstated), GROUP,
     [("identity.group.created", {"group_id", "source", "name"})]),
    ("group removed", sample(Group.Removed), GROUP, [("identity.group.removed", {"group_id", "source"})]),
    ("member added", sample(Group.MemberAdded), GROUP,
     [("identity.group.member_added", {"group_id", "user_id", "source"})]),
    ("member removed", sample(Group.MemberRemoved), GROUP,
     [("identity.group.member_removed", {"group_id", "user_id", "source"})]),
    ("certificate issued", sample(Certificate.Issued, **_CERTIFICATE), CERTIFICATE,
     [("certificate.issued", CERTIFICATE_ISSUED)]),
    ("certificate renewed", sample(Certificate.Issued, **{**_CERTIFICATE, "renewal_of": "cert_0"}), CERTIFICATE,
     [("certificate.renewed", CERTIFICATE_ISSUED | {"renewal_of"})]),
    ("certificate revoked", sample(Certificate.Revoked, reason="key_compromise"), CERTIFICATE,
     [("certificate.revoked", {"certificate_id", "reason", "revoked_by", "revoked_at"})]),
    ("CA revoked", sample(CertificateAuthority.Revoked, reason="retired", cascade_from=None), CA,
     [("certificate.revoked", {"ca_id", "certificate_authority", "reason", "cascade_from", "revoked_by",
                               "revoked_at"})]),
    ("certificate expiring", sample(Certificate.ExpiryWarned, expires_at=AT + timedelta(days=6)), CERTIFICATE,
     [("certificate.expiring", {"certificate_id", "expires_at", "days_remaining", "seconds_remaining"})]),
    ("lease granted", sample(Lease.Granted, **_LEASE), LEASE,
     [("lease.granted", {"lease_id", "engine", "role", "engine_type", "username", "issued_at", "expires_at",
                         "renewable", "requested_by"})]),
    ("lease renewed", sample(Lease.Renewed, expires_at=AT + timedelta(hours=2)), LEASE,
     [("lease.renewed", {"lease_id", "expires_at", "renewed_by"})]),
    ("lease revoked", sample(Lease.Revoked, reason="expired"), LEASE,
     [("lease.revoked", {"lease_id", "reason", "revoked_by", "revoked_at"})]),
    ("lease revocation failed", sample(Lease.RevocationFailed, reason="expired", error="connection refused",
                                       attempts=2, next_attempt_at=AT + timedelta(seconds=10)), LEASE,
     [("lease.revocation_failed", {"lease_id", "reason", "error", "attempts", "next_attempt_at"})]),
]


@pytest.mark.parametrize(("domain_event", "subject", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_translation_gives_its_types_with_their_payload_keys(
    domain_event: Any, subject: Subject, expected: list[tuple[str, set[str]]]
) -> None:
    published = public_events(domain_event, subject)
    assert [(p.event_type, set(p.data)) for p in published] == expected
    for public in published:
        assert public.event_type in event_types()
        assert public.identity_id and public.at == AT
        orjson.dumps(public.data)  # plain JSON: no bytes, no datetimes


def test_every_class_the_fan_out_reads_has_a_case() -> None:
    covered = {type(case[1]) for case in CASES}
    only_name_a_subject = {cls for cls in translated_classes() if cls not in covered}
    assert only_name_a_subject == {Secret.Created, CertificateAuthority.Created}
    assert subject_named_by(sample(Secret.Created)) == Subject("tnt_a", "ptn_a", "app/db")


def test_every_declared_type_is_emitted_or_awaits_its_area() -> None:
    emitted = {name for case in CASES for name, _ in case[3]}
    awaiting = {name for names in AWAITING_AREA.values() for name in names}
    assert not emitted & awaiting
    assert emitted | awaiting == event_types()


def test_docs_list_every_public_type() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "events.md").read_text()
    public = docs.partition("## Public events")[2].partition("\n## ")[0]
    listed = set(re.findall(r"^\| `([a-z_.]+)` \|", public, re.MULTILINE))
    assert listed == event_types()


def _life_of_a_secret() -> list[object]:
    secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
    for version in (1, 2):
        secret.write(
            version=version, ciphertext=b"\x01" * 40, data_key_id=f"dk_{version}", at=AT, actor="user:a@x",
            request_id="req_1", secret_type="json", metadata={"tags": ["db"]}, max_versions=None,
            default_max_versions=10, expires_in=None, rotation_policy_id=None, cas=None,
        )
    secret.delete(at=AT, retention=timedelta(days=30), actor="user:a@x", request_id="req_2")
    secret.destroy(at=AT, actor="user:a@x", request_id="req_3")
    return list(secret.collect_events())


def test_a_secrets_life_as_public_events() -> None:
    subject = Subject("tnt_a", "ptn_a", "app/db", version=None)
    published = []
    for domain_event in _life_of_a_secret():
        for public in public_events(domain_event, subject):
            published.append(public)
            orjson.dumps(public.data)  # plain JSON: no bytes (a ciphertext) can hide in a payload
        if isinstance(domain_event, Secret.VersionWritten):
            subject = Subject("tnt_a", "ptn_a", "app/db", version=domain_event.version)
    assert [p.event_type for p in published] == ["secret.created", "secret.updated", "secret.deleted",
                                                 "secret.deleted"]
    assert published[1].data == {"old_version": 1, "new_version": 2, "updated_by": "user:a@x", "is_rotation": False}
    soft, hard = published[2].data, published[3].data
    assert soft["permanent"] is False and soft["version_count"] == 2 and soft["recoverable_until"].endswith("Z")
    assert hard == {"version_count": 2, "deleted_by": "user:a@x", "permanent": True}
    assert all(p.tags == ("db",) for p in published[:2])
