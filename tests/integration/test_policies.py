"""Policy commands on the real database: events, the read model, rebuilds, and the cached evaluator's coherence
within one process and across processes (two Authorizers on one database)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from commands.actor import Actor
from commands.policies import PolicyAccess, PolicyChanges, PolicyOwner
from projections.identity.queries import policy_groups
from projections.identity.roles import MirroredRoles
from projections.maintenance.rebuild import Rebuilder
from projections.policies import queries
from scaivault.auth.authorization import Authorizer, read_generations
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container, read_models
from scaivault.config import Settings
from scaivault.domain.errors import (
    AccessDenied,
    BindingNotFound,
    PolicyInUse,
    PolicyNotFound,
)
from scaivault.domain.identities import ReportedState, ReportedUser, profile_of_user
from scaivault.domain.policies import RequestContext
from scaivault.tasks import cancel_and_wait
from tests.helpers import eventually

TENANT, PARTNER, OTHER = "tnt_a", "ptn_a", "tnt_b"
ACTOR = Actor(identity_id="user:admin@x.example", request_id=None)
MINE = PolicyAccess(visible=frozenset({TENANT, PARTNER}), manageable=frozenset({TENANT}))
READ_APP = [{"path_pattern": "app/**", "permissions": ["read"]}]


def principal(identity: str = "sa:svc", groups: tuple[str, ...] = ()) -> Principal:
    return Principal(identity_id=identity, identity_type="service_account", display_name=None, tenant_id=TENANT,
                     partner_id=PARTNER, scopes=frozenset({"secrets:read"}), roles=frozenset(), groups=groups,
                     mfa_verified_at=None, expires_at=None, issued_at=None, token_kind="jwt", token_id="tok_x")


def now_context() -> RequestContext:
    return RequestContext(at=datetime.now(UTC), source_ip=None, mfa_verified_at=None)


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, OTHER)
    try:
        yield container
    finally:
        await container.close()


async def allowed(authorizer: Authorizer, path: str = "app/db", identity: str = "sa:svc") -> bool:
    decision = await authorizer.decide(principal(identity), TENANT, PARTNER, path, "read", now_context())
    return decision.allowed


async def create(container: Container, rules: list[dict[str, Any]] = READ_APP, owner: str = TENANT) -> str:
    scope = "tenant" if owner.startswith("tnt_") else "partner"
    policy = await container.policy_commands.create(
        PolicyOwner(scope, owner, owner if scope == "tenant" else None, PARTNER), name="p", description=None,
        rules=rules, is_active=True, actor=ACTOR,
    )
    return policy.policy_id


async def test_every_change_is_an_event_and_the_read_model_follows(container: Container) -> None:
    commands = container.policy_commands
    policy_id = await create(container)
    binding = await commands.bind(policy_id, identity_type="service_account", identity_id="sa:svc", expires_at=None,
                                  who=MINE, actor=ACTOR)
    await commands.change(policy_id, PolicyChanges(name="renamed"), MINE, ACTOR)
    at = datetime.now(UTC)
    row = await queries.policy_row(container.pool, [TENANT, PARTNER], policy_id, at=at)
    assert row is not None
    assert (row["name"], row["rule_count"], row["binding_count"], row["rules"]) == ("renamed", 1, 1, READ_APP)
    with pytest.raises(PolicyInUse):
        await commands.delete(policy_id, force=False, who=MINE, actor=ACTOR)
    await commands.unbind(policy_id, binding["binding_id"], who=MINE, actor=ACTOR)
    with pytest.raises(BindingNotFound):
        await commands.unbind(policy_id, binding["binding_id"], who=MINE, actor=ACTOR)
    await commands.delete(policy_id, force=False, who=MINE, actor=ACTOR)
    assert await queries.policy_row(container.pool, [TENANT, PARTNER], policy_id, at=at) is None
    with pytest.raises(PolicyNotFound):
        await commands.change(policy_id, PolicyChanges(name="again"), MINE, ACTOR)
    topics = [r["topic"] for r in await container.pool.fetch(
        "SELECT topic FROM scaivault_events WHERE topic LIKE 'scaivault.domain.policies:%' ORDER BY notification_id")]
    assert [t.rsplit(".", 1)[1] for t in topics] == [
        "Created", "BindingCreated", "Updated", "BindingDeleted", "Deleted"
    ]
    assert (await read_generations(container.pool, [TENANT]))[TENANT] == 5


async def test_policies_of_another_tenant_are_invisible_and_partner_policies_need_a_partner_admin(
    container: Container,
) -> None:
    theirs = await create(container, owner=OTHER)
    with pytest.raises(PolicyNotFound):
        await container.policy_commands.change(theirs, PolicyChanges(name="x"), MINE, ACTOR)
    partner_policy = await create(container, owner=PARTNER)
    with pytest.raises(AccessDenied):
        await container.policy_commands.change(partner_policy, PolicyChanges(name="x"), MINE, ACTOR)


async def test_a_revoked_binding_and_a_deleted_policy_take_effect_on_the_next_decision(container: Container) -> None:
    commands, authorizer = container.policy_commands, container.authorizer
    policy_id = await create(container)
    assert not await allowed(authorizer)
    binding = await commands.bind(policy_id, identity_type="service_account", identity_id="sa:svc", expires_at=None,
                                  who=MINE, actor=ACTOR)
    assert await allowed(authorizer)  # cached now
    await commands.unbind(policy_id, binding["binding_id"], who=MINE, actor=ACTOR)
    assert not await allowed(authorizer)
    await commands.bind(policy_id, identity_type="service_account", identity_id="sa:svc", expires_at=None,
                        who=MINE, actor=ACTOR)
    assert await allowed(authorizer)
    await commands.change(policy_id, PolicyChanges(rules=[{"path_pattern": "other/**", "permissions": ["read"]}]),
                          MINE, ACTOR)
    assert not await allowed(authorizer)
    assert await allowed(authorizer, "other/x")
    await commands.delete(policy_id, force=True, who=MINE, actor=ACTOR)
    assert not await allowed(authorizer, "other/x")


async def test_another_process_notices_a_change_at_its_next_sync(container: Container) -> None:
    """Two Authorizers on one database stand for two server processes; the second is told nothing directly."""
    other_process = Authorizer(container.pool)
    policy_id = await create(container)
    binding = await container.policy_commands.bind(
        policy_id, identity_type="service_account", identity_id="sa:svc", expires_at=None, who=MINE, actor=ACTOR
    )
    assert await allowed(other_process)
    await container.policy_commands.unbind(policy_id, binding["binding_id"], who=MINE, actor=ACTOR)
    assert await allowed(other_process)  # still its cached answer: nobody told it yet
    assert await other_process.sync() == 1
    assert not await allowed(other_process)


async def test_a_stalled_sync_makes_requests_check_for_changes_themselves(container: Container) -> None:
    clock = [0.0]
    other_process = Authorizer(container.pool, max_staleness=5.0, monotonic=lambda: clock[0])
    policy_id = await create(container)
    binding = await container.policy_commands.bind(
        policy_id, identity_type="service_account", identity_id="sa:svc", expires_at=None, who=MINE, actor=ACTOR
    )
    assert await allowed(other_process)
    await container.policy_commands.unbind(policy_id, binding["binding_id"], who=MINE, actor=ACTOR)
    clock[0] += 4.9
    assert await allowed(other_process)
    clock[0] += 0.2  # the last check is now older than 5 s: the request checks before deciding
    assert not await allowed(other_process)


async def test_an_expiring_binding_stops_counting_in_the_cache(container: Container) -> None:
    policy_id = await create(container)
    expires_at = datetime.now(UTC) + timedelta(hours=1)
    await container.policy_commands.bind(policy_id, identity_type="group", identity_id="group:dev",
                                         expires_at=expires_at, who=MINE, actor=ACTOR)
    member = principal(groups=("group:dev",))
    before = RequestContext(at=expires_at - timedelta(seconds=1), source_ip=None, mfa_verified_at=None)
    after = RequestContext(at=expires_at, source_ip=None, mfa_verified_at=None)
    authorizer = container.authorizer
    assert (await authorizer.decide(member, TENANT, PARTNER, "app/db", "read", before)).allowed
    assert not (await authorizer.decide(member, TENANT, PARTNER, "app/db", "read", after)).allowed


async def test_groups_come_from_the_token_and_the_identity_mirror(container: Container) -> None:
    mirror = {("tnt_a", "sa:svc"): ["group:mirrored"]}

    async def groups_of(conn: object, tenant_id: str | None, identity_id: str, claimed: Sequence[str]) -> list[str]:
        return sorted({*mirror.get((tenant_id, identity_id), []), *claimed})  # type: ignore[arg-type]

    clock = [0.0]
    authorizer = Authorizer(container.pool, groups_of=groups_of, monotonic=lambda: clock[0])
    policy_id = await create(container)
    await container.policy_commands.bind(policy_id, identity_type="group", identity_id="group:mirrored",
                                         expires_at=None, who=MINE, actor=ACTOR)
    assert await allowed(authorizer)
    mirror.clear()
    assert await allowed(authorizer)  # memberships are cached ...
    authorizer.invalidate(TENANT)  # ... until the identity side says they changed
    assert not await allowed(authorizer)
    mirror[("tnt_a", "sa:svc")] = ["group:mirrored"]
    authorizer.invalidate(TENANT)
    assert await allowed(authorizer)
    mirror.clear()
    clock[0] += 1.9
    assert await allowed(authorizer)
    clock[0] += 0.2  # ... or, should an invalidation be missed, for at most 2 s
    assert not await allowed(authorizer)


async def test_another_process_notices_an_identity_change_at_its_next_sync(container: Container) -> None:
    """A user ScaiKey suspends (a profile change: no membership changes) raises the tenant's generation, so another
    server drops what it cached of the user's groups and standing at its next sync, without waiting for them to
    expire."""
    clock = [0.0]
    other_process = Authorizer(container.pool, groups_of=policy_groups, standing=MirroredRoles(container.pool,
                               clock=lambda: clock[0]), monotonic=lambda: clock[0])
    policy_id = await create(container)
    await container.policy_commands.bind(policy_id, identity_type="group", identity_id="group:ops",
                                         expires_at=None, who=MINE, actor=ACTOR)
    ops = {"grp_ops": {"name": "ops", "description": None, "status": "ACTIVE"}}

    def zed(status: str) -> ReportedState:
        profile = profile_of_user({"email": "zed@x.example", "status": status})
        return ReportedState(users={"usr_zed": ReportedUser(profile, (), ("grp_ops",))}, groups=ops)

    await container.identity.commands.apply_report(TENANT, zed("ACTIVE"), ACTOR, complete=False)
    assert await allowed(other_process, identity="user:zed@x.example")
    await container.identity.commands.apply_report(TENANT, zed("SUSPENDED"), ACTOR, complete=False)
    assert await allowed(other_process, identity="user:zed@x.example")  # still its cached answer
    assert await other_process.sync() == 1
    assert not await allowed(other_process, identity="user:zed@x.example")


async def test_a_process_that_tracks_no_generation_of_the_tenant_drops_its_cache_when_notified(
    container: Container, pool: asyncpg.Pool
) -> None:
    """A process that holds a user's mirrored roles but never evaluated a policy in the tenant (its callers there
    were admins) has no generation of the tenant to compare: the change's NOTIFY, which names the tenant, makes it
    drop what it holds at once, not only when its 2 s have passed. With `serve --workers N`, the next request of the
    same client may well reach such a process."""
    frozen = [0.0]  # the other process's clock: its mirrored roles never age out in this test
    roles = MirroredRoles(container.pool, clock=lambda: frozen[0])
    other_process = Authorizer(container.pool, groups_of=policy_groups, standing=roles, monotonic=lambda: frozen[0])
    sync = asyncio.create_task(other_process.run_sync(container.database_url, poll_seconds=60))

    async def listening() -> bool:
        return bool(await pool.fetchval(
            """SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
               AND query LIKE 'LISTEN %scaivault_authorization%'"""
        ))

    def zed(status: str) -> ReportedState:
        profile = profile_of_user({"email": "zed@x.example", "status": status})
        return ReportedState(users={"usr_zed": ReportedUser(profile, ("tenant_admin",), ())}, groups={})

    try:
        await eventually(listening, message="the other process's sync never listened")
        await container.identity.commands.apply_report(TENANT, zed("ACTIVE"), ACTOR, complete=False)
        assert not await roles.suspended(TENANT, "user:zed@x.example")  # now cached, for ever on this clock
        await container.identity.commands.apply_report(TENANT, zed("SUSPENDED"), ACTOR, complete=False)
        await eventually(lambda: roles.suspended(TENANT, "user:zed@x.example"), timeout=5,
                         message="the other process kept a suspended user's standing")
    finally:
        await cancel_and_wait([sync])


async def test_the_policies_read_model_rebuilds_identically(container: Container) -> None:
    policy_id = await create(container)
    await create(container, owner=PARTNER)
    await container.policy_commands.bind(policy_id, identity_type="user", identity_id="user:a@x", expires_at=None,
                                         who=MINE, actor=ACTOR)
    model = next(m for m in read_models(container.keyring) if m.name == "policies")
    assert model.inline
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    assert (await rebuilder.verify(model))["identical"]
    await container.pool.execute("UPDATE scaivault_policies SET name = 'drifted'")
    assert not (await rebuilder.verify(model))["identical"]
    await rebuilder.rebuild(model)
    assert (await rebuilder.verify(model))["identical"]
