"""Attacks on the event APIs (webhooks, subscriptions, secret policies, rotation), each tried and refused: every
endpoint needs its scope whatever the caller's role, another tenant's webhook is not reachable by any of its routes
(redelivery and deliveries included), and a webhook URL naming a private address in another spelling is refused
when it is created and never reached when it is sent to (docs/webhooks.md, the egress guard)."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.conftest import ALL_SECRET_SCOPES, GENEROUS_RATE_LIMITS, OTHER_TENANT
from tests.e2e.helpers import caller_token, error_of
from tests.helpers import eventually
from tests.webhook_receiver import receiving

SECRET = "whsec_security_0123456789abcdef0123"
EVERY_SCOPE = (
    *ALL_SECRET_SCOPES, "admin", "policies:read", "policies:write", "subscriptions:read", "subscriptions:write",
    "secrets:rotate", "audit:read",
)
WH, SUB, SP, ROT = "/v1/webhooks", "/v1/subscriptions", "/v1/secret-policies", "/v1/rotation"
# (method, path, the scopes any one of which the endpoint accepts)
ENDPOINTS = [
    ("GET", WH, {"admin"}), ("POST", WH, {"admin"}), ("GET", f"{WH}/wh_x", {"admin"}),
    ("PATCH", f"{WH}/wh_x", {"admin"}), ("DELETE", f"{WH}/wh_x", {"admin"}), ("POST", f"{WH}/wh_x/test", {"admin"}),
    ("GET", f"{WH}/wh_x/deliveries", {"admin"}), ("POST", f"{WH}/wh_x/deliveries/del_x/redeliver", {"admin"}),
    ("GET", SUB, {"subscriptions:read"}), ("POST", SUB, {"subscriptions:write"}),
    ("GET", f"{SUB}/sub_x", {"subscriptions:read"}), ("PATCH", f"{SUB}/sub_x", {"subscriptions:write"}),
    ("DELETE", f"{SUB}/sub_x", {"subscriptions:write"}), ("GET", f"{SUB}/sub_x/poll", {"subscriptions:read"}),
    ("POST", f"{SUB}/sub_x/ack", {"subscriptions:read"}),
    ("GET", SP, {"policies:read"}), ("POST", SP, {"policies:write"}), ("POST", f"{SP}/preview", {"policies:write"}),
    ("GET", f"{SP}/sp_x", {"policies:read"}), ("PUT", f"{SP}/sp_x", {"policies:write"}),
    ("PATCH", f"{SP}/sp_x", {"policies:write"}), ("DELETE", f"{SP}/sp_x", {"policies:write"}),
    ("POST", f"{SP}/sp_x/preview", {"policies:read"}),
    ("GET", f"{ROT}/policies", {"admin"}), ("POST", f"{ROT}/policies", {"admin"}),
    ("GET", f"{ROT}/policies/rot_x", {"admin"}), ("PATCH", f"{ROT}/policies/rot_x", {"admin"}),
    ("DELETE", f"{ROT}/policies/rot_x", {"admin"}), ("POST", f"{ROT}/policies/rot_x/enable", {"admin"}),
    ("POST", f"{ROT}/policies/rot_x/disable", {"admin"}), ("POST", f"{ROT}/policies/rot_x/secrets", {"admin"}),
    ("DELETE", f"{ROT}/policies/rot_x/secrets/app/db", {"admin"}),
    ("POST", f"{ROT}/policies/rot_x/rotate", {"secrets:rotate"}),
    ("GET", f"{ROT}/policies/rot_x/history", {"audit:read"}),
    ("GET", f"{ROT}/due", {"secrets:rotate", "admin"}), ("GET", f"{ROT}/pending", {"secrets:rotate", "admin"}),
]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Receivers run on loopback: the operator allows exactly that address (and plain http to it)."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32", webhook_max_attempts=1,
    )


def webhook_admin(container: Container, tenant: str | None = None) -> dict[str, str]:
    if tenant is None:
        return caller_token(container, "admin", "secrets:write", identity="user:admin@acme.example",
                            roles=("tenant_admin",))
    return caller_token(container, "admin", "secrets:write", identity="user:admin@acme.example",
                        roles=("tenant_admin",), tenant=tenant)


@pytest.mark.parametrize(("method", "path", "accepted"), ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
async def test_every_endpoint_needs_its_scope_whatever_the_role(
    client: TestClient, container: Container, method: str, path: str, accepted: set[str]
) -> None:
    lacking = tuple(scope for scope in EVERY_SCOPE if scope not in accepted)
    headers = caller_token(container, *lacking, identity="user:root@acme.example",
                           roles=("tenant_admin", "partner_admin"))
    response = await client.request(method, path, headers=headers, json={})
    assert await error_of(response) == (403, "insufficient_scope")


async def test_another_tenants_webhook_and_its_deliveries_are_out_of_reach(
    client: TestClient, container: Container
) -> None:
    async with receiving() as receiver:
        created = await client.post(WH, headers=webhook_admin(container), json={
            "name": "mine", "url": receiver.url, "secret": SECRET, "events": ["secret.*"]})
        webhook = await created.json()
        assert created.status == 201, webhook
        written = await client.put("/v1/secrets/app/db", json={"data": {"v": 1}}, headers=webhook_admin(container))
        assert written.status == 201
        await eventually(lambda: len(receiver.received) == 1, message="the event was not delivered")
        base = f"{WH}/{webhook['id']}"

        async def finished() -> list[str]:
            listing = await (await client.get(f"{base}/deliveries", headers=webhook_admin(container))).json()
            return [d["id"] for d in listing["deliveries"] if d["status"] != "pending"]

        [delivery_id] = await eventually(finished, message="the delivery was not recorded")
        other = webhook_admin(container, tenant=OTHER_TENANT)
        assert await error_of(await client.post(f"{base}/deliveries/{delivery_id}/redeliver", headers=other)) == (
            404, "webhook_not_found")
        assert await error_of(await client.get(f"{base}/deliveries", headers=other)) == (404, "webhook_not_found")
        # the other tenant's own webhook does not open this one's deliveries either
        theirs = await (await client.post(WH, headers=other, json={
            "name": "theirs", "url": receiver.url, "secret": SECRET, "events": ["secret.*"]})).json()
        stolen = await client.post(f"{WH}/{theirs['id']}/deliveries/{delivery_id}/redeliver", headers=other)
        assert await error_of(stolen) == (404, "delivery_not_found")
        assert len(receiver.received) == 1


@pytest.mark.parametrize("host", [
    "\uff11\uff10.\uff10.\uff10.\uff11",  # full-width digits: 10.0.0.1 to the HTTP client
    "10\u30020\u30020\u30021",  # ideographic full stops
    "\uff11\uff16\uff19.\uff12\uff15\uff14.\uff11\uff16\uff19.\uff12\uff15\uff14",  # the metadata address
])
async def test_a_private_address_in_another_spelling_is_refused_at_creation(
    client: TestClient, container: Container, host: str
) -> None:
    response = await client.post(WH, headers=webhook_admin(container), json={
        "name": "sneaky", "url": f"https://{host}/hook", "secret": SECRET, "events": ["*"]})
    assert await error_of(response) == (422, "validation_error")
