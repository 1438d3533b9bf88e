"""A state machine of write / delete / restore / destroy / destroy-version / time passing, checked against a
deliberately simple model; and every state is the same when rebuilt from the events (replay consistency)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from scaivault.domain.errors import (
    InvalidRequest,
    ScaiVaultError,
    SecretExists,
    SecretNotFound,
    VersionConflict,
    VersionNotFound,
)
from scaivault.domain.secrets import Secret

RETENTION = timedelta(days=30)
START = datetime(2026, 1, 1, tzinfo=UTC)


class Model:
    """What a user should observe, written for clarity."""

    def __init__(self) -> None:
        self.last = 0
        self.versions: dict[int, bool] = {}  # version -> destroyed
        self.max_versions = 3
        self.deleted_until: datetime | None = None
        self.exists = False

    def expire(self, now: datetime) -> None:
        if self.deleted_until is not None and now >= self.deleted_until:
            self.exists, self.versions, self.deleted_until = False, {}, None

    def current(self) -> int:
        return max(self.versions) if self.exists and self.versions else 0


class SecretMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
        self.model = Model()
        self.now = START
        self.events = list(self.secret.collect_events())

    def _call(self, expected: type[ScaiVaultError] | None, action) -> None:  # type: ignore[no-untyped-def]
        if expected is None:
            action()
        else:
            with pytest.raises(expected):
                action()
        self.events.extend(self.secret.collect_events())

    @rule(cas=st.one_of(st.none(), st.integers(min_value=0, max_value=8)))
    def write(self, cas: int | None) -> None:
        m = self.model
        m.expire(self.now)
        if m.deleted_until is not None:
            expected: type[ScaiVaultError] | None = SecretExists
        elif cas is not None and cas != m.current():
            expected = VersionConflict
        else:
            expected = None
        version = self.secret.next_version

        def act() -> None:
            self.secret.write(
                version=version, ciphertext=b"c%d" % version, data_key_id=f"dk_{version}", at=self.now,
                actor="user:a", request_id=None, secret_type=None, metadata=None, max_versions=None,
                default_max_versions=m.max_versions, expires_in=None, rotation_policy_id=None, cas=cas,
            )

        self._call(expected, act)
        if expected is None:
            m.exists, m.last = True, version
            m.versions[version] = False
            while len(m.versions) > m.max_versions:
                del m.versions[min(m.versions)]

    @rule()
    def delete(self) -> None:
        m = self.model
        m.expire(self.now)
        expected = None if m.exists and m.deleted_until is None else SecretNotFound
        self._call(
            expected, lambda: self.secret.delete(at=self.now, retention=RETENTION, actor="user:a", request_id=None)
        )
        if expected is None:
            m.deleted_until = self.now + RETENTION

    @rule()
    def restore(self) -> None:
        m = self.model
        m.expire(self.now)
        expected = SecretNotFound if not m.exists else (InvalidRequest if m.deleted_until is None else None)
        self._call(expected, lambda: self.secret.restore(at=self.now, actor="user:a", request_id=None))
        if expected is None:
            m.deleted_until = None

    @rule()
    def destroy(self) -> None:
        m = self.model
        m.expire(self.now)
        expected = None if m.exists else SecretNotFound
        self._call(expected, lambda: self.secret.destroy(at=self.now, actor="user:a", request_id=None))
        if expected is None:
            m.exists, m.versions, m.deleted_until = False, {}, None

    @rule(version=st.integers(min_value=1, max_value=12))
    def destroy_version(self, version: int) -> None:
        m = self.model
        m.expire(self.now)
        if not m.exists:
            expected: type[ScaiVaultError] | None = SecretNotFound
        elif m.versions.get(version, True):
            expected = VersionNotFound
        else:
            expected = None
        self._call(expected, lambda: self.secret.destroy_version(version, at=self.now, actor="user:a", request_id=None))
        if expected is None:
            m.versions[version] = True

    @rule(days=st.sampled_from([1, 29, 31]))
    def time_passes(self, days: int) -> None:
        self.now += timedelta(days=days)

    @invariant()
    def matches_the_model(self) -> None:
        m = self.model
        # The aggregate purges lazily (on its next command), so compare once both sides see the same moment.
        assert self.secret.last_version >= m.last
        if m.deleted_until is None or self.now < m.deleted_until:
            assert self.secret.live == m.exists
            assert self.secret.current_version == m.current()
            assert {e["version"]: e["destroyed"] for e in self.secret.versions} == m.versions
            assert self.secret.is_deleted == (m.deleted_until is not None)

    @invariant()
    def version_numbers_never_repeat(self) -> None:
        written = [e.version for e in self.events if isinstance(e, Secret.VersionWritten)]
        assert written == sorted(set(written))

    @invariant()
    def replaying_the_events_gives_the_same_state(self) -> None:
        rebuilt = None
        for domain_event in self.events:
            rebuilt = domain_event.mutate(rebuilt)
        assert rebuilt is not None
        assert vars(rebuilt) == vars(self.secret) | {"_pending_events": []}

    @invariant()
    def destroyed_keys_are_exactly_those_of_gone_versions(self) -> None:
        shredded = {
            k for e in self.events if isinstance(e, (Secret.VersionsDestroyed, Secret.Purged)) for k in e.data_key_ids
        }
        retained_live = {e["data_key_id"] for e in self.secret.versions if not e["destroyed"]}
        written = {e.data_key_id for e in self.events if isinstance(e, Secret.VersionWritten)}
        assert shredded | retained_live == written
        assert not shredded & retained_live


SecretMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
test_secret_lifecycle = SecretMachine.TestCase


def test_a_copy_is_independent_of_its_original() -> None:
    """Repositories hand out copies of cached aggregates; a command failing half-way must not touch the cache."""
    import copy

    secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
    for version in (1, 2):
        secret.write(
            version=version, ciphertext=b"c", data_key_id=f"dk_{version}", at=START, actor="user:a", request_id=None,
            secret_type=None, metadata={"tags": ["a"]}, max_versions=None, default_max_versions=10, expires_in=None,
            rotation_policy_id=None, cas=None,
        )
    secret.collect_events()
    clone = copy.deepcopy(secret)
    clone.destroy_version(1, at=START, actor="user:a", request_id=None)
    clone.update_metadata(at=START, actor="user:a", request_id=None, metadata_patch={"tags": None, "x": "1"},
                          secret_type="json", max_versions=None, expires_in=None, clear_expiry=False,
                          rotation_policy_id=None, secret_policy_id=None)
    assert [e["destroyed"] for e in secret.versions] == [False, False]
    assert secret.metadata == {"tags": ["a"]} and secret.secret_type == "kv"
    assert secret.pending_events == [] and len(clone.pending_events) == 2
    assert clone.version == secret.version + 2


def _written(versions: int, cap: int) -> Secret:
    secret = Secret(owner="tnt_a", path="app/db", partner_id="ptn_a", tenant_id="tnt_a")
    for n in range(1, versions + 1):
        secret.write(
            version=n, ciphertext=b"x", data_key_id=f"dk_{n}", at=START, actor="user:a", request_id=None,
            secret_type=None, metadata=None, max_versions=cap, default_max_versions=cap, expires_in=None,
            rotation_policy_id=None, cas=None,
        )
    secret.collect_events()
    return secret


def _destroyed_by(secret: Secret, *, writing: bool, max_versions: int | None) -> int:
    before = {entry["version"] for entry in secret.versions}
    if writing:
        secret.write(
            version=secret.next_version, ciphertext=b"x", data_key_id="dk_new", at=START, actor="user:a",
            request_id=None, secret_type=None, metadata=None, max_versions=max_versions, default_max_versions=3,
            expires_in=None, rotation_policy_id=None, cas=None,
        )
    else:
        secret.update_metadata(
            at=START, actor="user:a", request_id=None, metadata_patch=None, secret_type=None,
            max_versions=max_versions, expires_in=None, clear_expiry=False, rotation_policy_id=None,
            secret_policy_id=None,
        )
    return len(before - {entry["version"] for entry in secret.versions})


@settings(max_examples=200, deadline=None)
@given(versions=st.integers(1, 8), cap=st.integers(1, 8), new_cap=st.integers(1, 8), writing=st.booleans())
def test_versions_lost_to_a_new_cap_are_exactly_those_the_cap_in_force_would_keep(
    versions: int, cap: int, new_cap: int, writing: bool
) -> None:
    """What lowering ``max_versions`` destroys beyond what the cap in force destroys anyway (a write at the cap
    pushes the oldest out whatever the request says): the part that needs the delete permission."""
    expected = _destroyed_by(_written(versions, cap), writing=writing, max_versions=new_cap) - _destroyed_by(
        _written(versions, cap), writing=writing, max_versions=None
    )
    assert _written(versions, cap).versions_lost_to_cap(new_cap, writing=writing) == expected


def test_a_metadata_update_keeps_its_policy_links_unless_told_to_clear_them() -> None:
    secret = _written(1, 3)

    def update(rotation_policy_id: str | None = None, secret_policy_id: str | None = None, *,
               clear_rotation_policy: bool = False, clear_secret_policy: bool = False) -> None:
        secret.update_metadata(
            at=START, actor="user:a", request_id=None, metadata_patch=None, secret_type=None, max_versions=None,
            expires_in=None, clear_expiry=False, rotation_policy_id=rotation_policy_id,
            secret_policy_id=secret_policy_id, clear_rotation_policy=clear_rotation_policy,
            clear_secret_policy=clear_secret_policy,
        )

    update(rotation_policy_id="rot_q", secret_policy_id="sp_1")
    update()
    assert (secret.rotation_policy_id, secret.secret_policy_id) == ("rot_q", "sp_1")
    update(clear_secret_policy=True)
    assert (secret.rotation_policy_id, secret.secret_policy_id) == ("rot_q", None)
    update(clear_rotation_policy=True)
    assert (secret.rotation_policy_id, secret.secret_policy_id) == (None, None)
    with pytest.raises(ValueError):
        update(rotation_policy_id="rot_q", clear_rotation_policy=True)
