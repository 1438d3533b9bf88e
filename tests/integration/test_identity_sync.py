"""Sync from a ScaiKey-compatible directory: a real aiohttp server on loopback (the stand-in below) speaking the JSON
documented in scaivault/identity/scaikey.py, the real commands and the real database."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from commands.identities import IdentityCommands
from commands.secrets import Actor
from commands.tenancy import TenancyCommands
from commands.unit_of_work import UnitOfWorkRunner
from projections.identity import queries
from projections.identity.projection import IdentityProjection
from projections.identity.projector import project_identity_event
from projections.rebuild import ReadModel, Rebuilder
from projections.tenancy import project_tenancy
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.root_keys import LocalRootKeyProvider
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from scaivault.identity.scaikey import ScaiKeyClient, ScaiKeyUnavailable
from scaivault.identity.sync import IdentitySynchronizer, SyncScope

CLIENT_ID, CLIENT_SECRET = "scaivault-sync", "standin-client-secret-value"
ACTOR = Actor(identity_id="user:ops@acme.example", request_id=None)


def directory() -> dict[str, Any]:
    return {
        "partners": [{"id": "ptn_acme", "name": "Acme", "slug": "acme", "region": "eu-west-1", "status": "ACTIVE"}],
        "tenants": [
            {"id": "tnt_acme_prod", "partner_id": "ptn_acme", "name": "Acme prod", "status": "ACTIVE"},
            {"id": "tnt_acme_dev", "partner_id": "ptn_acme", "name": "Acme dev", "status": "ACTIVE"},
        ],
        "users": {
            "tnt_acme_prod": [
                {"id": "usr_alice", "email": "Alice@Acme.example", "display_name": "Alice", "status": "ACTIVE",
                 "mfa_enabled": True, "groups": ["grp_sre"], "roles": ["tenant_admin", "not_a_scaivault_role"]},
                {"id": "usr_bob", "email": "bob@acme.example", "display_name": "Bob", "status": "ACTIVE",
                 "mfa_enabled": False, "groups": ["grp_sre", "grp_dev"], "roles": []},
                {"id": "usr_bad", "email": "not an address", "display_name": "Broken"},
            ],
            "tnt_acme_dev": [
                {"id": "usr_carol", "email": "carol@acme.example", "display_name": "Carol", "groups": ["grp_dev2"]},
            ],
        },
        "groups": {
            "tnt_acme_prod": [
                {"id": "grp_sre", "name": "sre", "description": "Site reliability", "status": "ACTIVE"},
                {"id": "grp_dev", "name": "developers", "status": "ACTIVE"},
            ],
            "tnt_acme_dev": [{"id": "grp_dev2", "name": "developers"}],
        },
    }


@dataclass
class ScaiKeyStandIn:
    """A small ScaiKey: client-credentials tokens, and the directory, paged. ``fail_with`` makes every directory
    request answer that status; ``tokens_issued`` counts token grants."""

    data: dict[str, Any] = field(default_factory=directory)
    require_credentials: bool = True
    fail_with: int | None = None
    tokens_issued: int = 0
    seen_authorization: list[str | None] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self._token)
        app.router.add_get("/api/v1/partners", self._list(lambda r: self.data["partners"], "partners"))
        app.router.add_get("/api/v1/tenants", self._list(self._tenants, "tenants"))
        app.router.add_get(
            "/api/v1/tenants/{tenant_id}/users",
            self._list(lambda r: self.data["users"].get(r.match_info["tenant_id"], []), "users"),
        )
        app.router.add_get(
            "/api/v1/tenants/{tenant_id}/groups",
            self._list(lambda r: self.data["groups"].get(r.match_info["tenant_id"], []), "groups"),
        )
        return app

    def _tenants(self, request: web.Request) -> list[Any]:
        partner = request.query.get("partner_id")
        return [t for t in self.data["tenants"] if partner is None or t["partner_id"] == partner]

    async def _token(self, request: web.Request) -> web.Response:
        form = await request.post()
        if (form.get("grant_type"), form.get("client_id"), form.get("client_secret")) != (
            "client_credentials", CLIENT_ID, CLIENT_SECRET
        ):
            return web.json_response({"error": "invalid_client"}, status=401)
        self.tokens_issued += 1
        return web.json_response({"access_token": f"standin-token-{self.tokens_issued}", "expires_in": 3600})

    def _list(self, items: Any, key: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            self.seen_authorization.append(request.headers.get("Authorization"))
            if self.require_credentials and not (request.headers.get("Authorization") or "").startswith(
                "Bearer standin-token-"
            ):
                return web.json_response({"error": "unauthorized"}, status=401)
            if self.fail_with is not None:
                return web.json_response({"error": "broken", "leak": CLIENT_SECRET}, status=self.fail_with)
            everything = items(request)
            page, size = int(request.query["page"]), int(request.query["page_size"])
            chunk = everything[(page - 1) * size : page * size]
            return web.json_response({key: copy.deepcopy(chunk), "total": len(everything)})

        return handler


@pytest.fixture
async def standin() -> AsyncIterator[tuple[ScaiKeyStandIn, str]]:
    server = ScaiKeyStandIn()
    async with TestServer(server.app(), host="127.0.0.1") as test_server:
        yield server, str(test_server.make_url("")).rstrip("/")


@dataclass
class World:
    pool: Any
    commands: IdentityCommands
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
    commands = IdentityCommands(runner, on_membership_changed=memberships.append, on_roles_changed=roles.append)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        client = ScaiKeyClient(standin[1], session, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, page_size=1)
        synchronizer = IdentitySynchronizer(commands, TenancyCommands(runner, keyring), client)
        yield World(pool, commands, synchronizer, client, memberships, roles, repository)
        await synchronizer.close()


async def full_sync(world: World, scope: SyncScope = SyncScope()) -> tuple[str, dict[str, Any]]:
    run = await world.synchronizer.start(scope, ACTOR)
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
    assert await world.pool.fetchval("SELECT partner_id FROM scaivault_tenants WHERE tenant_id = 'tnt_acme_dev'") == "ptn_acme"
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
                          "mfa_enabled": False}, ACTOR,
    )
    await world.commands.set_roles("tnt_acme_prod", "usr_alice", [], ACTOR, changer_roles=frozenset({"super_admin"}))
    standin[0].data["users"]["tnt_acme_prod"][0]["roles"] = ["partner_admin"]
    await full_sync(world)
    assert await queries.find_user(world.pool, "tnt_acme_prod", local) is not None
    # Taken away here, the role is not handed back by ScaiKey's next report.
    assert await queries.roles_of(world.pool, "tnt_acme_prod", "user:alice@acme.example") == []


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
        synchronizer = IdentitySynchronizer(world.commands, world.synchronizer._tenancy, dead)
        run = await synchronizer.start(SyncScope(), ACTOR)
        await synchronizer.wait()
    row = await queries.sync_row(world.pool, run.sync_id)
    assert row["status"] == "failed" and "could not be reached" in row["error"]


async def test_the_identity_read_model_rebuilds_identically(world: World, database_url: str) -> None:
    await full_sync(world)
    await world.commands.set_roles("tnt_acme_prod", "usr_bob", ["partner_admin"], ACTOR,
                                   changer_roles=frozenset({"super_admin"}))
    await world.commands.remove_user("tnt_acme_prod", "usr_alice", ACTOR)
    rebuilder = Rebuilder(database_url, world.repository.store, world.repository.mapper)
    model = ReadModel(IdentityProjection(), inline=True)
    report = await rebuilder.verify(model)
    assert report["identical"], report
    await rebuilder.rebuild(model)
    assert await queries.roles_of(world.pool, "tnt_acme_prod", "usr_bob") == ["partner_admin"]
    assert await queries.find_user(world.pool, "tnt_acme_prod", "usr_alice") is None
