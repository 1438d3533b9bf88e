"""Rebuilding read models: a copy built beside the live model, swapped in while serving goes on, identical to the
live one; and verification that notices a live model that drifted."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from commands.actor import Actor
from commands.secrets import UpdateSecretMetadata, WriteSecret
from commands.tokens import IssueToken
from projections.maintenance.rebuild import Rebuilder
from scaivault.bootstrap import Container, read_models
from scaivault.domain.secrets import SecretAddress
from tests.e2e.conftest import PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import caught_up

ACTOR = Actor(identity_id="user:history@acme.example", request_id=None)


async def build_history(container: Container, client: TestClient, token: str) -> None:
    """Thousands of events of every type the system has."""
    commands, rng = container.secret_commands, random.Random(7)
    addresses = [SecretAddress(TENANT, PARTNER, TENANT, f"history/s{n:03d}") for n in range(60)]
    partner = SecretAddress(PARTNER, PARTNER, None, "shared/key")
    for round_ in range(15):
        for address in addresses + [partner]:
            await commands.write(WriteSecret(address=address, data={"v": f"{round_}"}, max_versions=5,
                                             metadata={"tags": [f"r{round_}"]}), ACTOR)
    for address in addresses[:20]:
        await commands.update_metadata(UpdateSecretMetadata(address=address, metadata_patch={"owner": "team:x"},
                                                            expires_in=timedelta(days=30)), ACTOR)
    for address in addresses[20:30]:
        await commands.delete(address, ACTOR)
    for address in addresses[20:25]:
        await commands.restore(address, ACTOR)
    for address in addresses[30:35]:
        await commands.destroy_version(address, 15, ACTOR)
    for address in addresses[35:40]:
        await commands.destroy(address, ACTOR)
    await container.tenancy_commands.register_tenant(PARTNER, "tnt_acme_extra")
    pat = await container.token_commands.issue(IssueToken(partner_id=PARTNER, tenant_id=TENANT, identity_id="sa:ci",
                                                  scopes=("secrets:read",), personal_access_token=True))
    await container.token_commands.revoke(pat)
    for _ in range(500):  # access records: reads, batch reads, denials
        path = rng.choice(addresses).path
        await client.get(f"/v1/secrets/{path}", headers=bearer(token))
    await client.post("/v1/secrets/batch", json={"paths": [a.path for a in addresses[:10]]}, headers=bearer(token))
    await client.get("/v1/secrets/history/s001")


async def verify_all(container: Container) -> dict[str, bool]:
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    return {model.name: (await rebuilder.verify(model))["identical"] for model in read_models(container.keyring)}


async def test_rebuilt_models_are_identical_to_the_live_ones(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool
) -> None:
    await build_history(container, client, token())
    await caught_up(container)
    assert await pool.fetchval("SELECT count(*) FROM scaivault_events") > 2000
    assert set(await verify_all(container)) >= {"secrets", "tenancy", "audit_log"}
    assert all((await verify_all(container)).values())


async def test_rebuild_swaps_in_while_serving_goes_on(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool
) -> None:
    t = token()
    await build_history(container, client, t)
    stop = asyncio.Event()
    statuses: list[int] = []

    async def keep_serving() -> None:
        n = 0
        while not stop.is_set():
            written = await client.put(f"/v1/secrets/live/w{n % 20}", json={"data": {"n": str(n)}}, headers=bearer(t))
            read = await client.get(f"/v1/secrets/history/s00{n % 10}", headers=bearer(t))
            statuses.extend((written.status, read.status))
            n += 1

    traffic = asyncio.create_task(keep_serving())
    try:
        rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
        for model in read_models(container.keyring):
            report = await rebuilder.rebuild(model)
            assert report.events > 0
    finally:
        stop.set()
        await traffic
    assert statuses and set(statuses) <= {200, 201}  # nothing failed, nothing was missing mid-swap
    await caught_up(container)
    assert all((await verify_all(container)).values())
    # The last writes made during the rebuild are in the swapped-in model.
    last = await pool.fetchval("SELECT max(current_version) FROM scaivault_secrets WHERE path LIKE 'live/%'")
    assert last is not None and last >= 1


async def test_verify_notices_drift_and_a_rebuild_repairs_it(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool
) -> None:
    await client.put("/v1/secrets/app/drift", json={"data": {"k": "v"}, "metadata": {"tags": ["a"]}},
                     headers=bearer(token()))
    await caught_up(container)
    await pool.execute("UPDATE scaivault_secrets SET metadata = '{\"tags\": [\"forged\"]}' WHERE path = 'app/drift'")
    await pool.execute("DELETE FROM scaivault_audit_log WHERE seq = 1")
    verdicts = await verify_all(container)
    assert verdicts["secrets"] is False and verdicts["audit_log"] is False and verdicts["tenancy"] is True

    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    for model in read_models(container.keyring):
        await rebuilder.rebuild(model)
    await caught_up(container)
    assert all((await verify_all(container)).values())
    meta = await (await client.get("/v1/secrets/app/drift/metadata", headers=bearer(token()))).json()
    assert meta["metadata"] == {"tags": ["a"]}


async def test_a_secret_read_then_purged_rebuilds_without_its_last_access(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    """A rebuild applies a page's last-access times after its secret events; a purge in between must still win."""
    headers = bearer(token())
    assert (await client.put("/v1/secrets/gone/soon", json={"data": {"v": 1}}, headers=headers)).status == 201
    assert (await client.get("/v1/secrets/gone/soon", headers=headers)).status == 200
    assert (await client.delete("/v1/secrets/gone/soon?permanent=true", headers=headers)).status in (200, 204)
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_secret_last_access") == 0
    assert (await verify_all(container))["secrets"]


