"""The identity mirror's pure parts: role, reach and membership rules, effective roles, value rules, aggregates, the
sync plan (a property test against applying it), and webhook signature verification."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.identity.roles import cut_off, effective_roles
from scaivault.auth.principal import Principal
from scaivault.domain.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidRole,
    SignatureExpired,
    SignatureInvalid,
    ValidationFailed,
)
from scaivault.domain.identities import (
    ROLE_RANKS,
    SCAIKEY,
    SCAIVAULT,
    TOP_AUTHORITY,
    Group,
    MirroredUser,
    MirrorState,
    ReportedState,
    ReportedUser,
    RoleRecord,
    User,
    check_membership_change,
    check_role_change,
    check_within_reach,
    parse_email,
    parse_group_name,
    parse_roles,
    plan_tenant_sync,
    reach_of,
)
from scaivault.identity.signatures import signature, verify_delivery

AT = datetime(2026, 1, 1, tzinfo=UTC)
STAMP: dict[str, Any] = {"at": AT, "actor": "user:admin@acme.example", "request_id": None}
# A user's events also carry their author's authority.
USER_STAMP: dict[str, Any] = {**STAMP, "authority": TOP_AUTHORITY}
TENANT, PARTNER, SUPER = ROLE_RANKS["tenant_admin"], ROLE_RANKS["partner_admin"], ROLE_RANKS["super_admin"]
ADMIN_ROLES = st.frozensets(st.sampled_from(["super_admin", "partner_admin", "tenant_admin", "auditor"]))
SECRET = "webhook-secret-0123456789"


# --- role rules (spec reference/identity, PUT /v1/identity/users/{user_id}/roles) ----------------------------------


@pytest.mark.parametrize("changer", [frozenset(), frozenset({"tenant_admin"}), frozenset({"auditor"})])
def test_only_super_admins_and_partner_admins_change_roles(changer: frozenset[str]) -> None:
    with pytest.raises(AccessDenied) as denied:
        check_role_change(changer_roles=changer, changing_self=False, current=[], requested=["tenant_admin"])
    assert denied.value.details["reason"] == "role_changer_required"
    with pytest.raises(AccessDenied):  # taking roles away is changing them too
        check_role_change(changer_roles=changer, changing_self=False, current=["tenant_admin"], requested=[])


@pytest.mark.parametrize("changer", ["super_admin", "partner_admin"])
def test_super_admins_and_partner_admins_change_other_users_roles(changer: str) -> None:
    check_role_change(changer_roles=frozenset({changer}), changing_self=False, current=["tenant_admin"],
                      requested=["partner_admin"])


def test_only_a_super_admin_grants_or_revokes_super_admin() -> None:
    partner_admin = frozenset({"partner_admin"})
    for current, requested in (([], ["super_admin"]), (["super_admin"], []), (["super_admin"], ["tenant_admin"])):
        with pytest.raises(AccessDenied) as denied:
            check_role_change(changer_roles=partner_admin, changing_self=False, current=current, requested=requested)
        assert denied.value.details["reason"] == "super_admin_required"
    check_role_change(
        changer_roles=frozenset({"super_admin"}), changing_self=False, current=[], requested=["super_admin"]
    )
    # A partner admin may still change the other roles of a super_admin's account, keeping super_admin as it is.
    check_role_change(changer_roles=partner_admin, changing_self=False, current=["super_admin"],
                      requested=["super_admin", "tenant_admin"])


@pytest.mark.parametrize("changer", ["super_admin", "partner_admin"])
def test_no_one_raises_their_own_privileges(changer: str) -> None:
    own = frozenset({changer})
    with pytest.raises(AccessDenied) as denied:
        check_role_change(changer_roles=own, changing_self=True, current=[changer], requested=[changer, "tenant_admin"])
    assert denied.value.details["reason"] == "self_elevation"
    check_role_change(changer_roles=own, changing_self=True, current=[changer, "tenant_admin"], requested=[changer])


def test_a_partner_admin_cannot_make_itself_super_admin() -> None:
    with pytest.raises(AccessDenied):
        check_role_change(changer_roles=frozenset({"partner_admin"}), changing_self=True, current=["partner_admin"],
                          requested=["partner_admin", "super_admin"])


@given(
    changer=st.frozensets(st.sampled_from(["super_admin", "partner_admin", "tenant_admin"])),
    current=st.frozensets(st.sampled_from(["super_admin", "partner_admin", "tenant_admin"])),
    requested=st.frozensets(st.sampled_from(["super_admin", "partner_admin", "tenant_admin"])),
    changing_self=st.booleans(),
)
def test_the_role_rules_match_their_statement(
    changer: frozenset[str], current: frozenset[str], requested: frozenset[str], changing_self: bool
) -> None:
    allowed = (
        bool(changer & {"super_admin", "partner_admin"})
        and ("super_admin" in changer or "super_admin" not in current ^ requested)
        and (not changing_self or requested <= current)
    )
    try:
        check_role_change(changer_roles=changer, changing_self=changing_self, current=current, requested=requested)
        outcome = True
    except AccessDenied:
        outcome = False
    assert outcome == allowed


# --- reach and effective roles --------------------------------------------------------------------------------------


def test_reach_is_the_rank_of_the_strongest_admin_role() -> None:
    assert reach_of([]) == reach_of(["auditor"]) == 0
    assert reach_of(["tenant_admin"]) == TENANT
    assert reach_of(["tenant_admin", "super_admin", "partner_admin"]) == SUPER == TOP_AUTHORITY


@given(actor=ADMIN_ROLES, roles=ADMIN_ROLES, authority=st.integers(0, TOP_AUTHORITY), whole_record=st.booleans())
def test_the_reach_rule_matches_its_statement(
    actor: frozenset[str], roles: frozenset[str], authority: int, whole_record: bool
) -> None:
    """An actor changes no user holding a role above its own, and removes no record whose author reached further."""
    allowed = reach_of(roles) <= reach_of(actor) and (not whole_record or authority <= reach_of(actor))
    try:
        check_within_reach(actor_reach=reach_of(actor), roles=roles, authority=authority, whole_record=whole_record)
        outcome = True
    except AccessDenied as denied:
        assert denied.details["reason"] == "outside_reach"
        outcome = False
    assert outcome == allowed


def test_a_record_speaks_for_the_token_roles_up_to_its_authority() -> None:
    token = frozenset({"partner_admin", "tenant_admin"})
    by_tenant_admin = RoleRecord(frozenset(), True, TENANT)
    assert effective_roles(token, [by_tenant_admin]) == {"partner_admin"}
    assert effective_roles(token, [RoleRecord(frozenset({"tenant_admin"}), True, PARTNER)]) == {"tenant_admin"}
    assert effective_roles(token, [RoleRecord(frozenset({"tenant_admin"}), False, PARTNER)]) == frozenset()
    assert effective_roles(frozenset({"super_admin"}), [RoleRecord(frozenset(), False, PARTNER)]) == {"super_admin"}
    assert effective_roles(token, []) == token  # unknown to the mirror: the token's word
    # Two records for one address (ScaiKey allows it): only what both leave.
    assert effective_roles(token, [by_tenant_admin, RoleRecord(frozenset(), True, PARTNER)]) == frozenset()


def test_a_user_the_mirror_holds_with_no_active_record_is_cut_off() -> None:
    suspended, active = RoleRecord(frozenset(), False, TENANT), RoleRecord(frozenset(), True, TENANT)
    assert cut_off([suspended]) and cut_off([suspended, suspended])
    assert not cut_off([])  # unknown to the mirror: the token's word
    assert not cut_off([active]) and not cut_off([suspended, active])


def test_roles_are_derived_from_the_tokens_own_roles_every_time() -> None:
    """A principal whose roles the mirror already changed keeps its token's roles, so deriving again after the record
    is gone gives back the token's, not what the record gave."""
    token = principal_with(frozenset())
    given_by_record = replace(token, roles=frozenset({"tenant_admin"}))
    assert given_by_record.token_roles == frozenset() and given_by_record.claimed_roles == frozenset()
    assert effective_roles(given_by_record.claimed_roles, []) == frozenset()


