"""The rotation and expiry schedules as properties: each threshold fires at most once per cycle (exactly once when
the scheduler looks often enough), nothing fires before its moment, the due step and the overdue step come once,
and the schedule read model's next-step time (``next_rotation_step_at``) is exactly when the aggregate next acts."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.domain.rotation import (
    RotationTerms,
    next_expiry_step_at,
    next_rotation_step_at,
    notify_thresholds,
    parse_thresholds,
)
from scaivault.domain.secrets import Secret

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def secret_at(at: datetime, *, policy_id: str | None = "rot_p", expires_in: timedelta | None = None,
              metadata: dict[str, Any] | None = None) -> Secret:
    secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
    secret.write(version=1, ciphertext=b"sealed", data_key_id="dk_1", at=at, actor="user:a@x", request_id=None,
                 secret_type=None, metadata=metadata, max_versions=None, default_max_versions=10,
                 expires_in=expires_in, rotation_policy_id=policy_id, cas=None)
    secret.collect_events()
    return secret


def terms(interval_hours: int, warn_hours: list[int], *, auto: bool = False, grace_hours: int = 48) -> RotationTerms:
    warn = parse_thresholds([f"{h}h" for h in warn_hours], "warn_before", below=interval_hours * HOUR)
    return RotationTerms(policy_id="rot_p", name="p", interval=interval_hours * HOUR,
                         grace_period=grace_hours * HOUR, warn_before=tuple(warn), auto_generate=auto,
                         secret_policy_id=None, is_active=True)


def next_step(secret: Secret, policy: RotationTerms) -> datetime | None:
    notice = secret.rotation_notice
    return next_rotation_step_at(
        policy, cycle_start=secret.rotation_cycle_start, warned=secret.rotation_warned,
        pending_due_at=notice["due_at"] if secret.rotation_pending and notice else None,
        overdue=secret.rotation_overdue,
    )


@st.composite
def policies(draw: st.DrawFn) -> RotationTerms:
    interval = draw(st.integers(min_value=2, max_value=500))
    warn = draw(st.lists(st.integers(min_value=1, max_value=interval - 1), max_size=4, unique=True))
    return terms(interval, warn, grace_hours=draw(st.integers(min_value=1, max_value=100)))


@settings(max_examples=200, deadline=None)
@given(policy=policies(), gaps=st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=40))
def test_each_threshold_fires_at_most_once_never_early_and_due_and_overdue_once(
    policy: RotationTerms, gaps: list[int]
) -> None:
    secret = secret_at(T0)
    due_at = T0 + policy.interval
    moments = dict(policy.warn_before)
    fired: Counter[str] = Counter()
    due_now = overdue = 0
    at = T0
    for gap in gaps:
        at += gap * HOUR
        assert not secret.advance_rotation(policy, at=at)  # manual policy: never asks for a generated value
        for event in secret.collect_events():
            if isinstance(event, Secret.RotationDue) and event.due_now:
                due_now += 1
                assert at >= due_at
            elif isinstance(event, Secret.RotationDue):
                assert event.threshold is not None and at >= due_at - moments[event.threshold] and at < due_at
                assert event.covers[-1] == event.threshold
                fired.update(event.covers)
            else:
                assert isinstance(event, Secret.RotationOverdue)
                overdue += 1
                assert at >= due_at + policy.grace_period
    assert all(count == 1 for count in fired.values())
    assert due_now == (1 if at >= due_at else 0)
    assert overdue <= 1


@settings(max_examples=200, deadline=None)
@given(policy=policies())
def test_looking_at_every_step_the_schedule_names_fires_every_threshold_once(policy: RotationTerms) -> None:
    """A scheduler that wakes exactly when the schedule says sends every warning, then due_now, then overdue: the
    next-step time is never late, and at it the aggregate always acts."""
    secret = secret_at(T0)
    sent: list[str] = []
    while (step := next_step(secret, policy)) is not None:
        assert not secret.advance_rotation(policy, at=step - timedelta(seconds=1))
        assert not secret.collect_events(), "the aggregate acted before the schedule's next step"
        secret.advance_rotation(policy, at=step)
        events = secret.collect_events()
        assert len(events) == 1, "at the schedule's next step the aggregate takes exactly one step"
        event: Any = events[0]
        sent.append("overdue" if isinstance(event, Secret.RotationOverdue)
                    else "due_now" if event.due_now else event.threshold)
    assert sent == [label for label, _ in policy.warn_before] + ["due_now", "overdue"]


@settings(max_examples=100, deadline=None)
@given(policy=policies(), late_hours=st.integers(min_value=0, max_value=1000))
def test_an_auto_rotation_starts_a_new_cycle_from_the_rotation(policy: RotationTerms, late_hours: int) -> None:
    auto = RotationTerms(**{**policy.__dict__, "auto_generate": True})
    secret = secret_at(T0)
    at = T0 + policy.interval + late_hours * HOUR  # a server that was down catches up when it starts
    assert secret.advance_rotation(auto, at=at)
    secret.rotate(auto, version=2, ciphertext=b"new", data_key_id="dk_2", at=at, actor="system:rotation-scheduler",
                  request_id=None)
    kinds = [type(e).__name__ for e in secret.collect_events()]
    assert kinds == ["VersionWritten", "Rotated"]
    assert secret.rotation_cycle_start == at and secret.rotation_warned == []
    assert next_step(secret, auto) == min([at + policy.interval - before for _, before in policy.warn_before]
                                          + [at + policy.interval])
    assert not secret.advance_rotation(auto, at=at)  # the same step again: nothing left to do


@settings(max_examples=200, deadline=None)
@given(days=st.lists(st.integers(min_value=1, max_value=60), min_size=1, max_size=4, unique=True),
       expires_in_days=st.integers(min_value=1, max_value=90),
       gaps=st.lists(st.integers(min_value=1, max_value=24 * 20), min_size=1, max_size=40))
def test_expiry_notices_fire_once_each_then_expired_once(days: list[int], expires_in_days: int,
                                                         gaps: list[int]) -> None:
    metadata = {"notify_before": [f"{d}d" for d in days]}
    secret = secret_at(T0, policy_id=None, expires_in=timedelta(days=expires_in_days), metadata=metadata)
    expires_at = T0 + timedelta(days=expires_in_days)
    thresholds = dict(notify_thresholds(metadata))
    fired: Counter[str] = Counter()
    expired = 0
    at = T0
    for gap in gaps:
        at += gap * HOUR
        step = next_expiry_step_at(secret.expires_at, list(thresholds.items()), warned=secret.expiry_warned,
                                   expired_notified=secret.expired_notified)
        secret.advance_expiry(at=at)
        events = secret.collect_events()
        assert bool(events) == (step is not None and at >= step)
        for event in events:
            if isinstance(event, Secret.Expired):
                expired += 1
                assert at >= expires_at
            else:
                assert isinstance(event, Secret.ExpiryWarned)
                assert expires_at - thresholds[event.threshold] <= at < expires_at
                assert event.days_remaining == -(-(expires_at - at) // timedelta(days=1))
                fired.update(event.covers)
    assert all(count == 1 for count in fired.values())
    assert expired == (1 if at >= expires_at else 0)


def test_notify_before_defaults_to_30d_7d_1d_and_a_new_expiry_restarts_the_notices() -> None:
    assert [label for label, _ in notify_thresholds({})] == ["30d", "7d", "1d"]
    assert [label for label, _ in notify_thresholds({"notify_before": "2d,12h"})] == ["2d", "12h"]
    assert [label for label, _ in notify_thresholds({"notify_before": ["soon"]})] == ["30d", "7d", "1d"]
    secret = secret_at(T0, policy_id=None, expires_in=timedelta(days=10))
    secret.advance_expiry(at=T0 + timedelta(days=3, hours=1))
    (warned,) = secret.collect_events()
    assert isinstance(warned, Secret.ExpiryWarned) and (warned.threshold, warned.covers) == ("7d", ["30d", "7d"])
    secret.write(version=2, ciphertext=b"v2", data_key_id="dk_2", at=T0 + timedelta(days=4), actor="user:a@x",
                 request_id=None, secret_type=None, metadata=None, max_versions=None, default_max_versions=10,
                 expires_in=timedelta(days=40), rotation_policy_id=None, cas=None)
    secret.collect_events()
    assert secret.expiry_warned == [] and not secret.expired_notified
    secret.advance_expiry(at=T0 + timedelta(days=15))
    (again,) = secret.collect_events()
    assert isinstance(again, Secret.ExpiryWarned) and again.threshold == "30d" and again.days_remaining == 29


MIRRORED = {  # schedule row column -> how the aggregate holds it
    "rotation_policy_id": lambda s: s.rotation_policy_id,
    "rotation_cycle_start": lambda s: s.rotation_cycle_start,
    "rotation_warned": lambda s: list(s.rotation_warned),
    "rotation_pending_due_at": lambda s: s.rotation_notice["due_at"] if s.rotation_pending else None,
    "rotation_overdue": lambda s: s.rotation_overdue,
    "last_rotated_at": lambda s: s.last_rotated_at,
    "expires_at": lambda s: s.expires_at,
    "expiry_warned": lambda s: list(s.expiry_warned),
    "expired_notified": lambda s: s.expired_notified,
}


@settings(max_examples=150, deadline=None)
@given(policy=policies(), auto=st.booleans(), steps=st.lists(
    st.tuples(st.integers(min_value=1, max_value=200), st.sampled_from(["scan", "write", "detach", "attach"])),
    min_size=1, max_size=30,
))
def test_the_schedule_read_model_mirrors_the_aggregate(
    policy: RotationTerms, auto: bool, steps: list[tuple[int, str]]
) -> None:
    """The projector applies each Secret event as the aggregate's mutators do, so the schedule it computes is the
    aggregate's own."""
    from projections.rotation.projector import _apply  # the mirror under test

    policy = RotationTerms(**{**policy.__dict__, "auto_generate": auto})
    secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
    state: dict[str, Any] = {"live": False, "deleted": False, "metadata": {}, "current_version": 0,
                             "rotation_policy_id": None, "rotation_cycle_start": None, "rotation_warned": [],
                             "rotation_pending_due_at": None, "rotation_overdue": False, "last_rotated_at": None,
                             "expires_at": None, "expiry_warned": [], "expired_notified": False}
    at = T0
    secret.write(version=1, ciphertext=b"v", data_key_id="dk", at=at, actor="user:a@x", request_id=None,
                 secret_type=None, metadata=None, max_versions=None, default_max_versions=10,
                 expires_in=timedelta(days=20), rotation_policy_id="rot_p", cas=None)
    for gap, action in steps:
        at += gap * HOUR
        if action == "scan":
            secret.advance_expiry(at=at)
            if secret.advance_rotation(policy, at=at):
                secret.rotate(policy, version=secret.next_version, ciphertext=b"r", data_key_id="dk", at=at,
                              actor="system:rotation-scheduler", request_id=None)
        elif action == "write":
            secret.write(version=secret.next_version, ciphertext=b"w", data_key_id="dk", at=at, actor="user:a@x",
                         request_id=None, secret_type=None, metadata=None, max_versions=None,
                         default_max_versions=10, expires_in=timedelta(days=gap % 40 + 1), rotation_policy_id=None,
                         cas=None)
        else:
            secret.attach_rotation_policy(None if action == "detach" else "rot_p", at=at, actor="user:a@x",
                                          request_id=None)
        for event in secret.collect_events():
            _apply(state, event)
        assert {column: state[column] for column in MIRRORED} == {
            column: held(secret) for column, held in MIRRORED.items()
        }
