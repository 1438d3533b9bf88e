"""Sync from a ScaiKey-compatible directory: a real aiohttp server on loopback (tests/scaikey_standin.py) speaking
the JSON documented in scaivault/identity/scaikey.py, the real commands and the real database; and webhook deliveries
applied with their claim in one transaction."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from commands.actor import Actor
from commands.identities import IdentityCommands
from commands.tenancy import TenancyCommands
from commands.unit_of_work import UnitOfWorkRunner
from projections.identity import queries
from projections.identity.lookup import PostgresIdentityLookup
from projections.identity.projection import IdentityProjection
from projections.identity.projector import project_identity_event
from projections.maintenance.rebuild import ReadModel, Rebuilder
from projections.tenancy.directory import TenantDirectory
from projections.tenancy.projector import project_tenancy
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.root_keys import LocalRootKeyProvider
from scaivault.domain.identities import TOP_AUTHORITY, MirroredTenant, RoleRecord
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from scaivault.identity.scaikey import ScaiKeyClient, ScaiKeyUnavailable
from scaivault.identity.sync import IdentitySynchronizer, SyncScope
from scaivault.identity.webhooks import Delivery, WebhookReceiver
from tests.scaikey_standin import CLIENT_ID, CLIENT_SECRET, ScaiKeyStandIn

ACTOR = Actor(identity_id="user:ops@acme.example", request_id=None)
ROOT = frozenset({"super_admin"})


@dataclass
class World:
    pool: Any
    commands: IdentityCommands
    tenancy: TenancyCommands
    synchronizer: IdentitySynchronizer
    client: ScaiKeyClient
    changed_memberships: list[str]
    changed_roles: list[str]
    repository: Repository


@pytest.fixture
async def world(pool: Any, standin: tuple[ScaiKeyStandIn, str], tmp_path: Any) -> AsyncIterator[World]:
    repository = Repository(PostgresEventStore(), create_mapper())
    runner = UnitOfWorkRunner(pool, repository, [project_tenancy, project_identity_event])
    keyring = KeyRing(LocalRootKeyProvider(tmp_path))
    memberships: list[str] = []
    roles: list[str] = []
    commands = IdentityCommands(
        runner, PostgresIdentityLookup(), on_authorization_changed=memberships.append, on_roles_changed=roles.append
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        client = ScaiKeyClient(standin[1], session, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, page_size=1)
        tenancy = TenancyCommands(runner, keyring)
        synchronizer = IdentitySynchronizer(commands, tenancy, TenantDirectory(pool), client)
        yield World(pool, commands, tenancy, synchronizer, client, memberships, roles, repository)
        await synchronizer.close()


async def full_sync(world: World, scope: SyncScope | None = None) -> tuple[str, dict[str, Any]]:
    run = await world.synchronizer.start(scope or SyncScope(), ACTOR)
    await world.synchronizer.wait()
    row = await queries.sync_row(world.pool, run.sync_id)
    assert row is not None
    return run.sync_id, dict(row)


async def test_a_full_sync_mirrors_partners_tenants_users_groups_and_memberships(
    world: World, standin: tuple[ScaiKeyStandIn, str]
) -> None:
    sync_id, run = await full_sync(world)
    assert run["status"] == "completed", run
    stats = run["stats"]
    assert (stats["partners"], stats["tenants"], stats["users_created"], stats["groups_created"]) == (1, 2, 3, 3)
    assert stats["memberships_added"] == 4 and stats["skipped"] == 1
    assert stats["skipped_records"][0]["id"] == "usr_bad"

    # Tenants ScaiKey reports are registered in ScaiVault's tenancy too (keys and all).
    partner_of_dev = "SELECT partner_id FROM scaivault_tenants WHERE tenant_id = 'tnt_acme_dev'"
    assert await world.pool.fetchval(partner_of_dev) == "ptn_acme"
    alice = await queries.find_user(world.pool, "tnt_acme_prod", "user:alice@acme.example")
    assert alice is not None and alice["email"] == "alice@acme.example"  # one canonical (lower-case) form
    assert list(alice["roles"]) == ["tenant_admin"]  # roles ScaiVault does not know are not kept
    assert alice["last_synced_at"] is not None and alice["source"] == "scaikey"
    assert await queries.groups_of(world.pool, "tnt_acme_prod", "usr_bob") == [
        "group:developers", "group:sre", "grp_dev", "grp_sre"
    ]
    partners, _ = await queries.partner_rows(world.pool, queries.PageRequest(1, 10), only=None, status=None)
    assert [(p["id"], p["slug"], p["region"]) for p in partners] == [("ptn_acme", "acme", "eu-west-1")]
    # Pages of one (page_size=1): every list was read to its end, with one token.
    assert standin[0].tokens_issued == 1
    assert all(a == "Bearer standin-token-1" for a in standin[0].seen_authorization)
    assert set(world.changed_memberships) == {"tnt_acme_prod", "tnt_acme_dev"}
    history = await world.pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic LIKE 'scaivault.domain.identities:IdentitySync.%'"
    )
    assert history == 2  # Started and Completed: the history is events too
    assert sync_id.startswith("syn_")


async def test_a_second_sync_applies_only_what_changed_and_removes_what_scaikey_dropped(
    world: World, standin: tuple[ScaiKeyStandIn, str]
) -> None:
    await full_sync(world)
    events_before = await world.pool.fetchval("SELECT count(*) FROM scaivault_events")
    _, unchanged = await full_sync(world)
    created_or_changed = {k: v for k, v in unchanged["stats"].items() if k not in ("partners", "tenants", "skipped",
                                                                                  "skipped_records")}
    assert created_or_changed == {}
    # Only the run's own events and the per-tenant / per-partner "synced" marks were added.
    assert await world.pool.fetchval("SELECT count(*) FROM scaivault_events") - events_before == 2 + 1 + 2

    data = standin[0].data
    data["users"]["tnt_acme_prod"] = [u for u in data["users"]["tnt_acme_prod"] if u["id"] != "usr_bob"]
    data["users"]["tnt_acme_prod"][0]["groups"] = []
    data["groups"]["tnt_acme_prod"] = [g for g in data["groups"]["tnt_acme_prod"] if g["id"] != "grp_dev"]
    _, changed = await full_sync(world)
    stats = changed["stats"]
    assert (stats["users_removed"], stats["groups_removed"]) == (1, 1)
    assert await queries.find_user(world.pool, "tnt_acme_prod", "usr_bob") is None
    assert await queries.groups_of(world.pool, "tnt_acme_prod", "usr_alice") == []
    assert await world.pool.fetchval(
        "SELECT count(*) FROM scaivault_identity_members WHERE tenant_id = 'tnt_acme_prod'"
    ) == 0


async def test_sync_leaves_identities_managed_in_scaivault_alone_and_keeps_roles_set_here(
    world: World, standin: tuple[ScaiKeyStandIn, str]
) -> None:
    await full_sync(world)
    local = await world.commands.create_user(
        "tnt_acme_prod", {"email": "local@acme.example", "display_name": "Local", "status": "ACTIVE",
                          "mfa_enabled": False}, ACTOR, actor_roles=ROOT,
    )
    await world.commands.set_roles("tnt_acme_prod", "usr_alice", [], ACTOR, changer_roles=ROOT)
    standin[0].data["users"]["tnt_acme_prod"][0]["roles"] = ["partner_admin"]
    await full_sync(world)
    assert await queries.find_user(world.pool, "tnt_acme_prod", local) is not None
    # Taken away here, the role is not handed back by ScaiKey's next report.
    (alice,) = await queries.role_records(world.pool, "tnt_acme_prod", "user:alice@acme.example")
    assert alice.roles == frozenset()


async def test_a_tenant_scoped_sync_touches_only_that_tenant(world: World) -> None:
    _, run = await full_sync(world, SyncScope(partner_id="ptn_acme", tenant_id="tnt_acme_dev"))
    assert run["status"] == "completed" and run["stats"]["tenants"] == 1
    assert await queries.find_user(world.pool, "tnt_acme_dev", "usr_carol") is not None
    assert await queries.find_user(world.pool, "tnt_acme_prod", "usr_alice") is None


async def test_a_failing_scaikey_fails_the_run_without_leaking_what_it_said(
    world: World, standin: tuple[ScaiKeyStandIn, str]
) -> None:
    standin[0].fail_with = 503
    _, run = await full_sync(world)
    assert run["status"] == "failed"
    assert run["error"] == "ScaiKey answered 503 to GET /api/v1/tenants"
    events = await world.pool.fetch("SELECT state FROM scaivault_events")
    assert all(CLIENT_SECRET.encode() not in bytes(e["state"]) for e in events)
    assert all(b"standin-token" not in bytes(e["state"]) for e in events)


async def test_wrong_client_credentials_are_reported_without_the_secret(
    pool: Any, standin: tuple[ScaiKeyStandIn, str]
) -> None:
    async with aiohttp.ClientSession() as session:
        client = ScaiKeyClient(standin[1], session, client_id=CLIENT_ID, client_secret="wrong-secret-value")
        with pytest.raises(ScaiKeyUnavailable) as refused:
            await client.partners()
    assert str(refused.value) == "ScaiKey refused the client credentials (401)"


async def test_an_unreachable_scaikey_fails_the_run(world: World, standin: tuple[ScaiKeyStandIn, str]) -> None:
    async with aiohttp.ClientSession() as session:
        dead = ScaiKeyClient("http://127.0.0.1:9", session)
        synchronizer = IdentitySynchronizer(world.commands, world.tenancy, TenantDirectory(world.pool), dead)
        run = await synchronizer.start(SyncScope(), ACTOR)
        await synchronizer.wait()
    row = await queries.sync_row(world.pool, run.sync_id)
    assert row is not None and row["status"] == "failed" and "could not be reached" in row["error"]


async def test_the_identity_read_model_rebuilds_identically(world: World, database_url: str) -> None:
    await full_sync(world)
    await world.commands.set_roles("tnt_acme_prod", "usr_bob", ["partner_admin"], ACTOR,
                                   changer_roles=ROOT)
    await world.commands.remove_user("tnt_acme_prod", "usr_alice", ACTOR, actor_roles=ROOT)
    rebuilder = Rebuilder(database_url, world.repository.store, world.repository.mapper)
    model = ReadModel(IdentityProjection(), inline=True)
    report = await rebuilder.verify(model)
    assert report["identical"], report
    await rebuilder.rebuild(model)
    assert await queries.role_records(world.pool, "tnt_acme_prod", "usr_bob") == [
        RoleRecord(frozenset({"partner_admin"}), True, TOP_AUTHORITY)
    ]
    assert await queries.find_user(world.pool, "tnt_acme_prod", "usr_alice") is None


# --- webhook deliveries: the claim and the changes in one transaction ------------------------------------------------


@dataclass
class FailOnce:
    """A projector that fails once, on the first event of one type: a failure inside a delivery's transaction, after
    its claim and its first changes."""

    event_type: type
    failed: bool = False

    async def __call__(self, conn: Any, domain_event: Any) -> None:
        if isinstance(domain_event, self.event_type) and not self.failed:
            self.failed = True
            raise RuntimeError("injected failure")


def receiver_with(pool: Any, tmp_path: Any, *extra_projectors: Any) -> tuple[WebhookReceiver, TenancyCommands]:
    repository = Repository(PostgresEventStore(), create_mapper())
    runner = UnitOfWorkRunner(pool, repository, [project_tenancy, project_identity_event, *extra_projectors])
    tenancy = TenancyCommands(runner, KeyRing(LocalRootKeyProvider(tmp_path)))
    return WebhookReceiver(IdentityCommands(runner, PostgresIdentityLookup()), tenancy, TenantDirectory(pool)), tenancy


async def test_a_delivery_that_fails_after_its_claim_leaves_nothing_behind_and_its_retry_applies(
    pool: Any, tmp_path: Any
) -> None:
    receiver, _ = receiver_with(pool, tmp_path, FailOnce(MirroredTenant.Mirrored))
    delivery = Delivery.parse({"event_id": "evt_t1", "event_type": "tenant.created",
                               "data": {"id": "tnt_acme_new", "partner_id": "ptn_acme", "name": "New"}})
    with pytest.raises(RuntimeError):
        await receiver.receive(delivery, None)
    # Neither the claim nor the tenant's registration (made before the failure, in the same transaction) remains.
    assert await pool.fetchval("SELECT count(*) FROM scaivault_identity_webhook_deliveries") == 0
    assert await pool.fetchval("SELECT count(*) FROM scaivault_tenants WHERE tenant_id = 'tnt_acme_new'") == 0
    retried = await receiver.receive(delivery, None)
    assert retried.applied
    partner_of_new = "SELECT partner_id FROM scaivault_tenants WHERE tenant_id = 'tnt_acme_new'"
    assert await pool.fetchval(partner_of_new) == "ptn_acme"
    assert await pool.fetchval("SELECT name FROM scaivault_identity_tenants WHERE tenant_id = 'tnt_acme_new'") == "New"
    assert (await receiver.receive(delivery, None)).duplicate


async def test_concurrent_identical_deliveries_apply_once(pool: Any, tmp_path: Any) -> None:
    receiver, tenancy = receiver_with(pool, tmp_path)
    await tenancy.register_tenant("ptn_acme", "tnt_acme_prod")
    delivery = Delivery.parse({"event_id": "evt_u1", "event_type": "user.created",
                               "data": {"id": "usr_zed", "tenant_id": "tnt_acme_prod", "email": "zed@acme.example",
                                        "roles": ["tenant_admin"]}})
    receipts = await asyncio.gather(*(receiver.receive(delivery, None) for _ in range(4)))
    assert sorted((r.applied, r.duplicate) for r in receipts) == [(False, True)] * 3 + [(True, False)]
    assert await pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic = 'scaivault.domain.identities:User.Created'"
    ) == 1

