"""The SecretPolicy aggregate (scaivault/domain/secret_policies.py): what it accepts, what it stores (recipes with
their defaults), updates, and deletion while secrets or rotation policies use it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.errors import PolicyInUse, ValidationFailed
from scaivault.domain.secret_policies import POLICY_TYPES, SecretPolicy, SecretPolicyUsers

AT = datetime(2026, 12, 5, tzinfo=UTC)
PASSWORD = [{"name": "password", "generator": "random", "config": {"length": 24, "charset": "safe"}}]


def create(**overrides: Any) -> SecretPolicy:
    arguments: dict[str, Any] = {
        "policy_id": "sp_1", "owner": "tnt_a", "tenant_id": "tnt_a", "partner_id": "ptn_a", "name": "db passwords",
        "policy_type": "password", "description": None, "fields": PASSWORD, "is_active": True, "at": AT,
        "actor": "user:a@x.example", "request_id": "req_1",
    }
    return SecretPolicy.create(**{**arguments, **overrides})


def refused_field(**overrides: Any) -> str:
    with pytest.raises(ValidationFailed) as raised:
        create(**overrides)
    return str(raised.value.details["fields"][0]["field"])


def test_a_created_policy_stores_its_recipe_with_every_default() -> None:
    policy = create(name="  db passwords ")
    assert (policy.policy_id, policy.owner, policy.name, policy.policy_type) == (
        "sp_1", "tnt_a", "db passwords", "password"
    )
    assert policy.fields == [{"name": "password", "generator": "random", "config": {
        "length": 24, "charset": "safe", "require_upper": False, "require_lower": False, "require_digit": False,
        "require_symbol": False,
    }}]
    assert [type(e) for e in policy.collect_events()] == [SecretPolicy.Created]


@given(st.sampled_from(POLICY_TYPES))
def test_policy_type_is_only_a_hint_any_type_takes_any_fields(policy_type: str) -> None:
    ssh = [{"name": "private_key", "generator": "ssh_keypair"}]
    assert create(policy_type=policy_type, fields=ssh).policy_type == policy_type


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 129}, "name"),
        ({"name": "line\nbreak"}, "name"),
        ({"name": None}, "name"),
        ({"policy_type": "certificate"}, "policy_type"),
        ({"description": 5}, "description"),
        ({"is_active": "yes"}, "is_active"),
        ({"fields": []}, "fields"),
        ({"fields": [{"name": "a", "generator": "nope"}]}, "fields[0].generator"),
        ({"fields": [{"name": "a", "generator": "hex"}, {"name": "a", "generator": "hex"}]}, "fields[1]"),
    ],
)
def test_invalid_policies_are_refused_naming_the_field(overrides: dict[str, Any], field: str) -> None:
    assert refused_field(**overrides) == field


def test_update_replaces_everything_it_is_given() -> None:
    policy = create()
    policy.update(
        name="api keys", policy_type="api_key", description="for partners",
        fields=[{"name": "api_key", "generator": "template", "config": {"template": "sk_{{random:32}}"}}],
        is_active=False, at=AT + timedelta(hours=1), actor="user:b@x.example", request_id=None,
    )
    assert (policy.name, policy.policy_type, policy.description, policy.is_active) == (
        "api keys", "api_key", "for partners", False
    )
    assert policy.fields[0]["config"] == {"template": "sk_{{random:32}}"}
    assert (policy.created_at, policy.updated_at, policy.updated_by) == (
        AT, AT + timedelta(hours=1), "user:b@x.example"
    )
    with pytest.raises(ValidationFailed):
        policy.update(name="x", policy_type="password", description=None, fields=[], is_active=True, at=AT,
                      actor="user:b@x.example", request_id=None)
    assert policy.name == "api keys"


def test_delete_is_refused_while_anything_uses_the_policy_unless_forced() -> None:
    delete = {"at": AT, "actor": "user:a@x.example", "request_id": None}
    for users, details in [
        (SecretPolicyUsers(secret_count=2), {"secret_count": 2, "rotation_policy_ids": []}),
        (SecretPolicyUsers(rotation_policy_ids=("rot_a", "rot_b")),
         {"secret_count": 0, "rotation_policy_ids": ["rot_a", "rot_b"]}),
    ]:
        policy = create()
        with pytest.raises(PolicyInUse) as raised:
            policy.delete(users=users, force=False, **delete)
        assert raised.value.details == {"secret_policy_id": "sp_1", **details} and not policy.deleted
        policy.delete(users=users, force=True, **delete)
        assert policy.deleted
    unused = create()
    unused.delete(users=SecretPolicyUsers(), force=False, **delete)
    assert unused.deleted