def principal_with(roles: frozenset[str]) -> Principal:
    return Principal.from_claims({"sub": "user:u@x.example", "jti": "tok_1", "roles": sorted(roles)})


@given(token=ADMIN_ROLES, mirrored=ADMIN_ROLES, authority=st.integers(1, TOP_AUTHORITY), active=st.booleans())
def test_effective_roles_never_pass_what_the_records_author_reached_or_left(
    token: frozenset[str], mirrored: frozenset[str], authority: int, active: bool
) -> None:
    roles = effective_roles(token, [RoleRecord(mirrored, active, authority)])
    for role in roles:  # each comes from the record (when active), or from the token beyond the author's reach
        assert (active and role in mirrored) or (role in token and ROLE_RANKS.get(role, 0) > authority)
    assert {role for role in token if ROLE_RANKS.get(role, 0) > authority} <= roles


def test_unknown_roles_are_invalid_role() -> None:
    assert parse_roles(["tenant_admin", "partner_admin", "tenant_admin"]) == ["partner_admin", "tenant_admin"]
    for bad in (["root"], ["Tenant_Admin"], [1]):
        with pytest.raises(InvalidRole):
            parse_roles(bad)


def test_no_one_adds_themselves_to_a_group_but_anyone_may_leave() -> None:
    with pytest.raises(AccessDenied):
        check_membership_change(adding=True, changing_self=True)
    check_membership_change(adding=False, changing_self=True)
    check_membership_change(adding=True, changing_self=False)


