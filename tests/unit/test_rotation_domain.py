"""The RotationPolicy aggregate's validation, and the Secret aggregate's rotation events: attaching, a manual
rotation completed by the owner's write, a failed auto-rotation, grace marks, replay from a snapshot, and the
public events they give."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from eventsourcing.domain import Snapshot

from scaivault.domain import event_catalog  # noqa: F401 - registers the translators
from scaivault.domain.errors import InvalidDuration, InvalidRequest
from scaivault.domain.notifications import Subject, public_events
from scaivault.domain.rotation import PolicySettings, RotationPolicy, id_from_name, terms_of
from scaivault.domain.secrets import Secret
from scaivault.eventstore.mapper import create_mapper
from tests.unit.test_rotation_schedule import secret_at

T0 = datetime(2026, 1, 1, tzinfo=UTC)
BASE = {"name": "quarterly", "description": None, "interval": "90d", "grace_period": "48h", "warn_before": "7d,1d",
        "auto_generate": False, "secret_policy_id": None, "webhook_ids": ["wh_alerts"], "is_active": True}


def settings(**changes: Any) -> PolicySettings:
    return PolicySettings.check(**{**BASE, **changes})


def test_settings_are_validated_with_the_spec_codes() -> None:
    assert settings().warn_before == ["7d", "1d"]
    assert settings(warn_before=["1d", "7d", "7d"]).warn_before == ["7d", "1d"]
    assert settings(warn_before=None).warn_before == []
    for field, value in (("interval", "90"), ("interval", "0d"), ("grace_period", "forever"),
                         ("warn_before", "7d,x"), ("interval", 90)):
        with pytest.raises(InvalidDuration) as caught:
            settings(**{field: value})
        assert caught.value.details["field"] == field
    refusals: list[tuple[str, Any]] = [("warn_before", "90d"), ("warn_before", 7), ("secret_policy_id", "pol_x"),
                                       ("webhook_ids", ["https://x"]), ("webhook_ids", "wh_a"), ("name", " "),
                                       ("name", "a\nb"),
                                       ("auto_generate", "true"), ("description", "x" * 1025)]
    for field, value in refusals:
        with pytest.raises(InvalidRequest) as refused:
            settings(**{field: value})
        assert refused.value.details["field"] == field


def test_ids_derive_from_names_that_make_valid_ids() -> None:
    assert id_from_name("quarterly") == "rot_quarterly"
    assert id_from_name("db-passwords_2") == "rot_db-passwords_2"
    assert id_from_name("Quarterly") is None and id_from_name("two words") is None and id_from_name("x" * 65) is None


def test_a_policy_updates_only_on_change_and_replays_from_a_snapshot() -> None:
    policy = RotationPolicy.create(policy_id="rot_quarterly", owner="tnt_a", tenant_id="tnt_a", partner_id="ptn_a",
                                   settings=settings(), at=T0, actor="user:a@x", request_id=None)
    policy.update(settings(), at=T0, actor="user:a@x", request_id=None)
    assert len(policy.collect_events()) == 1
    policy.update(settings(is_active=False, interval="30d"), at=T0, actor="user:a@x", request_id=None)
    (updated,) = policy.collect_events()
    assert isinstance(updated, RotationPolicy.Updated) and not policy.is_active
    assert policy.terms().interval == timedelta(days=30)
    mapper = create_mapper()
    snapshot: Any = mapper.to_domain_event(mapper.to_stored_event(Snapshot.take(policy)))
    reloaded = snapshot.mutate(None)
    assert vars(reloaded) == vars(policy)
    policy.delete(at=T0, actor="user:a@x", request_id=None)
    assert policy.deleted


MANUAL = terms_of("rot_p", {**BASE, "name": "p", "interval": "10d", "warn_before": ["2d"], "grace_period": "1d"})


def test_the_owners_write_after_a_notice_is_the_rotation() -> None:
    secret = secret_at(T0)
    secret.write(version=2, ciphertext=b"v2", data_key_id="dk_2", at=T0 + timedelta(days=1), actor="user:a@x",
                 request_id=None, secret_type=None, metadata=None, max_versions=None, default_max_versions=10,
                 expires_in=None, rotation_policy_id=None, cas=None)
    (plain,) = secret.collect_events()
    assert isinstance(plain, Secret.VersionWritten) and not plain.is_rotation  # no notice yet: an ordinary write
    secret.advance_rotation(MANUAL, at=T0 + timedelta(days=10))
    (due,) = secret.collect_events()
    assert isinstance(due, Secret.RotationDue) and due.due_now and due.covers == ["2d"]
    at = T0 + timedelta(days=10, hours=3)
    secret.write(version=3, ciphertext=b"v3", data_key_id="dk_3", at=at, actor="user:a@x", request_id="req_1",
                 secret_type=None, metadata=None, max_versions=None, default_max_versions=10, expires_in=None,
                 rotation_policy_id=None, cas=None)
    written, rotated = secret.collect_events()
    assert isinstance(written, Secret.VersionWritten) and written.is_rotation
    assert isinstance(rotated, Secret.Rotated) and (rotated.old_version, rotated.new_version) == (2, 3)
    assert not rotated.auto_generated and rotated.grace_period_ends == at + timedelta(days=1)
    assert secret.version_entry(2)["readable_until"] == at + timedelta(days=1)
    assert "readable_until" not in secret.version_entry(1)  # superseded by a plain write: no grace limit
    assert secret.rotation_cycle_start == at and not secret.rotation_pending
    published = public_events(rotated, Subject("tnt_a", "ptn_a", "app/db", version=3))
    assert [p.event_type for p in published] == ["secret.rotated", "rotation.completed"]
    assert published[0].data == {
        "old_version": 2, "new_version": 3, "rotation_policy_id": "rot_p", "rotation_policy_name": "p",
        "grace_period_ends": "2026-01-12T03:00:00.000000Z", "auto_generated": False,
    }


def test_a_failed_auto_rotation_is_reported_once_and_then_waits_for_the_owner() -> None:
    auto = terms_of("rot_p", {**BASE, "name": "p", "interval": "10d", "warn_before": [], "grace_period": "1d",
                              "auto_generate": True})
    secret = secret_at(T0)
    at = T0 + timedelta(days=10)
    assert secret.advance_rotation(auto, at=at)
    secret.rotation_failed(auto, error_code="secret_policy_not_found", error_message="missing", at=at,
                           actor="system:rotation-scheduler", request_id=None)
    (failed,) = secret.collect_events()
    (published,) = public_events(failed, Subject("tnt_a", "ptn_a", "app/db"))
    assert published.event_type == "rotation.failed" and published.identity_id == "system:rotation-scheduler"
    assert published.data["error"] == {"code": "secret_policy_not_found", "message": "missing"}
    assert not secret.advance_rotation(auto, at=at + timedelta(hours=1))  # not retried, not reported again
    assert not secret.collect_events()
    secret.advance_rotation(auto, at=at + timedelta(days=1))
    (overdue,) = secret.collect_events()
    assert isinstance(overdue, Secret.RotationOverdue)
    assert [p.event_type for p in public_events(overdue, Subject("tnt_a", "ptn_a", "app/db"))] == ["rotation.overdue"]


def test_attaching_detaching_and_policies_of_other_ids() -> None:
    secret = secret_at(T0, policy_id=None)
    assert secret.rotation_cycle_start is None and not secret.advance_rotation(MANUAL, at=T0 + timedelta(days=99))
    assert secret.attach_rotation_policy("rot_p", at=T0 + timedelta(days=1), actor="user:a@x", request_id=None)
    assert not secret.attach_rotation_policy("rot_p", at=T0 + timedelta(days=2), actor="user:a@x", request_id=None)
    (attached,) = secret.collect_events()
    assert isinstance(attached, Secret.MetadataUpdated) and attached.rotation_policy_id == "rot_p"
    assert secret.rotation_cycle_start == T0 + timedelta(days=1)
    other = terms_of("rot_other", {**BASE, "name": "o", "interval": "1d", "warn_before": []})
    assert not secret.advance_rotation(other, at=T0 + timedelta(days=99)) and not secret.collect_events()
    with pytest.raises(InvalidRequest):
        secret.request_rotation(other, at=T0, actor="user:a@x", request_id=None)
    assert secret.attach_rotation_policy(None, at=T0 + timedelta(days=3), actor="user:a@x", request_id=None)
    assert secret.rotation_cycle_start is None and secret.rotation_policy_id is None


def test_expiry_events_translate_to_the_spec_shapes() -> None:
    secret = secret_at(T0, policy_id=None, expires_in=timedelta(days=8))
    secret.advance_expiry(at=T0 + timedelta(days=1))
    (warned,) = secret.collect_events()
    (expiring,) = public_events(warned, Subject("tnt_a", "ptn_a", "app/db"))
    assert (expiring.event_type, expiring.data) == (
        "secret.expiring", {"expires_at": "2026-01-09T00:00:00.000000Z", "days_remaining": 7, "threshold": "7d"})
    secret.advance_expiry(at=T0 + timedelta(days=9))
    (expired,) = secret.collect_events()
    (published,) = public_events(expired, Subject("tnt_a", "ptn_a", "app/db"))
    assert (published.event_type, published.data) == ("secret.expired", {"expires_at": "2026-01-09T00:00:00.000000Z"})
    secret.advance_expiry(at=T0 + timedelta(days=10))
    assert not secret.collect_events()
