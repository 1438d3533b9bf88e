"""Identity commands on the real database: uniqueness under concurrency, hooks after commit, the queries that
authorization uses (role_records, groups_of), the reach of the actors, and the mirrored-roles cache."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from commands.actor import Actor
from commands.identities import IdentityCommands, name_lock
from commands.unit_of_work import UnitOfWorkRunner
from projections.identity import queries
from projections.identity.lookup import PostgresIdentityLookup
from projections.identity.projector import project_identity_event
from projections.identity.roles import MirroredRoles
from scaivault.auth.principal import Principal
from scaivault.domain.errors import AccessDenied, IdentityExists, IdentityNotFound
from scaivault.domain.identities import (
    TOP_AUTHORITY,
    ReportedState,
    ReportedUser,
    RoleRecord,
    profile_of_user,
)
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from tests.helpers import eventually

TENANT, OTHER = "tnt_a", "tnt_b"
OPERATOR = Actor(identity_id="system:cli", request_id=None)
ROOT = frozenset({"super_admin"})


def profile(email: str, status: str = "ACTIVE") -> dict[str, Any]:
    return profile_of_user({"email": email, "status": status})


@pytest.fixture
def hooks() -> dict[str, list[str]]:
    return {"authorization": [], "roles": []}


@pytest.fixture
def commands(pool: Any, hooks: dict[str, list[str]]) -> IdentityCommands:
    runner = UnitOfWorkRunner(pool, Repository(PostgresEventStore(), create_mapper()), [project_identity_event])

    async def in_transaction(conn: Any, tenant_id: str) -> None:
        assert conn.is_in_transaction()
        hooks.setdefault("in_transaction", []).append(tenant_id)

    return IdentityCommands(
        runner, PostgresIdentityLookup(), on_authorization_changed=hooks["authorization"].append,
        on_roles_changed=hooks["roles"].append, authorization_changed_in_transaction=in_transaction,
    )


async def test_a_creation_waits_for_a_concurrent_one_of_the_same_address(commands: IdentityCommands, pool: Any) -> None:
    """Another creator of dup@a.example holds the name lock; ours must wait for it, then see its user and refuse."""
    async with pool.acquire() as rival:
        transaction = rival.transaction()
        await transaction.start()
        await rival.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name_lock("user", TENANT, "dup@a.example")
        )
        ours = asyncio.create_task(commands.create_user(TENANT, profile("DUP@a.example"), OPERATOR, actor_roles=ROOT))

        async def ours_waits() -> bool:
            assert not ours.done(), "the creation did not wait for the name lock"
            # This database's only: other runs and xdist workers take advisory locks of their own on the server.
            waiting = """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
            return bool(await pool.fetchval(waiting))

        await eventually(ours_waits)
        await rival.execute(
            """INSERT INTO scaivault_identity_users (tenant_id, user_id, stream_id, email, principal_ref, display_name,
                   status, mfa_enabled, source, created_at, updated_at)
               VALUES ($1, 'usr_rival', gen_random_uuid(), 'dup@a.example', 'user:dup@a.example', 'Rival', 'ACTIVE',
                   false, 'scaivault', now(), now())""",
            TENANT,
        )
        await transaction.commit()
    with pytest.raises(IdentityExists):
        await ours
    # The same address in another tenant is another user.
    await commands.create_user(OTHER, profile("dup@a.example"), OPERATOR, actor_roles=ROOT)


async def test_hooks_run_after_commit_for_the_tenant_that_changed(
    commands: IdentityCommands, hooks: dict[str, list[str]]
) -> None:
    """Every change that can alter an authorization decision raises the tenant's generation in its transaction and
    clears this process's caches after the commit: creations, memberships, removals, and profile changes (status,
    name) reported by ScaiKey."""
    user = await commands.create_user(TENANT, profile("u@a.example"), OPERATOR, actor_roles=ROOT)
    assert hooks["authorization"] == [TENANT]
    group = await commands.create_group(TENANT, {"name": "g", "description": None, "status": "ACTIVE"}, OPERATOR)
    assert hooks["authorization"] == [TENANT] * 2
    await commands.change_membership(TENANT, group, user, OPERATOR, adding=True, actor_roles=ROOT)
    assert hooks["authorization"] == [TENANT] * 3
    await commands.change_membership(TENANT, group, user, OPERATOR, adding=True, actor_roles=ROOT)  # no change, no call
    assert hooks["authorization"] == [TENANT] * 3
    with pytest.raises(IdentityNotFound):  # a failed command calls nothing
        await commands.change_membership(OTHER, group, user, OPERATOR, adding=False, actor_roles=ROOT)
    assert hooks["authorization"] == [TENANT] * 3

    reported = ReportedState(
        users={"usr_s": ReportedUser(profile("s@a.example"))}, groups={"grp_s": _group("s")}
    )
    await commands.apply_report(TENANT, reported, OPERATOR, complete=False)  # created by ScaiKey
    assert hooks["authorization"] == [TENANT] * 4
    await commands.apply_report(TENANT, reported, OPERATOR, complete=False)  # nothing changed
    assert hooks["authorization"] == [TENANT] * 4
    suspended = ReportedState(users={"usr_s": ReportedUser(profile("s@a.example", "SUSPENDED"))})
    await commands.apply_report(TENANT, suspended, OPERATOR, complete=False)
    assert hooks["authorization"] == [TENANT] * 5
    await commands.apply_report(TENANT, ReportedState(groups={"grp_s": _group("renamed")}), OPERATOR, complete=False)
    assert hooks["authorization"] == [TENANT] * 6

    await commands.remove_user(TENANT, user, OPERATOR, actor_roles=ROOT)  # its memberships go with it
    assert hooks["authorization"] == [TENANT] * 7
    assert hooks["roles"] == hooks["in_transaction"] == hooks["authorization"]