# --- values ------------------------------------------------------------------------------------------------------


def test_identifiers_have_one_canonical_form() -> None:
    assert parse_email("Alice@ACME.example") == "alice@acme.example"
    assert parse_group_name("SRE") == "sre"
    for bad in ("alice", "a b@c", "a@b@c", "x" * 250 + "@a.b", "a\x00@b.c"):
        with pytest.raises(ValidationFailed):
            parse_email(bad)
    for bad in ("", "-x", "with space", "x" * 129):
        with pytest.raises(ValidationFailed):
            parse_group_name(bad)


# --- aggregates ----------------------------------------------------------------------------------------------------


def profile(email: str = "alice@acme.example") -> dict[str, object]:
    return {"email": email, "display_name": "Alice", "status": "ACTIVE", "mfa_enabled": False}


def test_roles_set_in_scaivault_are_no_longer_overwritten_by_scaikey() -> None:
    user = User(tenant_id="tnt_a", user_id="usr_a", profile=profile(), source=SCAIKEY, **USER_STAMP)
    assert user.set_roles(roles=["tenant_admin"], source=SCAIKEY, **USER_STAMP)
    assert user.set_roles(roles=[], source=SCAIVAULT, **USER_STAMP)
    assert not user.set_roles(roles=["tenant_admin"], source=SCAIKEY, **USER_STAMP)
    assert user.roles == [] and user.roles_set_locally


def test_a_removed_user_loses_its_roles_and_comes_back_reinstated() -> None:
    user = User(tenant_id="tnt_a", user_id="usr_a", profile=profile(), source=SCAIKEY, **USER_STAMP)
    user.set_roles(roles=["tenant_admin"], source=SCAIVAULT, **USER_STAMP)
    assert user.remove(source=SCAIKEY, **USER_STAMP) and not user.remove(source=SCAIKEY, **USER_STAMP)
    assert user.roles == [] and not user.roles_set_locally
    assert user.update(profile=profile(), source=SCAIKEY, **USER_STAMP)
    kinds = [type(e).__name__ for e in user.collect_events()]
    assert kinds == ["Created", "RolesChanged", "Removed", "Reinstated"]


def test_a_records_authority_is_its_strongest_authors_and_a_new_record_its_own() -> None:
    user = User(tenant_id="tnt_a", user_id="usr_a", profile=profile(), source=SCAIVAULT, **STAMP, authority=TENANT)
    assert user.authority == TENANT
    # Confirming the same roles still counts when it puts the record under a higher authority ...
    assert user.set_roles(roles=[], source=SCAIVAULT, **STAMP, authority=PARTNER)
    assert not user.set_roles(roles=[], source=SCAIVAULT, **STAMP, authority=PARTNER)
    # ... and a lower author changing roles within its reach leaves that authority in place.
    assert user.set_roles(roles=["tenant_admin"], source=SCAIVAULT, **STAMP, authority=TENANT)
    assert user.authority == PARTNER
    assert user.update(profile=profile() | {"status": "SUSPENDED"}, source=SCAIKEY, **STAMP, authority=SUPER)
    assert user.authority == SUPER
    user.remove(source=SCAIKEY, **STAMP, authority=SUPER)
    user.update(profile=profile(), source=SCAIVAULT, **STAMP, authority=TENANT)  # reinstated: a new record
    assert user.authority == TENANT and [e.authority for e in user.collect_events()] == [  # type: ignore[attr-defined]
        TENANT, PARTNER, TENANT, SUPER, SUPER, TENANT
    ]


