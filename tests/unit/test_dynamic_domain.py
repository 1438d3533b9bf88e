"""The dynamic-secrets domain: engine and role checks, generated user names (what reaches a target's statements),
lease terms, and the lease's life as a state machine (hypothesis)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from scaivault.domain.dynamic import (
    ACTIVE,
    REVOKED,
    REVOKING,
    USERNAME_LIMITS,
    DynamicEngine,
    Lease,
    check_engine_config,
    check_engine_ttls,
    check_role,
    check_role_name,
    display_name_of,
    engine_type_of,
    render_username,
    renewable_of,
    retry_delay,
)
from scaivault.domain.errors import (
    InvalidConfig,
    InvalidDuration,
    InvalidRole,
    LeaseNotRenewable,
    RoleExists,
    RoleNotFound,
    ValidationFailed,
)

AT = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
PG_URL = "postgresql://{{username}}:{{password}}@db.internal:5432/support"


def engine(**changes: Any) -> DynamicEngine:
    fields: dict[str, Any] = dict(
        engine_id="dyn_1", tenant_id="tnt_a", partner_id="ptn_a", name="support-db",
        engine_type="database.postgresql", description=None,
        config={"connection_url": PG_URL, "root_credentials_path": "infra/pg/root", "max_open_connections": 4},
        default_ttl=3600, max_ttl=86400, root_rotation_period=None, ca_public_key=None, ca_key_ciphertext=None,
        ca_key_id=None, at=AT, actor="user:a@x", request_id=None,
    )
    fields.update(changes)
    return DynamicEngine(**fields)


def lease(**changes: Any) -> Lease:
    fields: dict[str, Any] = dict(
        lease_id="lease_1", tenant_id="tnt_a", partner_id="ptn_a", engine_id="dyn_1", engine_name="support-db",
        engine_type="database.postgresql", role_name="readonly", username="v_readonly_abc", issued_at=AT,
        expires_at=AT + timedelta(hours=1), max_expires_at=AT + timedelta(hours=8), renewable=True,
        requested_by="sa:svc", request_id=None,
    )
    fields.update(changes)
    return Lease(**fields)


# ---- engines ------------------------------------------------------------------------------------------------------


def test_types_the_guide_shows_and_those_not_served() -> None:
    assert engine_type_of("database", "postgresql") == "database.postgresql"
    assert engine_type_of("database.mysql", None) == "database.mysql"
    assert engine_type_of("aws", None) == "aws" and engine_type_of("ssh", None) == "ssh"
    for refused, plugin in (("database", "mongodb"), ("azure", None), ("gcp", None), ("custom", None)):
        with pytest.raises(InvalidConfig) as caught:
            engine_type_of(refused, plugin)
        assert "not yet supported" in caught.value.message
    for bad_type, plugin in (("database", None), ("oracle", None), ("database", "oracle"), (7, None)):
        with pytest.raises(ValidationFailed):
            engine_type_of(bad_type, plugin)


@pytest.mark.parametrize("url, why", [
    ("mysql://{{username}}:{{password}}@db:3306/x", "postgresql://"),
    ("postgresql://admin:hunter2@db:5432/x", "root secret"),
    ("postgresql://{{username}}:{{password}}@db:5432/x?password=hunter2", "root secret"),
    ("postgresql://{{username}}:{{password}}@:5432/x", "no host"),
    ("postgresql://{{username}}:{{password}}@db:99999/x", "port"),
])
def test_a_connection_url_holds_placeholders_never_credentials(url: str, why: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        check_engine_config("database.postgresql", {"connection_url": url, "root_credentials_path": "infra/root"})
    assert why in caught.value.details["fields"][0]["message"]
    assert "hunter2" not in str(caught.value.details)


def test_config_keys_are_checked_per_type() -> None:
    config = check_engine_config("database.postgresql", {"plugin": "postgresql", "connection_url": PG_URL,
                                                          "root_credentials_path": "infra/pg/root"})
    assert config == {"connection_url": PG_URL, "root_credentials_path": "infra/pg/root", "max_open_connections": 4}
    with pytest.raises(ValidationFailed):
        check_engine_config("database.postgresql", {"connection_url": PG_URL})  # no root credentials
    with pytest.raises(ValidationFailed):
        check_engine_config("database.postgresql", {"connection_url": PG_URL, "root_credentials_path": "../x"})
    with pytest.raises(ValidationFailed):
        check_engine_config("ssh", {"key_type": "dsa"})
    with pytest.raises(ValidationFailed):
        check_engine_config("aws", {"root_credentials_path": "infra/aws", "region": "mars"})
    with pytest.raises(ValidationFailed):
        check_engine_config("aws", {"root_credentials_path": "infra/aws", "iam_endpoint": "http://k:s@iam.local"})
    assert check_engine_config("ssh", None) == {"key_type": "ed25519"}


def test_engine_ttls() -> None:
    assert check_engine_ttls(None, None) == (timedelta(hours=1), timedelta(hours=24))
    assert check_engine_ttls(None, "30m") == (timedelta(minutes=30), timedelta(minutes=30))
    assert check_engine_ttls(600, "1h") == (timedelta(minutes=10), timedelta(hours=1))
    with pytest.raises(ValidationFailed):
        check_engine_ttls("2h", "1h")
    with pytest.raises(InvalidDuration):
        check_engine_ttls("forever", None)
    with pytest.raises(ValidationFailed):
        check_engine_ttls(None, "400d")


# ---- roles ----------------------------------------------------------------------------------------------------------


def test_role_names_keep_to_a_set_that_needs_no_quoting() -> None:
    assert check_role_name("readonly") == "readonly"
    for bad in ("", "Read", "a b", "x'; DROP ROLE postgres; --", "-x", "x" * 64, 5):
        with pytest.raises(InvalidRole):
            check_role_name(bad)


def test_statements_may_only_use_known_placeholders() -> None:
    role = check_role("database.postgresql", {
        "creation_statements": ["CREATE ROLE \"{{name}}\" LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'"],
    }, timedelta(hours=24))
    assert role["username_template"] == "v_{{role}}_{{random}}" and role["max_leases"] is None
    with pytest.raises(ValidationFailed) as caught:
        check_role("database.postgresql", {"creation_statements": ["CREATE ROLE \"{{name}}\" {{secret_sauce}}"]},
                   timedelta(hours=1))
    assert "secret_sauce" in caught.value.details["fields"][0]["message"]
    with pytest.raises(ValidationFailed):  # creates no user of the lease's
        check_role("database.postgresql", {"creation_statements": ["SELECT 1"]}, timedelta(hours=1))
    with pytest.raises(ValidationFailed):
        check_role("database.postgresql", {"username_template": "static_user"}, timedelta(hours=1))
    with pytest.raises(ValidationFailed):
        check_role("database.postgresql", {"max_ttl": "48h"}, timedelta(hours=24))
    with pytest.raises(ValidationFailed):
        check_role("database.postgresql", {"policy_arns": []}, timedelta(hours=24))


@pytest.mark.parametrize("rule", ["nopass", "resetpass", ">secret", "<hash", "#abc", "on", "OFF", "reset"])
def test_redis_rules_cannot_touch_the_password_or_state(rule: str) -> None:
    with pytest.raises(ValidationFailed):
        check_role("database.redis", {"creation_statements": [f"~cache:* +get {rule}"]}, timedelta(hours=1))
    assert check_role("database.redis", {"creation_statements": ["~cache:* +get"]},
                      timedelta(hours=1))["creation_statements"] == ["~cache:* +get"]


def test_aws_and_ssh_roles() -> None:
    iam = check_role("aws", {"policy_arns": ["arn:aws:iam::aws:policy/ReadOnlyAccess"]}, timedelta(hours=12))
    assert iam["settings"]["credential_type"] == "iam_user"
    assumed = check_role("aws", {"credential_type": "assumed_role",
                                 "role_arn": "arn:aws:iam::123456789012:role/deploy"}, timedelta(hours=12))
    assert not renewable_of("aws", assumed) and renewable_of("aws", iam)
    with pytest.raises(ValidationFailed):
        check_role("aws", {"credential_type": "assumed_role"}, timedelta(hours=12))
    with pytest.raises(ValidationFailed):
        check_role("aws", {"creation_statements": ["x"]}, timedelta(hours=12))  # not a database role
    ssh = check_role("ssh", {"allowed_users": ["ubuntu"], "default_user": "ubuntu"}, timedelta(hours=1))
    assert ssh["settings"]["cert_type"] == "user" and not renewable_of("ssh", ssh)
    with pytest.raises(ValidationFailed):
        check_role("ssh", {}, timedelta(hours=1))
    host = check_role("ssh", {"cert_type": "host", "allowed_domains": ["internal.example"]}, timedelta(hours=1))
    assert host["settings"]["allowed_domains"] == ["internal.example"]
    with pytest.raises(ValidationFailed):
        check_role("ssh", {"cert_type": "host"}, timedelta(hours=1))


def test_roles_live_in_their_engine() -> None:
    subject = engine()
    role = check_role("database.postgresql", {}, timedelta(hours=24))
    assert subject.write_role("readonly", role, creating=True, at=AT, actor="user:a@x", request_id=None)
    assert not subject.write_role("readonly", role, creating=False, at=AT, actor="user:a@x", request_id=None)
    with pytest.raises(RoleExists):
        subject.write_role("readonly", role, creating=True, at=AT, actor="user:a@x", request_id=None)
    subject.delete_role("readonly", at=AT, actor="user:a@x", request_id=None)
    with pytest.raises(RoleNotFound):
        subject.role("readonly")


def test_lease_terms_never_pass_the_role_or_engine_maximum() -> None:
    subject = engine(default_ttl=3600, max_ttl=4 * 3600)
    role = check_role("database.postgresql", {"default_ttl": "30m", "max_ttl": "2h"}, timedelta(hours=4))
    subject.write_role("readonly", role, creating=True, at=AT, actor="user:a@x", request_id=None)
    assert subject.lease_terms("readonly", None, AT) == (AT + timedelta(minutes=30), AT + timedelta(hours=2))
    assert subject.lease_terms("readonly", timedelta(hours=9), AT) == (AT + timedelta(hours=2), AT + timedelta(hours=2))
    plain = check_role("database.postgresql", {}, timedelta(hours=4))
    subject.write_role("plain", plain, creating=True, at=AT, actor="user:a@x", request_id=None)
    assert subject.lease_terms("plain", None, AT) == (AT + timedelta(hours=1), AT + timedelta(hours=4))


# ---- generated user names ----------------------------------------------------------------------------------------

_SAFE = re.compile(r"[a-z][a-z0-9_]*")


@given(template=st.text(min_size=0, max_size=80).map(lambda t: t + "{{random}}"),
       role=st.from_regex(r"[a-z0-9][a-z0-9_-]{0,62}", fullmatch=True),
       identity=st.text(max_size=60), engine_type=st.sampled_from(sorted(USERNAME_LIMITS)))
@settings(max_examples=300)
def test_user_names_are_safe_unique_and_fit_the_target(
    template: str, role: str, identity: str, engine_type: str
) -> None:
    """Whatever the template and caller: letters, digits and ``_`` only (nothing can end a quoted identifier or
    literal), within the target's limit, and always ending with the random part when cut."""
    name = render_username(template, engine_type=engine_type, engine="support-db", role=role,
                           display_name=display_name_of(identity), random="k3j9x0q2zz", at=AT)
    assert _SAFE.fullmatch(name) and len(name) <= USERNAME_LIMITS[engine_type]
    assert "k3j9x0q2zz" in name