def _group(name: str) -> dict[str, Any]:
    return {"name": name, "description": None, "status": "ACTIVE"}


async def test_a_rejected_role_change_changes_nothing(commands: IdentityCommands, pool: Any) -> None:
    user = await commands.create_user(TENANT, profile("u@a.example"), OPERATOR, actor_roles=ROOT)
    await commands.set_roles(TENANT, user, ["partner_admin"], OPERATOR, changer_roles=ROOT)
    self_actor = Actor(identity_id="user:U@a.example", request_id=None)
    with pytest.raises(AccessDenied):
        await commands.set_roles(TENANT, user, ["partner_admin", "tenant_admin"], self_actor,
                                 changer_roles=frozenset({"partner_admin"}))
    assert await queries.role_records(pool, TENANT, user) == [
        RoleRecord(frozenset({"partner_admin"}), True, TOP_AUTHORITY)
    ]


async def test_roles_and_groups_count_only_for_active_users_in_active_groups(
    commands: IdentityCommands, pool: Any
) -> None:
    active = await commands.create_user(TENANT, profile("a@a.example"), OPERATOR, actor_roles=ROOT)
    suspended = await commands.create_user(TENANT, profile("s@a.example", "SUSPENDED"), OPERATOR, actor_roles=ROOT)
    group = await commands.create_group(TENANT, {"name": "g", "description": None, "status": "ACTIVE"}, OPERATOR)
    frozen = await commands.create_group(TENANT, {"name": "f", "description": None, "status": "DISABLED"}, OPERATOR)
    for user in (active, suspended):
        await commands.set_roles(TENANT, user, ["tenant_admin"], OPERATOR, changer_roles=ROOT)
        for g in (group, frozen):
            await commands.change_membership(TENANT, g, user, OPERATOR, adding=True, actor_roles=ROOT)
    assert await queries.role_records(pool, TENANT, "user:A@a.example") == [
        RoleRecord(frozenset({"tenant_admin"}), True, TOP_AUTHORITY)
    ]
    assert await queries.role_records(pool, TENANT, suspended) == [
        RoleRecord(frozenset({"tenant_admin"}), False, TOP_AUTHORITY)
    ]
    assert await queries.role_records(pool, TENANT, "user:nobody@a.example") == []
    assert await queries.role_records(pool, TENANT, "sa:ci") == []  # service accounts are not mirrored
    assert await queries.role_records(pool, OTHER, active) == []
    assert await queries.groups_of(pool, TENANT, active) == sorted([group, "group:g"])
    assert await queries.groups_of(pool, TENANT, suspended) == []


def principal(identity: str, roles: frozenset[str], tenant: str | None = TENANT) -> Principal:
    return Principal(
        identity_id=identity, identity_type="user", display_name=None, tenant_id=tenant, partner_id="ptn_a",
        scopes=frozenset(), roles=roles, groups=(), mfa_verified_at=None, expires_at=None, issued_at=None,
        token_kind="jwt", token_id="tok_x",
    )


async def test_mirrored_roles_replace_token_roles_and_the_cache_is_forgotten_on_change(
    commands: IdentityCommands, pool: Any
) -> None:
    now = [0.0]
    roles = MirroredRoles(pool, clock=lambda: now[0])
    commands.on_roles_changed = roles.forget
    token_says = principal("user:u@a.example", frozenset({"partner_admin"}))
    assert (await roles.effective(token_says)).roles == {"partner_admin"}  # unknown to the mirror: the token's
    user = await commands.create_user(TENANT, profile("u@a.example"), OPERATOR, actor_roles=ROOT)
    assert (await roles.effective(token_says)).roles == frozenset()  # the command made this process forget
    await pool.execute("UPDATE scaivault_identity_users SET roles = '{tenant_admin}'")  # as another server would
    assert (await roles.effective(token_says)).roles == frozenset()  # cached ...
    now[0] += timedelta(seconds=2.5).total_seconds()
    assert (await roles.effective(token_says)).roles == {"tenant_admin"}  # ... for at most max_age
    partner_level = replace(token_says, tenant_id=None)
    assert (await roles.effective(partner_level)) is partner_level
    assert user.startswith("usr_")
