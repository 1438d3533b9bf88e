"""The identity events keep the topics and fields they were stored with (docs/events.md): the aggregates share code
through mixins and event factories, and a move onto a shared base class would rename the events already stored.
User events stored before they carried an ``authority`` read as the top authority's (LEGACY_AUTHORITY)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import get_topic

from projections.identity.projector import IDENTITY_EVENTS
from scaivault.domain.identities import (
    LEGACY_AUTHORITY,
    SCAIKEY,
    SCAIVAULT,
    Group,
    MirroredTenant,
    User,
    group_stream_id,
    user_stream_id,
)
from scaivault.eventstore.mapper import OrjsonTranscoder, create_mapper

AT = datetime(2026, 1, 1, tzinfo=UTC)
MODULE = "scaivault.domain.identities:"
STORED_TOPICS = {
    MODULE + name
    for name in (
        "MirroredPartner.Mirrored", "MirroredPartner.Changed", "MirroredPartner.Synced",
        "MirroredTenant.Mirrored", "MirroredTenant.Changed", "MirroredTenant.Synced",
        "User.Created", "User.ProfileChanged", "User.Reinstated", "User.RolesChanged", "User.Removed",
        "Group.Created", "Group.ProfileChanged", "Group.Reinstated", "Group.MemberAdded", "Group.MemberRemoved",
        "Group.Removed",
        "IdentitySync.Started", "IdentitySync.Completed", "IdentitySync.Failed",
    )
}


def test_every_identity_event_keeps_its_stored_topic() -> None:
    assert {get_topic(cls) for cls in IDENTITY_EVENTS} == STORED_TOPICS


def _stored(stream: UUID, version: int, name: str, **state: Any) -> StoredEvent:
    """An event as an earlier release wrote it: its topic and state spelled out, not made by today's classes."""
    return StoredEvent(
        originator_id=stream, originator_version=version, topic=MODULE + name,
        state=OrjsonTranscoder().encode({"timestamp": AT, **state}),
    )


def _decoded(stored: StoredEvent) -> Any:
    """The event (or snapshot) as today's classes read it."""
    return create_mapper().to_domain_event(stored)


def _replay(log: list[StoredEvent]) -> Any:
    aggregate = None
    for stored in log:
        aggregate = _decoded(stored).mutate(aggregate)
    return aggregate


def test_a_stored_user_history_replays_and_reinstating_writes_the_same_fields() -> None:
    stream = user_stream_id("tnt_a", "usr_1")
    stamp = {"source": SCAIKEY, "at": AT, "actor": "system:scaikey-sync", "request_id": None}
    profile = {"email": "a@x.example", "display_name": "A", "status": "ACTIVE", "mfa_enabled": False}
    user = _replay([
        _stored(stream, 1, "User.Created", originator_topic=MODULE + "User", tenant_id="tnt_a", user_id="usr_1",
                profile=profile, **stamp),
        _stored(stream, 2, "User.ProfileChanged", profile=profile | {"status": "SUSPENDED"}, **stamp),
        _stored(stream, 3, "User.RolesChanged", roles=["tenant_admin"], **stamp),
        _stored(stream, 4, "User.Removed", **stamp),
    ])
    assert isinstance(user, User) and user.removed and user.roles == [] and user.version == 4
    assert user.profile["status"] == "SUSPENDED"
    assert user.authority == LEGACY_AUTHORITY
    assert not user.remove(**stamp, authority=1)
    assert user.update(profile=profile, **stamp | {"source": SCAIVAULT}, authority=1)
    (reinstated,) = user.collect_events()
    assert get_topic(type(reinstated)) == MODULE + "User.Reinstated"
    assert {key: value for key, value in vars(reinstated).items() if key != "timestamp"} == {
        "originator_id": stream, "originator_version": 5, "tenant_id": "tnt_a", "user_id": "usr_1",
        "profile": profile, **stamp, "source": SCAIVAULT, "authority": 1,
    }
    assert b'"class_version":2' in create_mapper().to_stored_event(reinstated).state


@pytest.mark.parametrize(("name", "fields"), [
    ("User.ProfileChanged", {"profile": {"email": "a@x.example"}}), ("User.RolesChanged", {"roles": []}),
    ("User.Removed", {}),
])
def test_a_stored_user_event_without_authority_reads_as_the_top_authoritys(name: str, fields: dict[str, Any]) -> None:
    stream = user_stream_id("tnt_a", "usr_1")
    stored = _stored(stream, 2, name, source=SCAIVAULT, at=AT, actor="user:a@x.example", request_id=None, **fields)
    assert _decoded(stored).authority == LEGACY_AUTHORITY


def test_a_user_snapshot_without_authority_reads_as_the_top_authoritys() -> None:
    user = User(tenant_id="tnt_a", user_id="usr_1", profile={"email": "a@x.example", "status": "ACTIVE"},
                source=SCAIVAULT, at=AT, actor="user:a@x.example", request_id=None, authority=1)
    user.collect_events()
    state = dict(Snapshot.take(user).state)
    assert state.pop("class_version") == 2 and state.pop("authority") == 1
    old = Snapshot(originator_id=user.id, originator_version=user.version, timestamp=AT, topic=MODULE + "User",
                   state=state)
    restored = _decoded(create_mapper().to_stored_event(old)).mutate(None)
    assert restored.authority == LEGACY_AUTHORITY and restored.user_id == "usr_1"


def test_a_stored_group_history_replays_and_its_commands_write_the_stored_topics() -> None:
    stream = group_stream_id("tnt_a", "grp_1")
    stamp = {"source": SCAIVAULT, "at": AT, "actor": "user:admin@x.example", "request_id": "req_1"}
    profile = {"name": "ops", "description": None, "status": "ACTIVE"}
    group = _replay([
        _stored(stream, 1, "Group.Created", originator_topic=MODULE + "Group", tenant_id="tnt_a", group_id="grp_1",
                profile=profile, **stamp),
        _stored(stream, 2, "Group.MemberAdded", user_id="usr_1", membership_type="DIRECT", **stamp),
        _stored(stream, 3, "Group.Removed", **stamp),
        _stored(stream, 4, "Group.Reinstated", tenant_id="tnt_a", group_id="grp_1", profile=profile, **stamp),
    ])
    assert isinstance(group, Group) and not group.removed and group.members == {} and group.version == 4
    assert not group.update(profile=profile, **stamp)
    assert group.update(profile=profile | {"name": "sre"}, **stamp) and group.remove(**stamp)
    changed, removed = group.collect_events()
    assert [get_topic(type(e)) for e in (changed, removed)] == [
        MODULE + "Group.ProfileChanged", MODULE + "Group.Removed"
    ]
    assert changed.profile == profile | {"name": "sre"}  # type: ignore[attr-defined]


def test_a_mirrored_tenant_changes_only_when_scaikey_reports_another_profile() -> None:
    tenant = MirroredTenant(tenant_id="tnt_a", partner_id="ptn_a", profile={"name": "A"}, at=AT, actor="sync")
    assert not tenant.update(profile={"name": "A"}, at=AT, actor="sync")
    assert tenant.update(profile={"name": "B"}, at=AT, actor="sync")
    created, changed = tenant.collect_events()
    assert get_topic(type(changed)) == MODULE + "MirroredTenant.Changed"
    assert _replay([create_mapper().to_stored_event(e) for e in (created, changed)]).profile == {"name": "B"}