def test_user_name_of_the_default_template() -> None:
    name = render_username("v_{{role}}_{{random}}", engine_type="database.postgresql", engine="e", role="read-only",
                           display_name="svc", random="abc123defg", at=AT)
    assert name == "v_read_only_abc123defg"


# ---- the lease --------------------------------------------------------------------------------------------------


def test_renewal_is_bounded_by_max_ttl() -> None:
    subject = lease()
    assert subject.renew(timedelta(hours=2), at=AT + timedelta(minutes=30), actor="sa:svc", request_id=None) == (
        AT + timedelta(hours=2, minutes=30))
    assert subject.renew(timedelta(days=3), at=AT + timedelta(hours=2), actor="sa:svc", request_id=None) == (
        AT + timedelta(hours=8))
    with pytest.raises(LeaseNotRenewable):  # expired
        subject.renew(None, at=AT + timedelta(hours=9), actor="sa:svc", request_id=None)
    with pytest.raises(LeaseNotRenewable):
        lease(renewable=False).renew(None, at=AT, actor="sa:svc", request_id=None)


def test_backoff_doubles_to_a_cap() -> None:
    delays = [retry_delay(n) for n in range(1, 12)]
    assert delays[0] == timedelta(seconds=5) and delays[1] == timedelta(seconds=10)
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False)) and delays[-1] == timedelta(minutes=10)