def test_group_membership_is_idempotent_and_removing_the_group_ends_it() -> None:
    group = Group(tenant_id="tnt_a", group_id="grp_a", profile={"name": "sre", "description": None, "status": "ACTIVE"},
                  source=SCAIVAULT, **STAMP)
    assert group.add_member(user_id="usr_a", source=SCAIVAULT, **STAMP)
    assert not group.add_member(user_id="usr_a", source=SCAIVAULT, **STAMP)
    assert group.remove(source=SCAIVAULT, **STAMP)
    assert group.members == {}
    assert not group.remove_member(user_id="usr_a", source=SCAIVAULT, **STAMP)


# --- the sync plan -------------------------------------------------------------------------------------------------

USER_IDS = st.sampled_from(["usr_a", "usr_b", "usr_c", "usr_d"])
GROUP_IDS = st.sampled_from(["grp_a", "grp_b", "grp_c"])
ROLE_SETS = st.lists(st.sampled_from(["tenant_admin", "partner_admin"]), unique=True).map(sorted)


@st.composite
def mirrors(draw: st.DrawFn) -> MirrorState:
    users = {
        uid: MirroredUser(profile(f"{uid}@x.example" if draw(st.booleans()) else "old@x.example"),
                          tuple(draw(ROLE_SETS)), draw(st.booleans()))
        for uid in draw(st.sets(USER_IDS))
    }
    groups = {gid: {"name": gid, "description": None, "status": "ACTIVE"} for gid in draw(st.sets(GROUP_IDS))}
    memberships = {(g, u) for g in groups for u in users if draw(st.booleans())}
    return MirrorState(users, groups, memberships)


@st.composite
def reports(draw: st.DrawFn) -> ReportedState:
    groups = {gid: {"name": gid, "description": None, "status": "ACTIVE"} for gid in draw(st.sets(GROUP_IDS))}
    users = {
        uid: ReportedUser(profile(f"{uid}@x.example"), tuple(draw(ROLE_SETS)),
                          tuple(sorted(draw(st.sets(GROUP_IDS)))))
        for uid in draw(st.sets(USER_IDS))
    }
    return ReportedState(users, groups)


def apply(mirror: MirrorState, plan: object) -> MirrorState:
    """What the commands do with a plan, on plain data: the reference the plan is checked against."""
    users = dict(mirror.users)
    groups = dict(mirror.groups)
    members = set(mirror.memberships)
    for uid, prof in plan.users_to_write.items():  # type: ignore[attr-defined]
        old = users.get(uid, MirroredUser({}, ()))
        users[uid] = MirroredUser(prof, old.roles, old.roles_set_locally)
    for uid, roles in plan.roles_to_write.items():  # type: ignore[attr-defined]
        users[uid] = MirroredUser(users[uid].profile, tuple(roles), users[uid].roles_set_locally)
    for gid, prof in plan.groups_to_write.items():  # type: ignore[attr-defined]
        groups[gid] = prof
    members -= set(plan.members_to_remove)  # type: ignore[attr-defined]
    for uid in plan.users_to_remove:  # type: ignore[attr-defined]
        del users[uid]
        members = {m for m in members if m[1] != uid}
    for gid in plan.groups_to_remove:  # type: ignore[attr-defined]
        del groups[gid]
        members = {m for m in members if m[0] != gid}
    members |= set(plan.members_to_add)  # type: ignore[attr-defined]
    return MirrorState(users, groups, members)


@settings(max_examples=300)
@given(mirror=mirrors(), reported=reports())
def test_a_complete_report_makes_the_mirror_equal_to_it(mirror: MirrorState, reported: ReportedState) -> None:
    after = apply(mirror, plan_tenant_sync(mirror, reported, complete=True))
    assert set(after.users) == set(reported.users) and after.groups == reported.groups
    for uid, user in reported.users.items():
        assert after.users[uid].profile == user.profile
        kept = mirror.users[uid].roles if uid in mirror.users and mirror.users[uid].roles_set_locally else user.roles
        assert after.users[uid].roles == tuple(kept or ())
    assert after.memberships == {(g, u) for u, user in reported.users.items() for g in user.groups or ()
                                 if g in reported.groups}
    # Applying the plan again changes nothing (a sync of an unchanged directory is quiet).
    assert plan_tenant_sync(after, reported, complete=True).empty