async def _schema(pool: asyncpg.Pool, schema: str, tables: list[str]) -> set[tuple[str, str, str]]:
    """(table, index name, definition) of every index of ``tables`` in ``schema``, constraints' included."""
    rows = await pool.fetch(
        "SELECT tablename, indexname, replace(indexdef, $1 || '.', '') AS definition FROM pg_indexes"
        " WHERE schemaname = $1 AND tablename = ANY($2::text[])", schema, tables)
    return {(r["tablename"], r["indexname"], r["definition"]) for r in rows}


async def test_a_rebuild_keeps_the_live_index_names_and_builds_random_order_indexes_last(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Migrations refer to indexes by name, so a swapped-in copy carries the live names; an index a projection
    defers (audit_log's path index) is absent while the copy is replayed, and present once it is swapped in."""
    t = token()
    for n in range(20):
        await client.get(f"/v1/secrets/app/s{n}", headers=bearer(t))
    await caught_up(container)
    models = {model.name: model for model in read_models(container.keyring)}
    tables = [table for model in models.values() for table in model.projection.tables]
    live = await _schema(pool, "public", tables)
    assert ("scaivault_audit_log", "scaivault_audit_log_path_idx",
            "CREATE INDEX scaivault_audit_log_path_idx ON scaivault_audit_log USING btree (chain, secret_path, seq)"
            ) in live

    audit = models["audit_log"].projection
    during: list[set[str]] = []
    apply = audit.apply

    async def apply_and_look(conn: asyncpg.Connection, events: Any) -> None:
        names = await conn.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = 'scaivault_rebuild_audit_log'"
                                 " AND tablename = 'scaivault_audit_log'")
        during.append({r["indexname"] for r in names})
        await apply(conn, events)

    monkeypatch.setattr(audit, "apply", apply_and_look)
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    for model in models.values():
        await rebuilder.rebuild(model)
    assert during and "scaivault_audit_log_path_idx" not in during[0]
    assert "scaivault_audit_log_identity_idx" in during[0] and "scaivault_audit_log_pkey" in during[0]
    assert await _schema(pool, "public", tables) == live
    assert all((await verify_all(container)).values())
