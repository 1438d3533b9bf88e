"""The identity mirror's pure parts: role and membership rules, value rules, aggregates, the sync plan (a property
test against applying it), and webhook signature verification."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.domain.errors import (
    AccessDenied,
    InvalidRequest,
    InvalidRole,
    SignatureExpired,
    SignatureInvalid,
    ValidationFailed,
)
from scaivault.domain.identities import (
    SCAIKEY,
    SCAIVAULT,
    Group,
    MirroredUser,
    MirrorState,
    ReportedState,
    ReportedUser,
    User,
    check_membership_change,
    check_role_change,
    parse_email,
    parse_group_name,
    parse_roles,
    plan_tenant_sync,
)
from scaivault.identity.signatures import signature, verify_delivery

AT = datetime(2026, 1, 1, tzinfo=timezone.utc)
STAMP = {"at": AT, "actor": "user:admin@acme.example", "request_id": None}
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
    check_role_change(changer_roles=frozenset({"super_admin"}), changing_self=False, current=[], requested=["super_admin"])
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
    user = User(tenant_id="tnt_a", user_id="usr_a", profile=profile(), source=SCAIKEY, **STAMP)
    assert user.set_roles(roles=["tenant_admin"], source=SCAIKEY, **STAMP)
    assert user.set_roles(roles=[], source=SCAIVAULT, **STAMP)
    assert not user.set_roles(roles=["tenant_admin"], source=SCAIKEY, **STAMP)
    assert user.roles == [] and user.roles_set_locally


def test_a_removed_user_loses_its_roles_and_comes_back_reinstated() -> None:
    user = User(tenant_id="tnt_a", user_id="usr_a", profile=profile(), source=SCAIKEY, **STAMP)
    user.set_roles(roles=["tenant_admin"], source=SCAIVAULT, **STAMP)
    assert user.remove(source=SCAIKEY, **STAMP) and not user.remove(source=SCAIKEY, **STAMP)
    assert user.roles == [] and not user.roles_set_locally
    assert user.update(profile=profile(), source=SCAIKEY, **STAMP)
    kinds = [type(e).__name__ for e in user.collect_events()]
    assert kinds == ["Created", "RolesChanged", "Removed", "Reinstated"]


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
        assert after.users[uid].roles == tuple(kept)
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