@settings(max_examples=300)
@given(mirror=mirrors(), reported=reports())
def test_a_partial_report_changes_only_what_it_names(mirror: MirrorState, reported: ReportedState) -> None:
    plan = plan_tenant_sync(mirror, reported, complete=False)
    assert not plan.users_to_remove and not plan.groups_to_remove
    touched = set(reported.users)
    assert all(u in touched for _, u in plan.members_to_add + plan.members_to_remove)
    after = apply(mirror, plan)
    for uid in set(mirror.users) - touched:
        assert after.users[uid] == mirror.users[uid]


# --- webhook signatures --------------------------------------------------------------------------------------------

BODY = b'{"event_id":"evt_1","event_type":"user.updated","data":{}}'


def verify(sig: str | None, ts: str | None, *, now: float = 1_714_478_400, secrets: tuple[str, ...] = (SECRET,),
           body: bytes = BODY) -> int:
    return verify_delivery(secrets=secrets, signature_header=sig, timestamp_header=ts, body=body, now=now)


def test_a_correctly_signed_fresh_delivery_verifies() -> None:
    assert verify(signature(SECRET, "1714478400", BODY), "1714478400") == 1_714_478_400
    # Within the 5-minute window either way.
    assert verify(signature(SECRET, "1714478100", BODY), "1714478100")


def test_a_forged_or_altered_delivery_is_signature_invalid() -> None:
    good = signature(SECRET, "1714478400", BODY)
    for sig, body in (
        (signature("another-secret-0123456789", "1714478400", BODY), BODY),
        (good, BODY + b" "),
        (good[:-1] + ("0" if good[-1] != "0" else "1"), BODY),
        ("sha256=" + "é" * 64, BODY),
    ):
        with pytest.raises(SignatureInvalid):
            verify(sig, "1714478400", body=body)
    with pytest.raises(SignatureInvalid):  # the timestamp is signed: it cannot be refreshed
        verify(good, "1714478401")
    with pytest.raises(SignatureInvalid):  # no secret configured: nothing verifies
        verify(good, "1714478400", secrets=())


def test_stale_deliveries_are_refused_even_when_correctly_signed() -> None:
    for ts in ("1714478099", "1714478701"):
        with pytest.raises(SignatureExpired):
            verify(signature(SECRET, ts, BODY), ts)


def test_missing_or_malformed_headers_are_invalid_request() -> None:
    good = signature(SECRET, "1714478400", BODY)
    for sig, ts in ((None, "1714478400"), (good, None), (good.removeprefix("sha256="), "1714478400"),
                    (good, "-1714478400"), (good, "1714478400.0"), (good, "1" * 13), (good, "١٧١٤٤٧٨٤٠٠")):
        with pytest.raises(InvalidRequest):
            verify(sig, ts)


def test_the_previous_secret_is_accepted_during_a_rotation() -> None:
    old = "previous-secret-0123456789"
    assert verify(signature(old, "1714478400", BODY), "1714478400", secrets=(SECRET, old))


def test_what_scaikey_reports_is_parsed_defensively() -> None:
    from scaivault.identity.scaikey import Skipped, reported_state, reported_user

    user_id, user = reported_user({"id": "usr_a", "email": "A@x.example", "roles": [{"x": 1}, "super_admin", "x"],
                                   "groups": ["grp_a", 7, "not-a-group"]})
    assert (user_id, user.roles, user.groups, user.profile["email"]) == ("usr_a", ("super_admin",), ("grp_a",),
                                                                          "a@x.example")
    assert reported_user({"id": "usr_b", "email": "b@x.example"})[1].roles is None  # not said: not changed
    skipped = Skipped()
    state = reported_state([{"id": "usr_ok", "email": "ok@x.example"}, "junk", {"id": "bad", "email": "b@x.example"}],
                           [{"id": "grp_ok", "name": "ok"}, {"id": "grp_bad", "name": "has space"}], skipped)
    assert set(state.users) == {"usr_ok"} and set(state.groups) == {"grp_ok"} and skipped.count == 3
