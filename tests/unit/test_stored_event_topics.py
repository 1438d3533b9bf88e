"""The events of secrets, tenancy, policies, tokens and audit exports keep the topics and fields they were stored with
(docs/events.md). Their classes are declared in each aggregate's body: a renamed class would give an event a new
topic, and a renamed field would leave a stored one undecodable. Events below are spelled out as an earlier release
wrote them, not made by today's classes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Aggregate, Snapshot
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic, resolve_topic

from scaivault.domain.audit_exports import AuditExport
from scaivault.domain.policies import Policy, policy_stream_id
from scaivault.domain.rotation import RotationPolicy
from scaivault.domain.secret_policies import SecretPolicy
from scaivault.domain.secrets import Secret, secret_stream_id
from scaivault.domain.subscriptions import Subscription
from scaivault.domain.tenancy import Partner, Tenant
from scaivault.domain.tokens import JwtRevocation, PersonalAccessToken
from scaivault.domain.webhooks import Webhook
from scaivault.eventstore.mapper import OrjsonTranscoder, create_mapper

AT = datetime(2026, 1, 1, tzinfo=UTC)
LATER = AT + timedelta(days=30)
SECRETS, TENANCY, POLICIES, TOKENS, EXPORTS = (
    f"scaivault.domain.{module}:" for module in ("secrets", "tenancy", "policies", "tokens", "audit_exports")
)
STAMP = ("at", "actor", "request_id")
# Each stored topic, with the fields its events carry besides originator_id, originator_version and timestamp (and,
# for the event that creates a stream, originator_topic).
STORED_FIELDS: dict[str, tuple[str, ...]] = {
    SECRETS + "Secret.Created": ("owner", "path", "partner_id", "tenant_id"),
    SECRETS + "Secret.VersionWritten": (
        "version", "ciphertext", "data_key_id", *STAMP, "secret_type", "metadata", "max_versions", "expires_at",
        "rotation_policy_id", "created", "is_rotation",
    ),
    SECRETS + "Secret.MetadataUpdated": (
        *STAMP, "metadata", "secret_type", "max_versions", "expires_at", "rotation_policy_id", "secret_policy_id",
    ),
    SECRETS + "Secret.VersionsDestroyed": ("versions", "data_key_ids", "reason", *STAMP),
    SECRETS + "Secret.Deleted": ("at", "recoverable_until", "actor", "request_id"),
    SECRETS + "Secret.Restored": STAMP,
    SECRETS + "Secret.Purged": ("versions", "data_key_ids", "reason", *STAMP),
    TENANCY + "Partner.Registered": ("partner_id", "name", "at", "actor"),
    TENANCY + "Tenant.Registered": ("tenant_id", "partner_id", "name", "at", "actor"),
    POLICIES + "Policy.Created": (
        "policy_id", "scope", "owner", "tenant_id", "partner_id", "name", "description", "rules", "is_active", *STAMP,
    ),
    POLICIES + "Policy.Updated": ("name", "description", "rules", "is_active", *STAMP),
    POLICIES + "Policy.BindingCreated": ("binding_id", "identity_type", "identity_id", "expires_at", *STAMP),
    POLICIES + "Policy.BindingDeleted": ("binding_id", *STAMP),
    POLICIES + "Policy.Deleted": STAMP,
    TOKENS + "PersonalAccessToken.Issued": (
        "pat_id", "identity_id", "tenant_id", "partner_id", "scopes", "roles", "groups", "expires_at", "at", "actor",
    ),
    TOKENS + "PersonalAccessToken.Revoked": ("at", "actor"),
    TOKENS + "JwtRevocation.Recorded": ("jti", "expires_at", "at", "actor"),
    EXPORTS + "AuditExport.Requested": (  # class_version 3 (1 had no requester, 2 its effective roles, no expiry)
        "export_id", "tenant_id", "partner_id", "format", "since", "until", "filters", "destination",
        "estimated_records", *STAMP, "requester",
    ),
    EXPORTS + "AuditExport.Started": ("at", "attempt"),
    EXPORTS + "AuditExport.Completed": ("manifest", "at"),
    EXPORTS + "AuditExport.Failed": ("error", "at"),
}
SECRET_POLICIES = "scaivault.domain.secret_policies:"
STORED_FIELDS |= {
    SECRET_POLICIES + "SecretPolicy.Created": (
        "policy_id", "owner", "tenant_id", "partner_id", "name", "policy_type", "description", "fields", "is_active",
        *STAMP,
    ),
    SECRET_POLICIES + "SecretPolicy.Updated": ("name", "policy_type", "description", "fields", "is_active", *STAMP),
    SECRET_POLICIES + "SecretPolicy.Deleted": STAMP,
}
AGGREGATES: tuple[type[Aggregate], ...] = (
    Secret, Partner, Tenant, Policy, PersonalAccessToken, JwtRevocation, AuditExport,
)
AGGREGATES += (SecretPolicy,)
SUBSCRIPTIONS = "scaivault.domain.subscriptions:"
_DELIVERY = ("delivery_type", "url", "secret_ciphertext", "secret_key_id", "buffer_size")
STORED_FIELDS |= {
    SUBSCRIPTIONS + "Subscription.Created": (
        "subscription_id", "tenant_id", "partner_id", "identity_id", "name", "paths", "events", "filters", *_DELIVERY,
        *STAMP,
    ),
    SUBSCRIPTIONS + "Subscription.Updated": ("paths", "events", *_DELIVERY, *STAMP),
    SUBSCRIPTIONS + "Subscription.Deleted": STAMP,
}
AGGREGATES += (Subscription,)
WEBHOOKS = "scaivault.domain.webhooks:"
STORED_FIELDS |= {
    WEBHOOKS + "Webhook.Created": (
        "webhook_id", "tenant_id", "partner_id", "name", "url", "events", "filters", "enabled", "secret_ciphertext",
        "secret_key_id", *STAMP,
    ),
    WEBHOOKS + "Webhook.Updated": ("name", "url", "events", "filters", "enabled", *STAMP),
    WEBHOOKS + "Webhook.SecretRotated": (
        "secret_ciphertext", "secret_key_id", "previous_secret_ciphertext", "previous_secret_key_id",
        "previous_secret_expires_at", *STAMP,
    ),
    WEBHOOKS + "Webhook.PreviousSecretExpired": ("data_key_id", "expired_at", *STAMP),
    WEBHOOKS + "Webhook.Deleted": STAMP,
}
AGGREGATES += (Webhook,)
ROTATION = "scaivault.domain.rotation:"
_ROTATION_SETTINGS = (
    "name", "description", "interval", "grace_period", "warn_before", "auto_generate", "secret_policy_id",
    "webhook_ids", "is_active",
)
STORED_FIELDS |= {
    ROTATION + "RotationPolicy.Created": ("policy_id", "owner", "tenant_id", "partner_id", *_ROTATION_SETTINGS,
                                          *STAMP),
    ROTATION + "RotationPolicy.Updated": (*_ROTATION_SETTINGS, *STAMP),
    ROTATION + "RotationPolicy.Deleted": STAMP,
    SECRETS + "Secret.RotationDue": (
        "rotation_policy_id", "rotation_policy_name", "threshold", "covers", "due_at", "due_now", "grace_period",
        *STAMP,
    ),
    SECRETS + "Secret.Rotated": (
        "old_version", "new_version", "rotation_policy_id", "rotation_policy_name", "grace_period_ends",
        "auto_generated", *STAMP,
    ),
    SECRETS + "Secret.RotationFailed": (
        "rotation_policy_id", "rotation_policy_name", "error_code", "error_message", "due_at", "grace_period",
        *STAMP,
    ),
    SECRETS + "Secret.RotationOverdue": ("rotation_policy_id", "due_at", *STAMP),
    SECRETS + "Secret.ExpiryWarned": ("threshold", "covers", "expires_at", "days_remaining", *STAMP),
    SECRETS + "Secret.Expired": ("expires_at", *STAMP),
}
AGGREGATES += (RotationPolicy,)
BASE_FIELDS = {"originator_id", "originator_version", "timestamp", "originator_topic"}


@pytest.mark.parametrize("topic", sorted(STORED_FIELDS))
def test_each_event_class_keeps_its_stored_topic_and_fields(topic: str) -> None:
    aggregate_name, event_name = topic.partition(":")[2].split(".")
    event_class = getattr({cls.__name__: cls for cls in AGGREGATES}[aggregate_name], event_name)
    assert get_topic(event_class) == topic and resolve_topic(topic) is event_class
    fields = {f.name for f in dataclasses.fields(event_class)} - BASE_FIELDS
    assert fields == set(STORED_FIELDS[topic])


def _stored(aggregate: type[Aggregate], stream: UUID, version: int, event: str, /, **state: Any) -> StoredEvent:
    if version == 1:
        state["originator_topic"] = get_topic(aggregate)
    topic = f"{get_topic(aggregate)}.{event}"
    assert set(state) - {"originator_topic"} == set(STORED_FIELDS[topic])  # spelled out in full
    return StoredEvent(
        originator_id=stream, originator_version=version, topic=topic,
        state=OrjsonTranscoder().encode({"timestamp": AT, **state}),
    )


def _replay(log: list[StoredEvent]) -> Any:
    aggregate = None
    for stored in log:
        aggregate = create_mapper().to_domain_event(stored).mutate(aggregate)
    return aggregate


def _reloaded_from_snapshot(aggregate: Aggregate) -> Any:
    snapshot: Any = create_mapper().to_domain_event(create_mapper().to_stored_event(Snapshot.take(aggregate)))
    assert snapshot.topic == get_topic(type(aggregate))
    return snapshot.mutate(None)


def test_a_stored_secret_history_replays_and_its_snapshot_loads() -> None:
    stream = secret_stream_id("tnt_a", "app/db")
    stamp = {"at": AT, "actor": "user:a@x.example", "request_id": "req_1"}
    written = {
        "ciphertext": b"sealed", "secret_type": "kv", "metadata": {"team": "a"}, "max_versions": 10,
        "expires_at": None, "rotation_policy_id": None, "is_rotation": False, **stamp,
    }
    log = [
        _stored(Secret, stream, 1, "Created", owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a"),
        _stored(Secret, stream, 2, "VersionWritten", version=1, data_key_id="dk_1", created=True, **written),
        _stored(Secret, stream, 3, "VersionWritten", version=2, data_key_id="dk_2", created=False, **written),
        _stored(Secret, stream, 4, "VersionsDestroyed", versions=[1], data_key_ids=["dk_1"], reason="destroyed",
                **stamp),
        _stored(Secret, stream, 5, "MetadataUpdated", metadata={"team": "b"}, secret_type="kv", max_versions=5,
                expires_at=LATER, rotation_policy_id=None, secret_policy_id="pol_1", **stamp),
        _stored(Secret, stream, 6, "Deleted", recoverable_until=LATER, **stamp),
        _stored(Secret, stream, 7, "Restored", **stamp),
    ]
    secret = _replay(log)
    assert isinstance(secret, Secret) and secret.version == 7 and secret.live and not secret.is_deleted
    assert [(v["version"], v["destroyed"]) for v in secret.versions] == [(1, True), (2, False)]
    assert (secret.metadata, secret.max_versions, secret.secret_policy_id) == ({"team": "b"}, 5, "pol_1")
    assert vars(_reloaded_from_snapshot(secret)) == vars(secret)
    purged = _replay([*log, _stored(Secret, stream, 8, "Purged", versions=[1, 2], data_key_ids=["dk_2"],
                                    reason="permanent_delete", **stamp)])
    assert not purged.live and purged.versions == [] and purged.last_version == 2


def test_a_stored_policy_history_replays_and_its_snapshot_loads() -> None:
    stream = policy_stream_id("pol_1")
    stamp = {"at": AT, "actor": "user:a@x.example", "request_id": None}
    rules = [{"path_pattern": "app/**", "permissions": ["read"]}]
    policy = _replay([
        _stored(Policy, stream, 1, "Created", policy_id="pol_1", scope="tenant", owner="tnt_a", tenant_id="tnt_a",
                partner_id="ptn_a", name="readers", description=None, rules=rules, is_active=True, **stamp),
        _stored(Policy, stream, 2, "Updated", name="app readers", description="d", rules=rules, is_active=False,
                **stamp),
        _stored(Policy, stream, 3, "BindingCreated", binding_id="bnd_1", identity_type="user",
                identity_id="user:b@x.example", expires_at=LATER, **stamp),
        _stored(Policy, stream, 4, "BindingCreated", binding_id="bnd_2", identity_type="group",
                identity_id="group:ops", expires_at=None, **stamp),
        _stored(Policy, stream, 5, "BindingDeleted", binding_id="bnd_1", **stamp),
    ])
    assert isinstance(policy, Policy) and (policy.name, policy.is_active) == ("app readers", False)
    assert list(policy.bindings) == ["bnd_2"] and not policy.deleted
    assert vars(_reloaded_from_snapshot(policy)) == vars(policy)
    snapshot = create_mapper().to_stored_event(Snapshot.take(policy))
    assert _replay([snapshot, _stored(Policy, stream, 6, "Deleted", **stamp)]).deleted


def test_stored_tenancy_and_token_events_replay() -> None:
    partner = _replay([_stored(Partner, Partner.create_id("ptn_a"), 1, "Registered", partner_id="ptn_a", name="A",
                               at=AT, actor="system:cli")])
    tenant = _replay([_stored(Tenant, Tenant.create_id("tnt_a"), 1, "Registered", tenant_id="tnt_a",
                              partner_id="ptn_a", name="A", at=AT, actor="system:cli")])
    assert (partner.partner_id, partner.name) == ("ptn_a", "A")
    assert (tenant.tenant_id, tenant.partner_id, tenant.name) == ("tnt_a", "ptn_a", "A")
    stream = PersonalAccessToken.create_id("pat_1")
    pat = _replay([
        _stored(PersonalAccessToken, stream, 1, "Issued", pat_id="pat_1", identity_id="user:a@x.example",
                tenant_id="tnt_a", partner_id="ptn_a", scopes=["read"], roles=[], groups=["ops"], expires_at=LATER,
                at=AT, actor="system:cli"),
        _stored(PersonalAccessToken, stream, 2, "Revoked", at=LATER, actor="system:cli"),
    ])
    assert (pat.pat_id, pat.expires_at, pat.revoked_at) == ("pat_1", LATER, LATER)
    jwt = _replay([_stored(JwtRevocation, JwtRevocation.create_id("jti_1"), 1, "Recorded", jti="jti_1",
                           expires_at=None, at=AT, actor="system:cli")])
    assert (jwt.jti, jwt.expires_at) == ("jti_1", None)


def test_a_stored_secret_policy_history_replays_and_its_snapshot_loads() -> None:
    stream = SecretPolicy.create_id("sp_1")
    stamp = {"at": AT, "actor": "user:a@x.example", "request_id": None}
    fields = [{"name": "password", "generator": "random", "config": {"length": 32, "charset": "safe"}}]
    policy = _replay([
        _stored(SecretPolicy, stream, 1, "Created", policy_id="sp_1", owner="tnt_a", tenant_id="tnt_a",
                partner_id="ptn_a", name="db", policy_type="password", description=None, fields=fields,
                is_active=True, **stamp),
        _stored(SecretPolicy, stream, 2, "Updated", name="db passwords", policy_type="custom", description="d",
                fields=fields, is_active=False, **stamp),
    ])
    assert isinstance(policy, SecretPolicy) and (policy.name, policy.policy_type, policy.is_active) == (
        "db passwords", "custom", False,
    )
    assert policy.fields == fields and not policy.deleted
    assert vars(_reloaded_from_snapshot(policy)) == vars(policy)
    assert _replay([create_mapper().to_stored_event(Snapshot.take(policy)),
                    _stored(SecretPolicy, stream, 3, "Deleted", **stamp)]).deleted


def test_a_stored_subscription_history_replays_and_its_snapshot_loads() -> None:
    stream = Subscription.create_id("sub_1")
    stamp = {"at": AT, "actor": "sa:svc", "request_id": "req_1"}
    pushed = {"delivery_type": "webhook", "url": "https://a.example/", "secret_ciphertext": b"sealed",
              "secret_key_id": "dk_1", "buffer_size": 1000}
    subscription = _replay([
        _stored(Subscription, stream, 1, "Created", subscription_id="sub_1", tenant_id="tnt_a", partner_id="ptn_a",
                identity_id="sa:svc", name="w", paths=["app/**"], events=["secret.*"], filters={"tags": ["prod"]},
                **pushed, **stamp),
        _stored(Subscription, stream, 2, "Updated", paths=["db/*"], events=["*"], delivery_type="polling", url=None,
                secret_ciphertext=None, secret_key_id=None, buffer_size=10, **stamp),
    ])
    assert isinstance(subscription, Subscription) and subscription.paths == ["db/*"]
    assert (subscription.delivery_type, subscription.buffer_size, subscription.sealed_secret) == ("polling", 10, None)
    assert vars(_reloaded_from_snapshot(subscription)) == vars(subscription)
    assert _replay([create_mapper().to_stored_event(Snapshot.take(subscription)),
                    _stored(Subscription, stream, 3, "Deleted", **stamp)]).deleted
