"""Quotas over HTTP (docs/api-decisions.md, "Quotas"): webhooks per tenant, subscriptions per identity and per
tenant. One more than the quota answers 409 ``quota_exceeded`` with ``{resource, limit, current}``; deleted ones do
not count; other tenants are not affected; concurrent creations never pass the quota together."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.conftest import GENEROUS_RATE_LIMITS, OTHER_TENANT, TENANT
from tests.e2e.helpers import caller_token, error_document

SUBSCRIPTION_SCOPES = ("subscriptions:read", "subscriptions:write")
WATCH = {"name": "watch", "paths": ["app/**"], "events": ["secret.*"], "delivery": {"type": "polling"}}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32", max_webhooks_per_tenant=3,
        max_subscriptions_per_identity=2, max_subscriptions_per_tenant=3,
    )


def admin(container: Container, tenant: str = TENANT) -> dict[str, str]:
    return caller_token(container, "admin", *SUBSCRIPTION_SCOPES, identity="user:admin@acme.example",
                        roles=("tenant_admin",), tenant=tenant)


def subscriber(container: Container, identity: str) -> dict[str, str]:
    return caller_token(container, *SUBSCRIPTION_SCOPES, identity=identity)


async def new_webhook(client: TestClient, headers: dict[str, str], n: int, **fields: Any) -> Any:
    return await client.post("/v1/webhooks", headers=headers, json={
        "name": f"hook {n}", "url": f"http://127.0.0.1:9/hook/{n}", "secret": "a-signing-secret-of-32-characters",
        "events": ["secret.*"], **fields,
    })


async def new_subscription(client: TestClient, headers: dict[str, str], **fields: Any) -> Any:
    return await client.post("/v1/subscriptions", headers=headers, json={**WATCH, **fields})


async def refusal(response: Any) -> tuple[int, str, dict[str, Any]]:
    error = await error_document(response)
    return response.status, error["code"], error["details"]


async def test_webhooks_beyond_the_tenant_quota_are_refused_until_one_is_deleted(
    client: TestClient, container: Container
) -> None:
    headers = admin(container)
    created = []
    for n in range(3):
        response = await new_webhook(client, headers, n)
        assert response.status == 201, await response.text()
        created.append((await response.json())["id"])
    assert await refusal(await new_webhook(client, headers, 3)) == (
        409, "quota_exceeded", {"resource": "webhooks_per_tenant", "limit": 3, "current": 3})
    # A bad request is told what is wrong with it, whatever the quota says.
    assert (await new_webhook(client, headers, 4, url="ftp://example.com/x")).status == 422
    # The quota is the tenant's: another tenant of the same partner has its own.
    assert (await new_webhook(client, admin(container, OTHER_TENANT), 5)).status == 201
    # A deleted webhook does not count.
    assert (await client.delete(f"/v1/webhooks/{created[0]}", headers=headers)).status == 200
    assert (await new_webhook(client, headers, 6)).status == 201
    assert (await refusal(await new_webhook(client, headers, 7)))[1] == "quota_exceeded"
    listed = await (await client.get("/v1/webhooks", headers=headers)).json()
    assert len(listed["webhooks"]) == 3


async def test_concurrent_webhook_creations_never_pass_the_quota_together(
    client: TestClient, container: Container
) -> None:
    headers = admin(container)
    responses = await asyncio.gather(*(new_webhook(client, headers, n) for n in range(8)))
    assert sorted(response.status for response in responses) == [201] * 3 + [409] * 5
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_webhooks WHERE tenant_id = $1", TENANT) == 3


async def test_subscriptions_are_bounded_per_identity_and_per_tenant(client: TestClient, container: Container) -> None:
    alice, bob, carol = (subscriber(container, f"sa:{name}") for name in ("alice", "bob", "carol"))
    first = await new_subscription(client, alice)
    assert first.status == 201
    assert (await new_subscription(client, alice)).status == 201
    assert await refusal(await new_subscription(client, alice)) == (
        409, "quota_exceeded", {"resource": "subscriptions_per_identity", "limit": 2, "current": 2})
    # Owners compare without case, as everywhere.
    assert (await refusal(await new_subscription(client, subscriber(container, "SA:Alice"))))[2][
        "resource"] == "subscriptions_per_identity"
    assert (await new_subscription(client, bob)).status == 201
    assert await refusal(await new_subscription(client, carol)) == (
        409, "quota_exceeded", {"resource": "subscriptions_per_tenant", "limit": 3, "current": 3})
    # A bad request is told what is wrong with it first; another tenant has its own quota.
    assert (await new_subscription(client, carol, events=["nope.*"])).status == 422
    assert (await new_subscription(client, admin(container, OTHER_TENANT))).status == 201
    # A deleted subscription does not count, for its owner or its tenant.
    gone = (await first.json())["id"]
    assert (await client.delete(f"/v1/subscriptions/{gone}", headers=alice)).status == 200
    assert (await new_subscription(client, carol)).status == 201
    assert (await refusal(await new_subscription(client, alice)))[2]["resource"] == "subscriptions_per_tenant"


async def test_concurrent_subscription_creations_never_pass_the_quotas_together(
    client: TestClient, container: Container
) -> None:
    callers = [subscriber(container, f"sa:svc-{n % 4}") for n in range(12)]
    responses = await asyncio.gather(*(new_subscription(client, headers) for headers in callers))
    assert sorted(response.status for response in responses) == [201] * 3 + [409] * 9
    owners = await container.pool.fetch("SELECT identity_id FROM scaivault_subscriptions WHERE tenant_id = $1", TENANT)
    assert len(owners) == 3
    alone = await asyncio.gather(*(new_subscription(client, admin(container, OTHER_TENANT)) for _ in range(5)))
    assert sorted(response.status for response in alone) == [201] * 2 + [409] * 3


async def test_a_subscriptions_globs_hold_at_most_4096_characters_together(
    client: TestClient, container: Container
) -> None:
    headers = subscriber(container, "sa:globs")
    too_long = [f"{n}{'a' * 499}" for n in range(9)]  # 4500 characters, each glob within its own 512
    response = await new_subscription(client, headers, paths=too_long)
    status, code, details = await refusal(response)
    assert (status, code, details["fields"][0]["field"]) == (422, "validation_error", "paths")
    assert (await new_subscription(client, headers, paths=too_long[:8])).status == 201
