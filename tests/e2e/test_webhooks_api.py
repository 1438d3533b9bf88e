"""/v1/webhooks over HTTP (spec reference/webhooks, advanced/webhook-signatures): every endpoint, bad input, the
signing secret never shown, test sends, real events delivered to a real receiver, deliveries and redelivery."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from projections.maintenance.rebuild import Rebuilder
from scaivault.bootstrap import Container, read_models
from scaivault.config import Settings
from scaivault.serialization import dumps
from tests.e2e.conftest import FOREIGN_TENANT, GENEROUS_RATE_LIMITS, OTHER_PARTNER, OTHER_TENANT, TENANT
from tests.e2e.helpers import caller_token, error_document, error_of
from tests.helpers import eventually
from tests.webhook_receiver import Receiver, receiving

SECRET = "whsec_first_0123456789abcdef0123456789"
NEW_SECRET = "whsec_second_0123456789abcdef012345678"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Receivers run on loopback: the operator allows it (and plain http to it)."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32", webhook_retry_base_seconds=0.05,
        webhook_retry_max_seconds=0.2, webhook_max_attempts=3,
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as receiver:
        yield receiver


def webhook_admin(container: Container, tenant: str = TENANT, partner: str = "ptn_acme") -> dict[str, str]:
    return caller_token(container, "admin", "secrets:write", identity="user:admin@acme.example", tenant=tenant,
                        partner=partner, roles=("tenant_admin",))


async def create_webhook(client: TestClient, container: Container, url: str, **fields: Any) -> dict[str, Any]:
    body = {"name": "alerts", "url": url, "secret": SECRET, "events": ["secret.created", "secret.updated"], **fields}
    response = await client.post("/v1/webhooks", json=body, headers=webhook_admin(container))
    document = await response.json()
    assert response.status == 201, document
    return document


async def test_create_get_list_patch_delete(client: TestClient, container: Container, receiver: Receiver) -> None:
    headers = webhook_admin(container)
    created = await create_webhook(client, container, receiver.url, filters={"path_prefix": "prod/"})
    webhook_id = created["id"]
    assert webhook_id.startswith("wh_")
    assert (created["name"], created["url"], created["events"], created["enabled"], created["status"]) == (
        "alerts", receiver.url, ["secret.created", "secret.updated"], True, "healthy")
    assert created["filters"] == {"path_prefix": ["prod/"]}
    assert created["statistics"] == {"deliveries_24h": 0, "success_rate_24h": None, "avg_latency_ms": None}
    assert created["last_delivery"] is None and created["previous_secret_expires_at"] is None
    assert created["created_at"].endswith("Z")

    listed = await (await client.get("/v1/webhooks", headers=headers)).json()
    assert [w["id"] for w in listed["webhooks"]] == [webhook_id] and listed["has_more"] is False
    assert listed["webhooks"][0]["status"] == "healthy" and listed["cursor"] is None

    patched = await client.patch(f"/v1/webhooks/{webhook_id}", headers=headers,
                                 json={"name": "renamed", "enabled": False, "filters": None, "events": ["secret.*"]})
    body = await patched.json()
    assert patched.status == 200, body
    assert (body["name"], body["enabled"], body["filters"], body["events"]) == ("renamed", False, {}, ["secret.*"])
    assert body["url"] == receiver.url

    deleted = await client.delete(f"/v1/webhooks/{webhook_id}", headers=headers)
    assert (deleted.status, await deleted.json()) == (200, {"id": webhook_id, "deleted": True})
    assert await error_of(await client.get(f"/v1/webhooks/{webhook_id}", headers=headers)) == (
        404, "webhook_not_found")
    assert await error_of(await client.delete(f"/v1/webhooks/{webhook_id}", headers=headers)) == (
        404, "webhook_not_found")


async def test_listing_pages_with_a_cursor(client: TestClient, container: Container, receiver: Receiver) -> None:
    ids = [(await create_webhook(client, container, receiver.url, name=f"hook-{i}"))["id"] for i in range(3)]
    headers = webhook_admin(container)
    first = await (await client.get("/v1/webhooks?limit=2", headers=headers)).json()
    assert [w["id"] for w in first["webhooks"]] == ids[:2] and first["has_more"] is True
    second = await (await client.get(f"/v1/webhooks?limit=2&cursor={first['cursor']}", headers=headers)).json()
    assert [w["id"] for w in second["webhooks"]] == ids[2:] and second["has_more"] is False
    assert await error_of(await client.get("/v1/webhooks?cursor=bogus", headers=headers)) == (400, "invalid_cursor")
    assert await error_of(await client.get("/v1/webhooks?limit=0", headers=headers)) == (400, "invalid_request")


@pytest.mark.parametrize(("change", "status", "code", "field"), [
    ({"url": "http://hooks.example.com/x"}, 422, "validation_error", "url"),
    ({"url": "https://10.1.2.3/x"}, 422, "validation_error", "url"),
    ({"url": "https://user:pw@hooks.example.com/x"}, 422, "validation_error", "url"),
    ({"secret": "too-short"}, 422, "validation_error", "secret"),
    ({"events": []}, 422, "validation_error", "events"),
    ({"events": ["secret.nope"]}, 422, "validation_error", "events.0"),
    ({"events": "secret.created"}, 422, "validation_error", "events"),
    ({"filters": {"colour": "red"}}, 422, "validation_error", "filters.colour"),
    ({"filters": {"tags": "prod"}}, 422, "validation_error", "filters.tags"),
    ({"enabled": "yes"}, 422, "validation_error", "enabled"),
    ({"name": ""}, 422, "validation_error", "name"),
    ({"unknown": 1}, 422, "validation_error", "unknown"),
    ({"name": None}, 422, "validation_error", "name"),
])
async def test_bad_creations_get_the_error_envelope(
    client: TestClient, container: Container, change: dict[str, Any], status: int, code: str, field: str
) -> None:
    body = {"name": "alerts", "url": "https://hooks.example.com/x", "secret": SECRET, "events": ["*"], **change}
    response = await client.post("/v1/webhooks", json=body, headers=webhook_admin(container))
    error = await error_document(response)
    assert (response.status, error["code"]) == (status, code)
    assert error["details"]["fields"][0]["field"] == field
    assert SECRET not in str(error) and "too-short" not in str(error)


async def test_malformed_bodies_paths_and_queries(client: TestClient, container: Container,
                                                  receiver: Receiver) -> None:
    headers = webhook_admin(container)
    bad_json = await client.post("/v1/webhooks", data=b"{nope", headers={**headers, "Content-Type": "application/json"})
    assert await error_of(bad_json) == (400, "invalid_request")
    assert await error_of(await client.post("/v1/webhooks", json=[1], headers=headers)) == (400, "invalid_request")
    missing = await client.post("/v1/webhooks", json={"name": "x"}, headers=headers)
    assert await error_of(missing) == (422, "validation_error")
    assert await error_of(await client.get("/v1/webhooks/wh_nope", headers=headers)) == (404, "webhook_not_found")
    assert await error_of(await client.get("/v1/webhooks/%00", headers=headers)) == (404, "webhook_not_found")
    assert await error_of(await client.get("/v1/webhooks/" + "x" * 300, headers=headers)) == (
        404, "webhook_not_found")
    webhook = await create_webhook(client, container, receiver.url)
    base = f"/v1/webhooks/{webhook['id']}"
    assert await error_of(await client.patch(base, json={"previous_secret_ttl": "24h"}, headers=headers)) == (
        422, "validation_error")
    assert await error_of(await client.patch(base, json={"secret": NEW_SECRET, "previous_secret_ttl": "soon"},
                                             headers=headers)) == (400, "invalid_duration")
    assert await error_of(await client.patch(base, json={"url": "ftp://x"}, headers=headers)) == (
        422, "validation_error")
    assert await error_of(await client.get(base + "/deliveries?status=maybe", headers=headers)) == (
        400, "invalid_request")
    assert await error_of(await client.get(base + "/deliveries?cursor=%%%", headers=headers)) == (
        400, "invalid_cursor")
    assert await error_of(await client.post(base + "/deliveries/del_nope/redeliver", headers=headers)) == (
        404, "delivery_not_found")


async def test_admin_scope_and_tenant_isolation(client: TestClient, container: Container, receiver: Receiver) -> None:
    webhook = await create_webhook(client, container, receiver.url)
    no_admin = caller_token(container, "secrets:read", "secrets:write", roles=("tenant_admin",))
    for method, path in [("GET", "/v1/webhooks"), ("POST", "/v1/webhooks"), ("GET", f"/v1/webhooks/{webhook['id']}"),
                         ("POST", f"/v1/webhooks/{webhook['id']}/test")]:
        response = await client.request(method, path, headers=no_admin, json={})
        assert await error_of(response) == (403, "insufficient_scope")
    other = webhook_admin(container, tenant=OTHER_TENANT)
    assert (await (await client.get("/v1/webhooks", headers=other)).json())["webhooks"] == []
    for method, path in [("GET", ""), ("PATCH", ""), ("DELETE", ""), ("POST", "/test"), ("GET", "/deliveries")]:
        response = await client.request(method, f"/v1/webhooks/{webhook['id']}{path}", headers=other,
                                        json={"name": "stolen"})
        assert await error_of(response) == (404, "webhook_not_found")
    foreign = webhook_admin(container, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    assert await error_of(await client.get(f"/v1/t/{TENANT}/webhooks", headers=foreign)) == (
        403, "tenant_access_denied")


async def test_the_signing_secret_is_never_shown_nor_stored_in_plaintext(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    webhook = await create_webhook(client, container, receiver.url)
    base = f"/v1/webhooks/{webhook['id']}"
    answers = [webhook]
    answers.append(await (await client.patch(base, json={"secret": NEW_SECRET}, headers=headers)).json())
    answers.append(await (await client.get(base, headers=headers)).json())
    answers.append(await (await client.get("/v1/webhooks", headers=headers)).json())
    answers.append(await (await client.post(base + "/test", headers=headers)).json())
    answers.append(await (await client.get(base + "/deliveries", headers=headers)).json())
    shown = dumps(answers)
    assert SECRET.encode() not in shown and NEW_SECRET.encode() not in shown and b"secret_ciphertext" not in shown
    async with container.pool.acquire() as conn:
        states = await conn.fetch("SELECT state FROM scaivault_events")
        tables = await conn.fetch("SELECT to_jsonb(w)::text AS row FROM scaivault_webhooks w")
    for raw in [bytes(r["state"]) for r in states] + [r["row"].encode() for r in tables]:
        assert SECRET.encode() not in raw and NEW_SECRET.encode() not in raw


async def test_a_test_send_is_signed_recorded_and_answered(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    webhook = await create_webhook(client, container, receiver.url)
    response = await client.post(f"/v1/webhooks/{webhook['id']}/test", headers=headers)
    result = await response.json()
    assert response.status == 200, result
    assert result["delivery_id"].startswith("del_") and result["status"] == "success"
    assert result["response_code"] == 200 and isinstance(result["duration_ms"], int)
    [sent] = receiver.received
    assert sent.verifies_with(SECRET) and not sent.verifies_with(NEW_SECRET)
    envelope = sent.envelope
    assert envelope["event_type"] == "webhook.test" == sent.headers["X-ScaiVault-Event-Type"]
    assert envelope["event_id"] == sent.headers["X-ScaiVault-Event-Id"] and envelope["event_id"].startswith("evt_")
    assert envelope["tenant_id"] == TENANT and envelope["data"]["webhook_id"] == webhook["id"]
    assert sent.headers["User-Agent"] == "ScaiVault-Webhook/1.0"
    assert envelope["request_id"] == response.headers["X-Request-ID"]

    receiver.answer = lambda n: 503
    failed = await (await client.post(f"/v1/webhooks/{webhook['id']}/test", headers=headers)).json()
    assert (failed["status"], failed["response_code"]) == ("failed", 503) and "503" in failed["error"]
    listed = await (await client.get(f"/v1/webhooks/{webhook['id']}/deliveries", headers=headers)).json()
    assert [(d["id"], d["status"], d["is_test"], d["attempts"]) for d in listed["deliveries"]] == [
        (failed["delivery_id"], "failed", True, 1), (result["delivery_id"], "success", True, 1)]
    shown = await (await client.get(f"/v1/webhooks/{webhook['id']}", headers=headers)).json()
    assert shown["last_delivery"]["id"] == failed["delivery_id"]
    assert shown["statistics"]["deliveries_24h"] == 0  # test sends are not traffic
    redeliver = await client.post(
        f"/v1/webhooks/{webhook['id']}/deliveries/{result['delivery_id']}/redeliver", headers=headers)
    assert await error_of(redeliver) == (400, "invalid_request")


async def test_an_unreachable_receiver_is_a_failed_test_not_an_error(client: TestClient, container: Container) -> None:
    """(The egress guard's refusals when sending: tests/integration/test_webhook_dispatcher.py.)"""
    webhook = await create_webhook(client, container, "https://localhost:1/hook")  # a name: checked when sending
    response = await client.post(f"/v1/webhooks/{webhook['id']}/test", headers=webhook_admin(container))
    result = await response.json()
    assert response.status == 200
    assert result["status"] == "failed" and result["response_code"] is None and result["error"]


async def test_events_are_delivered_filtered_listed_and_redelivered(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    webhook = await create_webhook(client, container, receiver.url, filters={"path_prefix": ["prod/"]})
    for path in ("dev/ignored", "prod/db/password"):
        response = await client.put(f"/v1/secrets/{path}", json={"data": {"v": 1}}, headers=headers)
        assert response.status == 201
    await eventually(lambda: len(receiver.received) >= 1, message="the event was not delivered")
    [sent] = receiver.received
    assert sent.verifies_with(SECRET)
    envelope = sent.envelope
    assert (envelope["event_type"], envelope["path"], envelope["tenant_id"]) == (
        "secret.created", "prod/db/password", TENANT)
    assert envelope["data"]["version"] == 1

    base = f"/v1/webhooks/{webhook['id']}"

    async def delivered() -> dict[str, Any] | None:
        listing = await (await client.get(base + "/deliveries?status=success", headers=headers)).json()
        return listing if listing["deliveries"] else None

    listing = await eventually(delivered, message="the delivery was not recorded")
    [delivery] = listing["deliveries"]
    assert (delivery["event_id"], delivery["event_type"], delivery["attempts"], delivery["response_code"]) == (
        envelope["event_id"], "secret.created", 1, 200)
    assert delivery["next_attempt_at"] is None and delivery["error"] is None and delivery["is_test"] is False
    assert (await (await client.get(base + "/deliveries?status=pending", headers=headers)).json())["deliveries"] == []
    shown = await (await client.get(base, headers=headers)).json()
    assert shown["statistics"]["deliveries_24h"] == 1 and shown["statistics"]["success_rate_24h"] == 1.0
    assert shown["status"] == "healthy" and shown["last_delivery"]["id"] == delivery["id"]

    again = await client.post(base + f"/deliveries/{delivery['id']}/redeliver", headers=headers)
    body = await again.json()
    assert again.status == 202 and body["status"] == "pending" and body["attempts"] == 0
    await eventually(lambda: len(receiver.received) == 2, message="the redelivery was not sent")
    assert receiver.received[1].envelope == envelope and receiver.received[1].verifies_with(SECRET)


async def test_rotation_signs_with_the_new_secret_and_shows_the_overlap(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    webhook = await create_webhook(client, container, receiver.url)
    base = f"/v1/webhooks/{webhook['id']}"
    before = datetime.now(UTC)
    rotated = await (await client.patch(base, json={"secret": NEW_SECRET, "previous_secret_ttl": "2h"},
                                        headers=headers)).json()
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"].replace("Z", "+00:00"))
    assert before + timedelta(hours=2) <= expires <= datetime.now(UTC) + timedelta(hours=2)
    await client.post(base + "/test", headers=headers)
    assert receiver.received[-1].verifies_with(NEW_SECRET) and not receiver.received[-1].verifies_with(SECRET)

    explicit = await (await client.patch(base, headers=headers, json={
        "secret": SECRET, "previous_secret": "whsec_explicit_previous_0123456789"})).json()
    expires = datetime.fromisoformat(explicit["previous_secret_expires_at"].replace("Z", "+00:00"))
    assert expires > datetime.now(UTC) + timedelta(hours=23)  # 24 h unless told
    await client.post(base + "/test", headers=headers)
    assert receiver.received[-1].verifies_with(SECRET)


async def test_housekeeping_destroys_a_previous_secret_once_its_overlap_ended(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    ending = await create_webhook(client, container, receiver.url)
    lasting = await create_webhook(client, container, receiver.url, name="lasting")
    rotated = await (await client.patch(f"/v1/webhooks/{ending['id']}", headers=headers,
                                        json={"secret": NEW_SECRET, "previous_secret_ttl": "1s"})).json()
    await client.patch(f"/v1/webhooks/{lasting['id']}", headers=headers,
                       json={"secret": NEW_SECRET, "previous_secret_ttl": "1h"})
    keys = """SELECT webhook_id, secret_key_id, previous_secret_key_id,
                     previous_secret_ciphertext IS NOT NULL AS sealed, previous_secret_expires_at,
                     EXISTS (SELECT 1 FROM scaivault_data_keys WHERE id = secret_key_id) AS current_kept,
                     EXISTS (SELECT 1 FROM scaivault_data_keys WHERE id = previous_secret_key_id) AS previous_kept
              FROM scaivault_webhooks WHERE webhook_id = $1"""
    before = await container.pool.fetchrow(keys, ending["id"])
    assert before["sealed"] and before["current_kept"] and before["previous_kept"]
    expires = datetime.fromisoformat(rotated["previous_secret_expires_at"].replace("Z", "+00:00"))
    await asyncio.sleep(max(0.0, (expires - datetime.now(UTC)).total_seconds()) + 0.05)

    [housekeeping] = [job for job in container.background_jobs() if job.name == "housekeeping"]
    await housekeeping.start()
    try:
        async def forgotten() -> bool:
            row = await container.pool.fetchrow(keys, ending["id"])
            return row["previous_secret_key_id"] is None

        await eventually(forgotten, message="housekeeping did not forget the previous secret")
    finally:
        await housekeeping.stop()
    after = await container.pool.fetchrow(keys, ending["id"])
    assert (after["sealed"], after["previous_secret_expires_at"], after["current_kept"]) == (False, None, True)
    assert not await container.pool.fetchval("SELECT EXISTS (SELECT 1 FROM scaivault_data_keys WHERE id = $1)",
                                             before["previous_secret_key_id"])
    untouched = await container.pool.fetchrow(keys, lasting["id"])
    assert untouched["sealed"] and untouched["previous_kept"]  # its overlap still runs
    # What the forgetting was is in the log; the rebuilt read model agrees with the live one.
    state = await container.pool.fetchval(
        "SELECT state FROM scaivault_events WHERE topic = 'scaivault.domain.webhooks:Webhook.PreviousSecretExpired'"
    )
    assert b'"system:housekeeping"' in bytes(state) and NEW_SECRET.encode() not in bytes(state)
    [model] = [m for m in read_models(container.keyring) if m.name == "webhooks"]
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    assert (await rebuilder.verify(model))["identical"]
    # The webhook signs with its current secret as before, and rotates again as usual.
    shown = await (await client.get(f"/v1/webhooks/{ending['id']}", headers=headers)).json()
    assert shown["previous_secret_expires_at"] is None
    await client.post(f"/v1/webhooks/{ending['id']}/test", headers=headers)
    assert receiver.received[-1].verifies_with(NEW_SECRET)
    again = await client.patch(f"/v1/webhooks/{ending['id']}", headers=headers, json={"secret": SECRET})
    assert again.status == 200 and (await again.json())["previous_secret_expires_at"] is not None
    await client.post(f"/v1/webhooks/{ending['id']}/test", headers=headers)
    assert receiver.received[-1].verifies_with(SECRET)


async def test_routes_are_also_served_under_the_tenant_prefix(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    partner_admin = caller_token(container, "admin", identity="user:pa@acme.example", roles=("partner_admin",))
    response = await client.post(f"/v1/t/{OTHER_TENANT}/webhooks", headers=partner_admin, json={
        "name": "dev", "url": receiver.url, "secret": SECRET, "events": ["*"]})
    assert response.status == 201
    webhook = await response.json()
    listed = await (await client.get(f"/v1/t/{OTHER_TENANT}/webhooks", headers=partner_admin)).json()
    assert [w["id"] for w in listed["webhooks"]] == [webhook["id"]]
    assert (await (await client.get("/v1/webhooks", headers=webhook_admin(container))).json())["webhooks"] == []


async def test_the_read_model_rebuilds_identical_to_the_live_one(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    headers = webhook_admin(container)
    kept = await create_webhook(client, container, receiver.url, filters={"tags": ["pci"]})
    gone = await create_webhook(client, container, receiver.url, name="gone")
    await client.patch(f"/v1/webhooks/{kept['id']}", headers=headers, json={"secret": NEW_SECRET, "enabled": False})
    await client.delete(f"/v1/webhooks/{gone['id']}", headers=headers)
    [model] = [m for m in read_models(container.keyring) if m.name == "webhooks"]
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    assert (await rebuilder.verify(model))["identical"]
    await container.pool.execute("UPDATE scaivault_webhooks SET name = 'drifted'")
    assert not (await rebuilder.verify(model))["identical"]
