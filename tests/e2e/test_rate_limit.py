"""Rate limiting over HTTP: headers, 429 with Retry-After, refill, overrides, the batch-read cost, failed
authentication by IP, and buckets shared through the real Redis, with the fall-back when Redis goes away."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestClient, TestServer

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.http.app import create_app
from scaivault.ratelimit import RateLimiter
from scaivault.ratelimit.categories import parse_limits
from tests.e2e.conftest import OTHER_TENANT, TokenFactory, bearer
from tests.helpers import Clock
from tests.redis_helpers import REDIS_URL, RedisProxy, requires_redis

RATE_HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset")


@pytest.fixture
def settings(request: pytest.FixtureRequest, database_url: str, tmp_path: Path) -> Settings:
    """The limits each test names (``indirect`` parametrization); the spec's defaults when it names none."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=getattr(request, "param", ""),
    )


def limits(text: str) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("settings", [text], indirect=True)


def rate_headers(response) -> dict[str, str]:  # noqa: ANN001
    return {name: response.headers[name] for name in RATE_HEADERS if name in response.headers}


async def put(client: TestClient, t: str, path: str) -> None:
    response = await client.put(f"/v1/secrets/{path}", json={"data": {"v": path}}, headers=bearer(t))
    assert response.status == 201, await response.text()


async def put_four(client: TestClient, t: str, folder: str) -> list[str]:
    """Four secrets under ``folder``; their paths."""
    paths = [f"{folder}/{n}" for n in range(4)]
    for path in paths:
        await put(client, t, path)
    return paths


async def test_every_charged_response_carries_the_headers_with_the_default_limits(
    client: TestClient, token: TokenFactory
) -> None:
    t = token("secrets:read", "secrets:write", "secrets:list")
    before = int(time.time())
    written = await client.put("/v1/secrets/app/one", json={"data": {"v": 1}}, headers=bearer(t))
    assert written.status == 201
    assert rate_headers(written)["X-RateLimit-Limit"] == "100"
    assert rate_headers(written)["X-RateLimit-Remaining"] == "99"
    read = await client.get("/v1/secrets/app/one", headers=bearer(t))
    headers = rate_headers(read)
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("1000", "999")
    # Full again 60/1000 s after one request, rounded up to a whole second.
    assert before < int(headers["X-RateLimit-Reset"]) <= math.ceil(time.time() + 60 / 1000)
    missing = await client.get("/v1/secrets/app/none", headers=bearer(t))
    # One more token taken, though a slow machine may have refilled most of one meanwhile (16.7 per second).
    assert missing.status == 404 and rate_headers(missing)["X-RateLimit-Remaining"] in ("998", "999")
    denied = await client.delete("/v1/secrets/app/one", headers=bearer(t))  # no secrets:delete scope
    assert denied.status == 403 and rate_headers(denied)["X-RateLimit-Limit"] == "100"
    invalid = await client.put("/v1/secrets/app/one", json={"data": {"v": 1}, "bogus": 1}, headers=bearer(t))
    assert invalid.status == 422 and rate_headers(invalid)["X-RateLimit-Remaining"] in ("98", "99")
    listed = await client.get("/v1/secrets", headers=bearer(t))
    assert rate_headers(listed)["X-RateLimit-Limit"] == "100"
    whoami = await client.get("/v1/auth/whoami", headers=bearer(t))
    assert rate_headers(whoami)["X-RateLimit-Limit"] == "300"
    for path in ("/v1/health", "/v1/health/ready", "/v1/version", "/v1/no-such-route"):
        response = await client.get(path)
        assert rate_headers(response) == {}, path
        assert "X-Request-ID" in response.headers