class LeaseLife(RuleBasedStateMachine):
    """Whatever happens to a lease (renewals, failed and successful revocations, repeated), it is revoked at most
    once, never renewed after its end or past its maximum, and a failed revocation always schedules a retry."""

    def __init__(self) -> None:
        super().__init__()
        self.lease = lease()
        self.now = AT
        self.revocations = 0

    @rule(minutes=st.integers(0, 600))
    def time_passes(self, minutes: int) -> None:
        self.now += timedelta(minutes=minutes)

    @rule(hours=st.one_of(st.none(), st.integers(1, 48)))
    def renew(self, hours: int | None) -> None:
        before = self.lease.expires_at
        try:
            after = self.lease.renew(None if hours is None else timedelta(hours=hours), at=self.now, actor="sa:svc",
                                     request_id=None)
        except LeaseNotRenewable:
            assert self.lease.state != ACTIVE or self.now >= before
            return
        assert self.lease.state == ACTIVE and before <= after <= self.lease.max_expires_at

    @precondition(lambda self: self.lease.state != REVOKED)
    @rule(error=st.text(min_size=1, max_size=20))
    def target_fails(self, error: str) -> None:
        attempts = self.lease.attempts
        retry_at = self.lease.revocation_failed("expired", error, at=self.now, actor="system:lease-expiry")
        assert self.lease.state == REVOKING and self.lease.attempts == attempts + 1 and retry_at > self.now

    @rule(reason=st.sampled_from(["requested", "expired", "prefix"]))
    def revoke(self, reason: str) -> None:
        if self.lease.revoke(reason, at=self.now, actor="sa:svc", request_id=None):
            self.revocations += 1

    @invariant()
    def revoked_once(self) -> None:
        assert self.revocations <= 1
        revoked_events = [e for e in self.lease.pending_events if isinstance(e, Lease.Revoked)]
        assert len(revoked_events) == self.revocations
        assert (self.lease.state == REVOKED) == (self.revocations == 1)


TestLeaseLife = LeaseLife.TestCase
TestLeaseLife.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
