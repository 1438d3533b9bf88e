"""Crypto-shredding and root-key rotation through the real commands, and readiness that tells the truth."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from scaivault import health
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.http.app import create_app
from tests.e2e.conftest import TokenFactory, bearer


async def data_key_ids(container: Container, path: str) -> list[str]:
    return [
        row["data_key_id"]
        for row in await container.pool.fetch(
            "SELECT v.data_key_id FROM scaivault_secret_versions v JOIN scaivault_secrets s USING (stream_id)"
            " WHERE s.path = $1 ORDER BY v.version",
            path,
        )
    ]


async def test_destroying_a_version_destroys_its_data_key(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t = bearer(token())
    for n in (1, 2):
        await client.put("/v1/secrets/app/shred", json={"data": {"v": str(n)}}, headers=t)
    first, second = await data_key_ids(container, "app/shred")
    await client.delete("/v1/secrets/app/shred?version=1&permanent=true", headers=t)
    stored = {r["id"] for r in await container.pool.fetch("SELECT id FROM scaivault_data_keys")}
    assert first not in stored and second in stored
    # The history of what happened stays in the event log.
    topics = [r["topic"] for r in await container.pool.fetch(
        "SELECT topic FROM scaivault_events WHERE topic LIKE '%:Secret.%' ORDER BY notification_id")]
    assert topics[-1].endswith("Secret.VersionsDestroyed")
    await client.delete("/v1/secrets/app/shred?permanent=true", headers=t)
    assert second not in {r["id"] for r in await container.pool.fetch("SELECT id FROM scaivault_data_keys")}


async def test_root_key_rotation_keeps_every_secret_readable(
    client: TestClient, token: TokenFactory, container: Container, settings: Settings
) -> None:
    t = token()
    await client.put("/v1/secrets/app/rotated", json={"data": {"v": "before"}}, headers=bearer(t))
    versions_before = await container.pool.fetch("SELECT ciphertext FROM scaivault_secret_versions")
    partner_keys_before = await container.pool.fetch("SELECT * FROM scaivault_partner_keys ORDER BY 1")
    async with container.pool.acquire() as conn:
        assert await container.keyring.rotate_root_key(conn) == len(partner_keys_before)
    assert await container.pool.fetch("SELECT * FROM scaivault_partner_keys ORDER BY 1") != partner_keys_before
    assert await container.pool.fetch("SELECT ciphertext FROM scaivault_secret_versions") == versions_before

    fresh = await build_container(settings)  # no cached keys: the whole chain is unwrapped again
    try:
        async with TestClient(TestServer(create_app(container=fresh))) as other:
            read = await other.get("/v1/secrets/app/rotated", headers=bearer(t))
            body = await read.json()
            assert body.get("data") == {"v": "before"}, body
    finally:
        await fresh.close()


async def test_readiness_reports_a_broken_encryption_chain(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    ready = await client.get("/v1/health/ready")
    assert ready.status == 200
    assert (await ready.json())["checks"] == {"database": "ok", "encryption": "ok", "redis": "not_configured"}

    async def broken() -> None:
        raise OSError("KMS unreachable")

    container.keyring.root.check = broken  # type: ignore[method-assign]
    assert (await client.get("/v1/health/ready")).status == 200  # a recent success is trusted for a few seconds
    monkeypatch.setattr(health, "ENCRYPTION_CHECK_TTL", -1.0)  # ... and then the chain is checked again
    not_ready = await client.get("/v1/health/ready")
    body = await not_ready.json()
    assert not_ready.status == 503 and body["status"] == "not_ready"
    assert body["checks"]["encryption"] == "error" and body["errors"]["encryption"] == "OSError"
    assert (await client.get("/v1/health")).status == 200  # liveness does not depend on it


async def test_metrics_need_admin_on_the_api_and_name_no_secret(client: TestClient, token: TokenFactory) -> None:
    t = bearer(token())
    await client.put("/v1/secrets/app/metered", json={"data": {"pw": "metric-canary"}}, headers=t)
    await client.get("/v1/secrets/app/metered", headers=t)
    denied = await client.get("/v1/metrics", headers=t)
    assert denied.status == 403
    partner_admin = await client.get("/v1/metrics", headers=bearer(token("admin", roles=("partner_admin",))))
    assert partner_admin.status == 403  # the series name other partners' tenants
    exposition = await (await client.get("/v1/metrics", headers=bearer(token("admin", roles=("super_admin",))))).text()
    assert 'scaivault_secret_reads_total{secret_type="kv",tenant="tnt_acme_prod"} 1.0' in exposition
    assert 'scaivault_requests_total{method="PUT",path_category="secrets",status="201"} 1.0' in exposition
    assert "scaivault_access_record_batch_size_count" in exposition
    assert "app/metered" not in exposition and "metric-canary" not in exposition


async def test_metrics_break_a_request_down_by_stage(client: TestClient, token: TokenFactory) -> None:
    """Where a slow request spent its time: each stage of a read and of a write has its histogram."""
    t = bearer(token())
    await client.put("/v1/secrets/app/staged", json={"data": {"pw": "x"}}, headers=t)
    await client.get("/v1/secrets/app/staged", headers=t)
    exposition = await (await client.get("/v1/metrics", headers=bearer(token("admin", roles=("super_admin",))))).text()
    counts = {line.split('"')[1]: float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines()
              if line.startswith("scaivault_request_stage_seconds_count{")}
    for stage in ("authenticate", "authorize", "read_model", "decrypt", "audit_durable", "command"):
        assert counts.get(stage, 0) >= 1, (stage, counts)


async def test_detailed_health_is_for_operators_only(client: TestClient, token: TokenFactory) -> None:
    """It shows pool statistics and the event store's positions, which span every partner."""
    for denied in (token("admin"), token("admin", roles=("partner_admin",)), token(roles=("super_admin",))):
        response = await client.get("/v1/health/detailed", headers=bearer(denied))
        assert response.status == 403, await response.text()
        assert "pool_size" not in await response.text()
    assert (await client.get("/v1/health/detailed")).status == 401
    response = await client.get("/v1/health/detailed", headers=bearer(token("admin", roles=("super_admin",))))
    body = await response.json()
    assert response.status == 200 and body["checks"]["database"]["pool_size"] >= 1 and "projections" in body


async def test_the_internal_address_serves_metrics_and_detailed_health(container: Container) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    container.settings = container.settings.model_copy(update={"metrics_bind_address": f"127.0.0.1:{port}"})
    app = create_app(container=container, internal_address=True)
    async with TestClient(TestServer(app)), aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/v1/health/detailed") as response:
            assert response.status == 200 and (await response.json())["checks"]["database"]["status"] == "ok"
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            assert response.status == 200 and "scaivault_requests_total" in await response.text()


async def test_readiness_names_no_host_or_address(settings: Settings, token: TokenFactory) -> None:
    """Readiness needs no token: a failure says what kind it is, never the text naming where the dependency lives
    (that is in detailed health, for operators)."""
    unreachable = settings.model_copy(update={"redis_url": "redis://internal-redis.corp.invalid:6390/0"})
    container = await build_container(unreachable)
    try:
        async with TestClient(TestServer(create_app(container=container))) as client:
            response = await client.get("/v1/health/ready")
            text = await response.text()
            assert response.status == 200 and (await response.json())["checks"]["redis"] == "error"
            assert "internal-redis" not in text and "6390" not in text and "in-process buckets" in text
            operator = bearer(token("admin", roles=("super_admin",)))
            detailed = await (await client.get("/v1/health/detailed", headers=operator)).json()
            assert detailed["checks"]["redis"]["status"] == "error"
    finally:
        await container.close()