async def test_secret_policy_previews_have_a_category_of_their_own(client: TestClient, token: TokenFactory) -> None:
    """A preview may cost seconds of CPU: 10 a minute by default, apart from the other policy operations (50)."""
    t = token("policies:read", "policies:write")
    recipe = {"fields": [{"name": "token", "generator": "hex"}]}
    created = await client.post("/v1/secret-policies", headers=bearer(t),
                                json={"name": "tokens", "policy_type": "api_key", **recipe})
    assert created.status == 201 and rate_headers(created)["X-RateLimit-Limit"] == "50"
    policy_id = (await created.json())["id"]
    for response in (await client.post("/v1/secret-policies/preview", json=recipe, headers=bearer(t)),
                     await client.post(f"/v1/secret-policies/{policy_id}/preview", headers=bearer(t))):
        assert response.status == 200 and rate_headers(response)["X-RateLimit-Limit"] == "10"
    assert rate_headers(response)["X-RateLimit-Remaining"] in ("8", "9")  # both taken from the preview bucket


@limits("secrets_read=2/m")
async def test_an_empty_bucket_answers_429_with_retry_after(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t = token()
    await put(client, t, "app/limited")
    remaining = []
    for _ in range(2):
        response = await client.get("/v1/secrets/app/limited", headers=bearer(t))
        assert response.status == 200
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["1", "0"]
    refused = await client.get("/v1/secrets/app/limited", headers=bearer(t))
    assert refused.status == 429
    body = await refused.json()
    assert body["error"]["code"] == "rate_limited"
    assert body["error"]["details"] == {"category": "secrets_read", "retry_after": 30}
    assert body["error"]["request_id"] == refused.headers["X-Request-ID"]
    assert refused.headers["Retry-After"] == "30"  # one token every 30 s
    assert (refused.headers["X-RateLimit-Limit"], refused.headers["X-RateLimit-Remaining"]) == ("2", "0")
    assert int(time.time()) + 50 < int(refused.headers["X-RateLimit-Reset"]) <= math.ceil(time.time() + 60)
    # Other categories, other identities, and the same name in another tenant have buckets of their own.
    assert (await client.put("/v1/secrets/app/limited", json={"data": {}}, headers=bearer(t))).status == 200
    assert (await client.get("/v1/secrets/app/limited", headers=bearer(token(identity="sa:other")))).status == 200
    elsewhere = token(tenant=OTHER_TENANT)
    assert (await client.get("/v1/secrets/app/limited", headers=bearer(elsewhere))).status == 404
    exposition = container.metrics.exposition().decode()
    assert 'scaivault_rate_limit_hits_total{category="secrets_read"} 1.0' in exposition


@limits("secrets_read=2/m")
async def test_tokens_come_back_as_time_passes(token: TokenFactory, container: Container) -> None:
    clock = Clock()
    container.rate_limiter = RateLimiter(parse_limits(container.settings.rate_limits), clock=clock)
    async with TestClient(TestServer(create_app(container=container))) as client:
        t = token()
        await put(client, t, "app/refill")
        for _ in range(2):
            assert (await client.get("/v1/secrets/app/refill", headers=bearer(t))).status == 200
        assert (await client.get("/v1/secrets/app/refill", headers=bearer(t))).status == 429
        clock.now += 29
        refused = await client.get("/v1/secrets/app/refill", headers=bearer(t))
        assert refused.status == 429 and refused.headers["Retry-After"] == "1"
        clock.now += 1
        again = await client.get("/v1/secrets/app/refill", headers=bearer(t))
        assert again.status == 200 and again.headers["X-RateLimit-Remaining"] == "0"
        clock.now += 600
        assert (await client.get("/v1/secrets/app/refill", headers=bearer(t))).headers["X-RateLimit-Remaining"] == "1"


@limits("*=100/m,auth=1/m,audit_query=1/m,secrets_delete=off")
async def test_overrides_set_each_category(client: TestClient, token: TokenFactory) -> None:
    t = token("secrets:read", "secrets:write", "secrets:delete", "audit:read")
    assert (await client.get("/v1/auth/whoami", headers=bearer(t))).status == 200
    assert (await client.get("/v1/auth/whoami", headers=bearer(t))).status == 429
    assert (await client.get("/v1/audit/logs", headers=bearer(t))).status == 200
    assert (await client.get("/v1/audit/logs", headers=bearer(t))).status == 429
    read = await client.get("/v1/secrets/app/x", headers=bearer(t))
    assert read.headers["X-RateLimit-Limit"] == "100"
    deleted = await client.delete("/v1/secrets/app/x", headers=bearer(t))
    assert deleted.status == 404 and rate_headers(deleted) == {}  # not limited: no bucket to report


@limits("off")
async def test_limiting_can_be_switched_off(client: TestClient, token: TokenFactory) -> None:
    t = token()
    await put(client, t, "app/free")
    response = await client.get("/v1/secrets/app/free", headers=bearer(t))
    assert response.status == 200 and rate_headers(response) == {}


@limits("secrets_read=5/m,batch_read=10/m")
async def test_a_batch_read_costs_one_batch_unit_and_one_read_per_returned_secret(
    client: TestClient, token: TokenFactory
) -> None:
    t = token()
    paths = await put_four(client, t, "batch") + ["batch/missing"]
    batch = await client.post("/v1/secrets/batch", json={"paths": paths}, headers=bearer(t))
    assert batch.status == 200
    assert len((await batch.json())["secrets"]) == 4
    assert (batch.headers["X-RateLimit-Limit"], batch.headers["X-RateLimit-Remaining"]) == ("10", "9")
    single = await client.get("/v1/secrets/batch/0", headers=bearer(t))  # 5 - 4 returned: one read left
    assert single.status == 200 and single.headers["X-RateLimit-Remaining"] == "0"
    assert (await client.get("/v1/secrets/batch/0", headers=bearer(t))).status == 429
    # With the read bucket empty no further batch starts; the refusal reports the read bucket.
    refused = await client.post("/v1/secrets/batch", json={"paths": paths}, headers=bearer(t))
    assert refused.status == 429
    assert (await refused.json())["error"]["details"]["category"] == "secrets_read"
    assert (refused.headers["X-RateLimit-Limit"], refused.headers["Retry-After"]) == ("5", "12")
    metadata = await client.post("/v1/secrets/batch/metadata", json={"paths": paths}, headers=bearer(t))
    assert metadata.status == 200  # batch metadata has a bucket of its own and reads no values


@limits("secrets_read=5/m,batch_read=10/m")
async def test_a_batch_may_overdraw_the_read_bucket_and_later_reads_wait_it_out(
    client: TestClient, token: TokenFactory
) -> None:
    t = token()
    paths = await put_four(client, t, "debt")
    for _ in range(2):  # 5 - 4 = 1 token left: the second batch may start, and leaves the bucket 3 in debt
        assert (await client.post("/v1/secrets/batch", json={"paths": paths}, headers=bearer(t))).status == 200
    refused = await client.get("/v1/secrets/debt/0", headers=bearer(t))
    assert refused.status == 429 and refused.headers["Retry-After"] == "48"  # 4 tokens at one per 12 s


@limits("unauthenticated=2/m")
async def test_failed_authentication_is_limited_per_client_ip(client: TestClient, token: TokenFactory) -> None:
    bad = {"Authorization": "Bearer not-a-token"}
    first = await client.get("/v1/secrets/app/x", headers=bad)
    assert first.status == 401 and first.headers["X-RateLimit-Limit"] == "2"
    assert (await client.get("/v1/auth/whoami")).status == 401
    refused = await client.get("/v1/secrets/app/x", headers=bad)
    assert refused.status == 429 and refused.headers["Retry-After"] == "30"
    assert (await refused.json())["error"]["details"]["category"] == "unauthenticated"
    # A valid token from the same address is charged to its identity, not to the address.
    assert (await client.get("/v1/secrets/app/x", headers=bearer(token()))).status == 404


# ---- Redis -----------------------------------------------------------------------------------------------------


@pytest.fixture
def redis_settings(settings: Settings, redis_prefix: str) -> Settings:
    return settings.model_copy(update={"redis_url": REDIS_URL, "redis_key_prefix": redis_prefix})


@pytest.fixture
async def second_server(redis_settings: Settings, container: Container) -> AsyncIterator[TestClient]:
    """Another server on the same database and Redis (the shared ``container`` is registered first)."""
    other = await build_container(redis_settings)
    try:
        async with TestClient(TestServer(create_app(container=other))) as client:
            yield client
    finally:
        await other.close()


@requires_redis
@limits("secrets_read=3/m")
async def test_two_servers_share_the_buckets_in_redis(
    redis_settings: Settings, container: Container, second_server: TestClient, token: TokenFactory,
    raw_redis: redis.Redis, redis_prefix: str,
) -> None:
    first = await build_container(redis_settings)
    try:
        async with TestClient(TestServer(create_app(container=first))) as first_server:
            t = token()
            await put(first_server, t, "app/shared")
            statuses = []
            for server in (first_server, second_server, first_server, second_server):
                statuses.append((await server.get("/v1/secrets/app/shared", headers=bearer(t))).status)
            assert statuses == [200, 200, 200, 429]
            assert (await first_server.get("/v1/secrets/app/shared", headers=bearer(t))).status == 429
            ready = await (await second_server.get("/v1/health/ready")).json()
            assert ready["checks"]["redis"] == "ok" and "errors" not in ready
            assert [key async for key in raw_redis.scan_iter(match=f"{redis_prefix}rl:*secrets_read")]
    finally:
        await first.close()


@requires_redis
@limits("secrets_read=100/h")
async def test_redis_down_keeps_serving_reports_it_and_recovers(
    settings: Settings, container: Container, token: TokenFactory, redis_proxy: RedisProxy,
    redis_prefix: str, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="scaivault.ratelimit")
    via_proxy = await build_container(
        settings.model_copy(update={"redis_url": redis_proxy.url, "redis_key_prefix": redis_prefix})
    )
    try:
        async with TestClient(TestServer(create_app(container=via_proxy))) as server:
            t, admin = token(), token("admin", roles=("super_admin",))
            await put(server, t, "app/outage")
            assert (await server.get("/v1/secrets/app/outage", headers=bearer(t))).headers[
                "X-RateLimit-Remaining"] == "99"
            await redis_proxy.shut()
            for _ in range(3):
                read = await server.get("/v1/secrets/app/outage", headers=bearer(t))
                assert read.status == 200 and read.headers["X-RateLimit-Limit"] == "100"
            ready = await server.get("/v1/health/ready")
            body = await ready.json()
            assert ready.status == 200 and body["status"] == "ready"
            assert body["checks"] == {"database": "ok", "encryption": "ok", "redis": "error"}
            assert "in-process buckets" in body["errors"]["redis"]
            detailed = await (await server.get("/v1/health/detailed", headers=bearer(admin))).json()
            assert detailed["status"] == "degraded"
            assert detailed["checks"]["redis"]["status"] == "error"
            assert detailed["checks"]["redis"]["rate_limit_buckets"] == "in_process"
            warnings = [r for r in caplog.records
                        if r.levelno == logging.WARNING and r.name == "scaivault.ratelimit.limiter"]
            assert len(warnings) == 1  # once per outage, not per request or probe

            await redis_proxy.open()
            ready = await server.get("/v1/health/ready")
            body = await ready.json()
            assert (ready.status, body["checks"]["redis"], "errors" in body) == (200, "ok", False)
            detailed = await (await server.get("/v1/health/detailed", headers=bearer(admin))).json()
            assert detailed["status"] == "healthy"
            assert detailed["checks"]["redis"]["status"] == "ok"
            assert detailed["checks"]["redis"]["rate_limit_buckets"] == "redis"
            assert detailed["checks"]["redis"]["memory_used_mb"] > 0
            # Back on the shared bucket, which kept the read made before the outage.
            read = await server.get("/v1/secrets/app/outage", headers=bearer(t))
            assert read.headers["X-RateLimit-Remaining"] == "98"
            assert [r.getMessage() for r in caplog.records if r.levelno == logging.INFO
                    and r.name == "scaivault.ratelimit.limiter"] == [
                "Redis available again: rate limiting uses the shared Redis buckets"]
    finally:
        await via_proxy.close()
