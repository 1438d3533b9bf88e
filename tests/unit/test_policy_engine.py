"""The policy engine (scaivault.domain.policies): the spec's examples, every rule and condition, validation, and
property tests against the reference model in tests/unit/policy_reference.py (thousands of random patterns, paths
and policies; any disagreement fails)."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scaivault.domain.errors import (
    AccessDenied,
    BindingExists,
    BindingNotFound,
    InvalidPath,
    InvalidPolicy,
    IpNotAllowed,
    MfaRequired,
    PolicyInUse,
    TimeWindowViolation,
)
from scaivault.domain.globs import InvalidGlob, glob_matches
from scaivault.domain.policies import (
    Policy,
    RequestContext,
    Subject,
    check_identity,
    check_rules,
    compile_policy,
    evaluate,
    parse_ip,
)
from tests.unit import policy_reference as reference

MONDAY_NOON = datetime(2026, 4, 20, 12, 0, tzinfo=UTC)  # a Monday
ALICE = "user:alice@acme.example"


def policy(rules: list[dict[str, Any]], *, policy_id: str = "pol_a", bindings: list[dict[str, Any]] | None = None,
           is_active: bool = True) -> Any:
    if bindings is None:
        bindings = [{"binding_id": "bnd_1", "identity_type": "user", "identity_id": ALICE, "expires_at": None}]
    return compile_policy(policy_id, policy_id, is_active, check_rules(rules), bindings)


def context(at: datetime = MONDAY_NOON, ip: str | None = "10.1.2.3", mfa_at: datetime | None = None) -> RequestContext:
    return RequestContext(at=at, source_ip=parse_ip(ip), mfa_verified_at=mfa_at)


def allowed(policies: list[Any], path: str, permission: str = "read", *, subject: Subject | None = None,
            ctx: RequestContext | None = None) -> bool:
    return evaluate(policies, subject or Subject.of(ALICE), path, permission, ctx or context()).allowed


# ---- the spec's glob table, to the letter ------------------------------------------------------------------------

SPEC_TABLE = [
    ("app/db", ["app/db"], ["app/db/password"]),
    ("app/db/*", ["app/db/password", "app/db/user"], ["app/db/primary/password"]),
    ("app/**", ["app/db", "app/db/password", "app/x/y/z"], ["other/app/db"]),
    ("**/ssl/*", ["app/ssl/cert", "service/ssl/key"], ["ssl/cert"]),
]


@pytest.mark.parametrize(("pattern", "matching", "not_matching"), SPEC_TABLE)
def test_the_spec_glob_table(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    rules = [{"path_pattern": pattern, "permissions": ["read"]}]
    for path in matching:
        assert allowed([policy(rules)], path), (pattern, path)
        assert reference.glob_matches(pattern, path)
    for path in not_matching:
        assert not allowed([policy(rules)], path), (pattern, path)
        assert not reference.glob_matches(pattern, path)


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("a/?", "a/b", True),
        ("a/?", "a/bc", False),  # ? is exactly one character
        ("a/*", "a", False),  # * is exactly one segment
        ("a/*/c", "a/b/c", True),
        ("a/*/c", "a/b/x/c", False),
        ("a/**/c", "a/c", True),  # ** may be zero segments
        ("a/**/c", "a/b/x/c", True),
        ("app/**", "app", True),  # zero segments after app/ (docs/policies.md)
        ("**", "anything/at/all", True),
        ("**/ssl", "ssl", False),
        ("**/ssl", "x/ssl", True),
        ("db-*", "db-primary", True),
        ("db-*", "db", False),
        ("app", "application", False),  # anchored at both ends: no prefix match
        ("app/db", "app/db2", False),
    ],
)
def test_glob_edge_cases(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected
    assert reference.glob_matches(pattern, path) is expected


# ---- permissions ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("permission", ["read", "write", "delete", "list", "rotate"])
def test_each_permission_is_granted_only_by_itself_or_admin(permission: str) -> None:
    for granted in ["read", "write", "delete", "list", "rotate"]:
        rules = [{"path_pattern": "app/**", "permissions": [granted]}]
        assert allowed([policy(rules)], "app/db", permission) is (granted == permission)
    assert allowed([policy([{"path_pattern": "app/**", "permissions": ["admin"]}])], "app/db", permission)


def test_any_matching_rule_of_any_bound_policy_allows_and_the_decision_names_it() -> None:
    first = policy([{"path_pattern": "other/**", "permissions": ["read"]}], policy_id="pol_a")
    second = policy(
        [{"path_pattern": "x", "permissions": ["write"]}, {"path_pattern": "app/*", "permissions": ["read"]}],
        policy_id="pol_b",
    )
    decision = evaluate([second, first], Subject.of(ALICE), "app/db", "read", context())
    assert (decision.allowed, decision.policy_id, decision.rule_index, decision.decided_by) == (
        True, "pol_b", 1, "policy"
    )
    denied = evaluate([first, second], Subject.of(ALICE), "app/db", "delete", context())
    assert (denied.allowed, denied.code, denied.policy_id) == (False, "access_denied", None)
    assert isinstance(denied.error(), AccessDenied)


def test_no_policy_means_no_access() -> None:
    decision = evaluate([], Subject.of(ALICE), "app/db", "read", context())
    assert not decision.allowed and decision.code == "access_denied"


# ---- bindings ------------------------------------------------------------------------------------------------------


def test_only_bound_identities_and_groups_are_allowed() -> None:
    rules = [{"path_pattern": "app/**", "permissions": ["read"]}]
    by_group = policy(rules, bindings=[{"binding_id": "b", "identity_type": "group", "identity_id": "group:sre",
                                        "expires_at": None}])
    assert allowed([by_group], "app/db", subject=Subject.of("user:bob@x", ["group:sre"]))
    assert not allowed([by_group], "app/db", subject=Subject.of("user:bob@x", ["group:dev"]))
    # A token whose subject is named like the group is not a member of it.
    assert not allowed([by_group], "app/db", subject=Subject.of("group:sre"))
    assert not allowed([policy(rules)], "app/db", subject=Subject.of("user:mallory@x"))


def test_identity_ids_are_compared_in_one_case() -> None:
    rules = [{"path_pattern": "app/**", "permissions": ["read"]}]
    assert allowed([policy(rules)], "app/db", subject=Subject.of("USER:Alice@ACME.example"))
    assert check_identity("user", "user:Alice@Acme.Example") == ("user", "user:alice@acme.example")


def test_an_expired_binding_stops_counting_at_its_expires_at() -> None:
    expiry = MONDAY_NOON + timedelta(hours=1)
    rules = [{"path_pattern": "app/**", "permissions": ["read"]}]
    bound = policy(rules, bindings=[{"binding_id": "b", "identity_type": "user", "identity_id": ALICE,
                                     "expires_at": expiry}])
    assert allowed([bound], "app/db", ctx=context(at=expiry - timedelta(microseconds=1)))
    assert not allowed([bound], "app/db", ctx=context(at=expiry))


def test_an_inactive_policy_is_not_evaluated() -> None:
    rules = [{"path_pattern": "app/**", "permissions": ["read"]}]
    assert not allowed([policy(rules, is_active=False)], "app/db")


# ---- conditions, each with its own code --------------------------------------------------------------------------


def test_ip_ranges() -> None:
    conditions = {"ip_ranges": ["10.0.0.0/8", "2001:db8::/32"]}
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": conditions}]
    assert allowed([policy(rules)], "app/db", ctx=context(ip="10.200.0.1"))
    assert allowed([policy(rules)], "app/db", ctx=context(ip="::ffff:10.0.0.7"))  # IPv4-mapped is its IPv4 address
    assert allowed([policy(rules)], "app/db", ctx=context(ip="2001:db8::1"))
    decision = evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", context(ip="192.168.1.1"))
    assert (decision.code, decision.failed_condition, decision.policy_id) == ("ip_not_allowed", "ip_ranges", "pol_a")
    assert isinstance(decision.error(), IpNotAllowed)
    assert not allowed([policy(rules)], "app/db", ctx=context(ip=None))  # an unknown address is outside every range


def test_require_mfa_uses_the_tokens_mfa_time() -> None:
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": {"require_mfa": True}}]
    recent = MONDAY_NOON - timedelta(hours=1)
    assert allowed([policy(rules)], "app/db", ctx=context(mfa_at=recent))
    no_mfa = evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", context(mfa_at=None))
    assert no_mfa.code == "mfa_required" and isinstance(no_mfa.error(), MfaRequired)
    too_old = context(mfa_at=MONDAY_NOON - timedelta(hours=12, seconds=1))
    assert evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", too_old).code == "mfa_required"
    strict = [{"path_pattern": "app/**", "permissions": ["read"],
               "conditions": {"require_mfa": True, "mfa_max_age": "15m"}}]
    assert allowed([policy(strict)], "app/db", ctx=context(mfa_at=MONDAY_NOON - timedelta(minutes=15)))
    assert not allowed([policy(strict)], "app/db", ctx=context(mfa_at=MONDAY_NOON - timedelta(minutes=16)))


def test_time_windows() -> None:
    office = {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "09:00", "end": "17:00",
              "timezone": "Europe/Amsterdam"}
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": {"time_windows": [office]}}]
    assert allowed([policy(rules)], "app/db", ctx=context(at=MONDAY_NOON))  # 14:00 in Amsterdam (CEST)
    evening_context = context(at=MONDAY_NOON + timedelta(hours=4))
    evening = evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", evening_context)
    assert evening.code == "time_window_violation" and isinstance(evening.error(), TimeWindowViolation)
    saturday = MONDAY_NOON - timedelta(days=2)
    assert not allowed([policy(rules)], "app/db", ctx=context(at=saturday))
    night = {"days": ["fri"], "start": "22:00", "end": "02:00"}  # runs past midnight into Saturday
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": {"time_windows": [night]}}]
    friday = MONDAY_NOON - timedelta(days=3)
    assert allowed([policy(rules)], "app/db", ctx=context(at=friday.replace(hour=23)))
    assert allowed([policy(rules)], "app/db", ctx=context(at=saturday.replace(hour=1, minute=59)))
    assert not allowed([policy(rules)], "app/db", ctx=context(at=saturday.replace(hour=2)))
    # Thursday night is not listed.
    assert not allowed([policy(rules)], "app/db", ctx=context(at=friday.replace(hour=1)))


def test_all_conditions_must_hold_and_the_first_failing_one_is_reported() -> None:
    conditions = {"ip_ranges": ["10.0.0.0/8"], "require_mfa": True,
                  "time_windows": [{"start": "09:00", "end": "17:00"}]}
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": conditions}]
    fresh = MONDAY_NOON - timedelta(minutes=1)
    assert allowed([policy(rules)], "app/db", ctx=context(mfa_at=fresh))
    code = lambda ctx: evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", ctx).code  # noqa: E731
    assert code(context(ip="8.8.8.8", mfa_at=None, at=MONDAY_NOON.replace(hour=20))) == "ip_not_allowed"
    assert code(context(mfa_at=None, at=MONDAY_NOON.replace(hour=20))) == "time_window_violation"
    assert code(context(mfa_at=None)) == "mfa_required"


def test_a_rule_without_conditions_wins_over_a_failing_one() -> None:
    rules = [{"path_pattern": "app/**", "permissions": ["read"], "conditions": {"require_mfa": True}},
             {"path_pattern": "app/db", "permissions": ["read"]}]
    decision = evaluate([policy(rules)], Subject.of(ALICE), "app/db", "read", context())
    assert decision.allowed and decision.rule_index == 1


# ---- the canonical path form -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["App/db", "app//db", "/app/db", "app/db/", "app/./db", "app/../db", "app/db%2f"])
def test_the_engine_refuses_non_canonical_paths(path: str) -> None:
    rules = [{"path_pattern": "**", "permissions": ["admin"]}]
    with pytest.raises(InvalidPath):
        evaluate([policy(rules)], Subject.of(ALICE), path, "read", context())


# ---- validation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "error", "field"),
    [
        ([], InvalidPolicy, "rules"),
        ([{"path_pattern": "/app/**", "permissions": ["read"]}], InvalidGlob, "rules[0].path_pattern"),
        ([{"path_pattern": "App/**", "permissions": ["read"]}], InvalidGlob, "rules[0].path_pattern"),
        ([{"path_pattern": "secrets/*.key", "permissions": ["read"]}], InvalidGlob, "rules[0].path_pattern"),
        ([{"path_pattern": "a/b**", "permissions": ["read"]}], InvalidGlob, "rules[0].path_pattern"),
        ([{"path_pattern": "a", "permissions": []}], InvalidPolicy, "rules[0].permissions"),
        ([{"path_pattern": "a", "permissions": ["sudo"]}], InvalidPolicy, "rules[0].permissions"),
        ([{"path_pattern": "a", "permissions": ["read"], "extra": 1}], InvalidPolicy, "rules[0].extra"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"ip_ranges": ["10.0.0.0/33"]}}],
         InvalidPolicy, "rules[0].conditions.ip_ranges[0]"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"ip_ranges": []}}],
         InvalidPolicy, "rules[0].conditions.ip_ranges"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"require_mfa": "yes"}}],
         InvalidPolicy, "rules[0].conditions.require_mfa"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"mfa_max_age": "1h"}}],
         InvalidPolicy, "rules[0].conditions.mfa_max_age"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"require_mfa": True, "mfa_max_age": "soon"}}],
         InvalidPolicy, "rules[0].conditions.mfa_max_age"),
        ([{"path_pattern": "a", "permissions": ["read"], "conditions": {"geo": ["nl"]}}],
         InvalidPolicy, "rules[0].conditions.geo"),
        ([{"path_pattern": "a", "permissions": ["read"],
           "conditions": {"time_windows": [{"start": "9", "end": "17:00"}]}}],
         InvalidPolicy, "rules[0].conditions.time_windows[0].start"),
        ([{"path_pattern": "a", "permissions": ["read"],
           "conditions": {"time_windows": [{"start": "09:00", "end": "17:00", "timezone": "Mars/Olympus"}]}}],
         InvalidPolicy, "rules[0].conditions.time_windows[0].timezone"),
        ([{"path_pattern": "a", "permissions": ["read"],
           "conditions": {"time_windows": [{"start": "09:00", "end": "09:00"}]}}],
         InvalidPolicy, "rules[0].conditions.time_windows[0]"),
        ([{"path_pattern": "a", "permissions": ["read"],
           "conditions": {"time_windows": [{"start": "09:00", "end": "17:00", "days": ["funday"]}]}}],
         InvalidPolicy, "rules[0].conditions.time_windows[0].days"),
    ],
)
def test_invalid_rules_are_refused_with_the_field(rules: Any, error: type[Exception], field: str) -> None:
    with pytest.raises(error) as caught:
        check_rules(rules)
    assert caught.value.details["field"] == field  # type: ignore[attr-defined]


def test_rules_are_stored_in_one_canonical_form() -> None:
    assert check_rules([{"path_pattern": "a/**", "permissions": ["list", "read", "read"],
                         "conditions": {"ip_ranges": ["10.1.2.3/8"], "require_mfa": False}}]) == [
        {"path_pattern": "a/**", "permissions": ["read", "list"], "conditions": {"ip_ranges": ["10.0.0.0/8"]}}
    ]


@pytest.mark.parametrize(
    ("identity_type", "identity_id"),
    [("user", "sa:svc"), ("group", "user:a@x"), ("service_account", "group:x"), ("robot", "sa:x"),
     ("user", "user:"), ("user", "user:a b"), ("user", "alice")],
)
def test_bad_identities_are_refused(identity_type: str, identity_id: str) -> None:
    with pytest.raises(InvalidPolicy):
        check_identity(identity_type, identity_id)


# ---- the aggregate -------------------------------------------------------------------------------------------------


def _aggregate() -> Policy:
    return Policy.create(policy_id="pol_x", scope="tenant", owner="tnt_a", tenant_id="tnt_a", partner_id="ptn_a",
                         name="p", description=None, rules=[{"path_pattern": "a/**", "permissions": ["read"]}],
                         is_active=True, at=MONDAY_NOON, actor="user:admin", request_id=None)


def test_the_aggregate_keeps_bindings_and_refuses_deleting_a_bound_policy() -> None:
    aggregate = _aggregate()
    aggregate.bind(binding_id="bnd_1", identity_type="group", identity_id="group:SRE", expires_at=None,
                   at=MONDAY_NOON, actor="user:admin", request_id=None)
    with pytest.raises(BindingExists):
        aggregate.bind(binding_id="bnd_2", identity_type="group", identity_id="group:sre", expires_at=None,
                       at=MONDAY_NOON, actor="user:admin", request_id=None)
    with pytest.raises(InvalidPolicy):
        aggregate.bind(binding_id="bnd_3", identity_type="user", identity_id=ALICE, expires_at=MONDAY_NOON,
                       at=MONDAY_NOON, actor="user:admin", request_id=None)
    with pytest.raises(PolicyInUse):
        aggregate.delete(force=False, at=MONDAY_NOON, actor="user:admin", request_id=None)
    with pytest.raises(BindingNotFound):
        aggregate.unbind(binding_id="bnd_9", at=MONDAY_NOON, actor="user:admin", request_id=None)
    assert aggregate.delete(force=True, at=MONDAY_NOON, actor="user:admin", request_id=None) == ["bnd_1"]
    names = [type(e).__name__ for e in aggregate.collect_events()]
    assert names == ["Created", "BindingCreated", "BindingDeleted", "Deleted"]


def test_an_expired_binding_does_not_keep_a_policy_in_use() -> None:
    aggregate = _aggregate()
    aggregate.bind(binding_id="bnd_1", identity_type="user", identity_id=ALICE,
                   expires_at=MONDAY_NOON + timedelta(minutes=1), at=MONDAY_NOON, actor="a", request_id=None)
    later = MONDAY_NOON + timedelta(minutes=1)
    assert aggregate.delete(force=False, at=later, actor="a", request_id=None) == ["bnd_1"]


# ---- property tests against the reference model ------------------------------------------------------------------

SEGMENTS = ["a", "b", "ab", "ba", "aab", "ssl", "db"]
PATTERN_SEGMENTS = [*SEGMENTS, "*", "**", "?", "a*", "*b", "?b", "a?", "*a*", "a*b", "**", "s?l", "*?"]
paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=5).map("/".join)
patterns = st.lists(st.sampled_from(PATTERN_SEGMENTS), min_size=1, max_size=5).map("/".join).filter(
    lambda p: "**/**/**" not in p
)


@settings(max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pattern=patterns, path=paths)
def test_globs_agree_with_the_reference(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) == reference.glob_matches(pattern, path)


wide_segments = st.text(alphabet="ab-_0", min_size=1, max_size=4)
wide_pattern_segments = st.one_of(wide_segments, st.text(alphabet="ab*?-", min_size=1, max_size=4).filter(
    lambda s: "**" not in s), st.just("**"))


@settings(max_examples=3000, deadline=None)
@given(pattern=st.lists(wide_pattern_segments, min_size=1, max_size=4).map("/".join),
       path=st.lists(wide_segments, min_size=1, max_size=4).map("/".join))
def test_globs_agree_with_the_reference_on_any_characters(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) == reference.glob_matches(pattern, path)


IDENTITIES = ["user:alice@x", "user:bob@x", "sa:svc"]
GROUPS = ["group:dev", "group:sre"]
IPS = ["10.0.0.1", "10.9.9.9", "192.168.0.5", "2001:db8::1", None]
CIDRS = ["10.0.0.0/8", "10.0.0.0/24", "192.168.0.0/16", "2001:db8::/32", "0.0.0.0/0"]
WINDOWS = [
    {"start": "09:00", "end": "17:00"},
    {"days": ["mon", "wed"], "start": "22:00", "end": "06:00"},
    {"days": ["sat", "sun"], "start": "00:00", "end": "24:00", "timezone": "America/New_York"},
    {"start": "08:30", "end": "12:15", "timezone": "Asia/Kolkata"},
]
WEEK_START = datetime(2026, 3, 23, tzinfo=UTC)  # a Monday; the week crosses Europe's DST change

conditions = st.fixed_dictionaries(
    {},
    optional={
        "ip_ranges": st.lists(st.sampled_from(CIDRS), min_size=1, max_size=2),
        "require_mfa": st.just(True),
        "time_windows": st.lists(st.sampled_from(WINDOWS), min_size=1, max_size=2),
    },
).map(lambda c: {**c, "mfa_max_age": "30m"} if c.get("require_mfa") and len(c) % 2 else c)
rules = st.fixed_dictionaries(
    {"path_pattern": patterns,
     "permissions": st.lists(st.sampled_from(["read", "write", "delete", "list", "rotate", "admin"]), min_size=1,
                             max_size=3, unique=True)},
    optional={"conditions": conditions},
)
times = st.integers(min_value=0, max_value=7 * 24 * 60).map(lambda m: WEEK_START + timedelta(minutes=m))
bindings = st.lists(
    st.tuples(st.sampled_from(IDENTITIES + GROUPS), st.one_of(st.none(), times)), min_size=0, max_size=3
)
policies = st.lists(
    st.tuples(st.lists(rules, min_size=1, max_size=4), bindings, st.booleans()), min_size=0, max_size=4
)


def _plain_policies(drawn: list[Any]) -> list[dict[str, Any]]:
    plain = []
    for n, (policy_rules, policy_bindings, active) in enumerate(drawn):
        plain.append({
            "id": f"pol_{n:02d}",
            "is_active": active or n % 3 != 0,
            "rules": check_rules(policy_rules),
            "bindings": [
                {"binding_id": f"bnd_{n}_{i}", "identity_type": "group" if who.startswith("group:") else
                 ("user" if who.startswith("user:") else "service_account"), "identity_id": who, "expires_at": exp}
                for i, (who, exp) in enumerate(policy_bindings)
            ],
        })
    return plain


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    drawn=policies,
    identity=st.sampled_from(IDENTITIES),
    groups=st.lists(st.sampled_from(GROUPS), max_size=2, unique=True),
    path=paths,
    permission=st.sampled_from(["read", "write", "delete", "list", "rotate", "admin"]),
    at=times,
    ip=st.sampled_from(IPS),
    mfa_ago=st.one_of(st.none(), st.integers(min_value=-5, max_value=24 * 60)),
)
def test_evaluation_agrees_with_the_reference(
    drawn: list[Any], identity: str, groups: list[str], path: str, permission: str, at: datetime, ip: str | None,
    mfa_ago: int | None,
) -> None:
    plain = _plain_policies(drawn)
    mfa_at = None if mfa_ago is None else at - timedelta(minutes=mfa_ago)
    expected = reference.evaluate(plain, identity, groups, path, permission, at, ip, mfa_at)
    compiled = [compile_policy(p["id"], p["id"], p["is_active"], p["rules"], p["bindings"]) for p in plain]
    decision = evaluate(compiled, Subject.of(identity, groups), path, permission,
                        RequestContext(at=at, source_ip=parse_ip(ip), mfa_verified_at=mfa_at))
    assert (decision.allowed, decision.policy_id, decision.rule_index, decision.failed_condition) == expected


@settings(max_examples=500, deadline=None)
@given(cidr=st.sampled_from(CIDRS), ip=st.sampled_from([i for i in IPS if i]))
def test_ip_matching_agrees_with_the_reference(cidr: str, ip: str) -> None:
    rule = [{"path_pattern": "**", "permissions": ["read"], "conditions": {"ip_ranges": [cidr]}}]
    network, address = ipaddress.ip_network(cidr), ipaddress.ip_address(ip)
    inside = network.version == address.version and address in network
    assert allowed([policy(rule)], "a", ctx=context(ip=ip)) == inside
