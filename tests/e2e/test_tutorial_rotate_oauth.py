"""The tutorial "Rotate an OAuth Credential End-to-End" (spec tutorials/rotate-oauth-credentials) played through over
HTTP, with its own paths and bodies where the page gives them:

1. store the Salesforce credential at ``integrations/salesforce/oauth`` (the page's body) and confirm it;
2. stand up the rotation policy (90 days, 48 h grace) with the webhook of the handler, and attach the secret (the
   page is cut off here; the bodies follow api-guides/rotation and reference/rotation);
3. the handler, a real HTTP receiver on loopback that verifies every delivery as the spec's reference receiver does
   (advanced/webhook-signatures), gets ``rotation.due``, mints a new credential (the Salesforce stand-in) and writes
   it back with ``PUT``;
4. the consumer (the "reporting service", its own webhook for ``secret.rotated``) invalidates its cached lookup and
   reads the new value; the previous version stays readable within the grace period, and the policy's history shows
   the rotation.

The rotation is made due either by ``POST .../rotate`` (the page's ``secrets:rotate`` prerequisite) or by the
in-server scheduler with a short interval (scanning every second)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.conftest import GENEROUS_RATE_LIMITS
from tests.e2e.helpers import caller_token
from tests.helpers import eventually

PATH = "integrations/salesforce/oauth"
# The page's prerequisites: these scopes, admin for the policy and the webhook.
TUTORIAL_SCOPES = ("secrets:read", "secrets:write", "secrets:rotate", "admin")
HANDLER_SECRET = "whsec_handler_0123456789abcdef01234567"
CONSUMER_SECRET = "whsec_consumer_0123456789abcdef0123456"
MAX_AGE_SECONDS = 300


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The handler and the consumer listen on loopback (allowed, as a tunnel would be in development); the scheduler
    scans every second."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32", scheduler_interval="1s",
    )


def tutorial_token(container: Container) -> dict[str, str]:
    """``Authorization: Bearer $TOKEN``: the one token every step of the page uses."""
    return caller_token(container, *TUTORIAL_SCOPES, identity="sa:salesforce-rotator", roles=("tenant_admin",))


def verified_event(request_headers: Any, raw: bytes, secret: str) -> tuple[int, dict[str, Any] | None]:
    """The spec's reference receiver: 400 without a signature, 401 when stale or wrong, else the parsed event."""
    timestamp = request_headers.get("X-ScaiVault-Timestamp")
    signature = request_headers.get("X-ScaiVault-Signature")
    if not timestamp or not signature or not signature.startswith("sha256="):
        return 400, None
    if abs(time.time() - int(timestamp)) > MAX_AGE_SECONDS:
        return 401, None
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.removeprefix("sha256=")):
        return 401, None
    return 200, orjson.loads(raw)


@dataclass
class Integration:
    """The tutorial's two services, behind one loopback server: the webhook handler (``/handler``) that rotates at
    Salesforce and writes back, and the reporting service (``/consumer``) with its cached lookup."""

    client: TestClient
    headers: dict[str, str]
    base_url: str = ""
    handler_events: list[dict[str, Any]] = field(default_factory=list)
    consumer_events: list[dict[str, Any]] = field(default_factory=list)
    refused: int = 0
    minted: list[dict[str, str]] = field(default_factory=list)
    written: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    cache: dict[str, dict[str, Any]] = field(default_factory=dict)
    consumer_reads: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def handler(self, request: web.Request) -> web.Response:
        status, event = verified_event(request.headers, await request.read(), HANDLER_SECRET)
        if event is None:
            self.refused += 1
            return web.json_response({"ok": False}, status=status)
        self.handler_events.append(event)
        if event["event_type"] == "rotation.due" and not self.minted:
            self._later(self._rotate(event["path"]))  # answer at once; rotate in the background
        return web.json_response({"ok": True})

    async def _rotate(self, path: str) -> None:
        credential = {"client_id": "3MVG9" + secrets.token_hex(8), "client_secret": secrets.token_hex(32)}
        self.minted.append(credential)  # what Salesforce's admin API would answer
        response = await self.client.put(f"/v1/secrets/{path}", json={"data": credential, "secret_type": "json"},
                                         headers=self.headers)
        self.written.append((response.status, await response.json()))

    async def consumer(self, request: web.Request) -> web.Response:
        status, event = verified_event(request.headers, await request.read(), CONSUMER_SECRET)
        if event is None:
            self.refused += 1
            return web.json_response({"ok": False}, status=status)
        self.consumer_events.append(event)
        if event["event_type"] == "secret.rotated":
            self.cache.pop(event["path"], None)  # invalidate; the next lookup reads the new version
            self._later(self._look_up(event["path"]))
        return web.json_response({"ok": True})

    async def lookup(self, path: str) -> dict[str, Any]:
        """The reporting service's cached lookup."""
        if path not in self.cache:
            response = await self.client.get(f"/v1/secrets/{path}", headers=self.headers)
            assert response.status == 200
            self.cache[path] = await response.json()
        return self.cache[path]

    async def _look_up(self, path: str) -> None:
        self.consumer_reads.append(await self.lookup(path))

    def _later(self, work: Any) -> None:
        task = asyncio.create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


@pytest.fixture
async def integration(client: TestClient, container: Container) -> AsyncIterator[Integration]:
    services = Integration(client, tutorial_token(container))
    app = web.Application()
    app.router.add_post("/handler", services.handler)
    app.router.add_post("/consumer", services.consumer)
    async with TestServer(app, host="127.0.0.1") as server:
        services.base_url = str(server.make_url("")).rstrip("/")
        yield services
        await asyncio.gather(*services.tasks, return_exceptions=True)


async def json_of(response: Any, status: int) -> Any:
    body = await response.json()
    assert response.status == status, body
    return body


# The policy of step 2: every 90 days with the 48 h grace; for the scheduler's run, an interval it reaches at once.
BY_HAND = {"name": "salesforce-oauth", "description": "Salesforce OAuth client, quarterly", "interval": "90d",
           "grace_period": "48h", "warn_before": "7d,1d", "auto_generate": False}
BY_SCHEDULER = {**BY_HAND, "interval": "2s", "warn_before": None}


@pytest.mark.parametrize("trigger", ["rotate_now", "scheduler"])
async def test_rotate_an_oauth_credential_end_to_end(
    client: TestClient, container: Container, integration: Integration, trigger: str
) -> None:
    headers = tutorial_token(container)

    # Step 1: store the current credential, then confirm version and tags.
    first = {"client_id": "3MVG9initial", "client_secret": "initial-" + secrets.token_hex(16)}
    await json_of(await client.put(f"/v1/secrets/{PATH}", headers=headers, json={
        "data": first,
        "secret_type": "json",
        "metadata": {
            "description": "Salesforce connected app for the reporting service",
            "tags": ["salesforce", "oauth", "production"],
            "owner": "team:integrations",
        },
        "options": {"max_versions": 10},
    }), 201)
    confirmed = await json_of(await client.get(f"/v1/secrets/{PATH}", headers=headers), 200)
    assert confirmed["version"] == 1 and confirmed["metadata"]["tags"] == ["salesforce", "oauth", "production"]
    assert (await integration.lookup(PATH))["data"] == first  # the reporting service has it cached

    # Step 2: the handler's webhook, the consumer's, the rotation policy naming the handler, the secret attached.
    handler = await json_of(await client.post("/v1/webhooks", headers=headers, json={
        "name": "salesforce-rotation-handler", "url": integration.base_url + "/handler", "secret": HANDLER_SECRET,
        "events": ["rotation.due"],
    }), 201)
    await json_of(await client.post("/v1/webhooks", headers=headers, json={
        "name": "reporting-service", "url": integration.base_url + "/consumer", "secret": CONSUMER_SECRET,
        "events": ["secret.rotated"], "filters": {"path_prefix": "integrations/salesforce/"},
    }), 201)
    body = {key: value for key, value in (BY_HAND if trigger == "rotate_now" else BY_SCHEDULER).items()
            if value is not None}
    policy = await json_of(await client.post("/v1/rotation/policies", headers=headers,
                                             json={**body, "webhook_ids": [handler["id"]]}), 201)
    assert policy["id"] == "rot_salesforce-oauth" and policy["webhook_ids"] == [handler["id"]]
    assert (policy["grace_period"], policy["auto_generate"]) == ("48h", False)
    assignment = await json_of(await client.post(f"/v1/rotation/policies/{policy['id']}/secrets", headers=headers,
                                                 json={"secret_path": PATH}), 201)
    assert assignment["secret_path"] == PATH and assignment["rotation_policy_id"] == policy["id"]

    # The rotation comes due: asked for now, or reached by the scheduler.
    if trigger == "rotate_now":
        [pending] = await json_of(await client.post(f"/v1/rotation/policies/{policy['id']}/rotate", headers=headers,
                                                    json={"secret_paths": [PATH]}), 200)
        assert (pending["status"], pending["secret_path"], pending["old_version"]) == ("pending", PATH, None)

    # Step 3: the handler got rotation.due, minted a new credential at "Salesforce" and PUT it: version 2.
    await eventually(lambda: integration.written, timeout=20, message="the handler did not rotate")
    [(status, written)] = integration.written
    assert status == 200 and written["version"] == 2
    if trigger == "scheduler":  # a 2 s cycle would come due again while the test looks: pause the policy
        await json_of(await client.post(f"/v1/rotation/policies/{policy['id']}/disable", headers=headers), 200)
    due = integration.handler_events[0]
    assert (due["event_type"], due["path"], due["tenant_id"]) == ("rotation.due", PATH, "tnt_acme_prod")
    assert due["data"]["due_now"] is True and due["data"]["rotation_policy_id"] == policy["id"]
    assert due["identity_id"] == ("sa:salesforce-rotator" if trigger == "rotate_now" else "system:rotation-scheduler")
    [minted] = integration.minted

    # Step 4: the consumer got secret.rotated, dropped its cached copy and read the new credential.
    await eventually(lambda: integration.consumer_reads, timeout=15, message="the consumer did not re-read")
    [rotated] = integration.consumer_events
    assert (rotated["event_type"], rotated["path"]) == ("secret.rotated", PATH)
    assert {k: rotated["data"][k] for k in ("old_version", "new_version", "rotation_policy_id", "auto_generated")} == {
        "old_version": 1, "new_version": 2, "rotation_policy_id": policy["id"], "auto_generated": False}
    assert rotated["data"]["rotation_policy_name"] == "salesforce-oauth"
    [reread] = integration.consumer_reads
    assert reread["version"] == 2 and reread["data"] == minted
    assert reread["metadata"]["tags"] == ["salesforce", "oauth", "production"]  # a PUT without metadata keeps it

    # The handler, named by the policy, also hears that the rotation completed (webhook_ids: "the webhooks that
    # receive rotation events"), although it asked only for rotation.due; once each, and nothing else.
    await eventually(lambda: len(integration.handler_events) >= 2, timeout=15,
                     message="rotation.completed did not reach the policy's webhook")
    await asyncio.sleep(0.3)
    assert [e["event_type"] for e in integration.handler_events] == ["rotation.due", "rotation.completed"]
    completed = integration.handler_events[1]
    assert completed["data"]["new_version"] == 2 and completed["data"]["grace_period_ends"] == (
        rotated["data"]["grace_period_ends"])
    assert integration.refused == 0

    # Within the grace period the previous version is still readable, for consumers that have not caught up.
    old = await json_of(await client.get(f"/v1/secrets/{PATH}?version=1", headers=headers), 200)
    assert old["version"] == 1 and old["data"] == first

    # The history shows the rotation (reading it takes audit:read, which the page's token does not have).
    assert (await client.get(f"/v1/rotation/policies/{policy['id']}/history", headers=headers)).status == 403
    auditor = caller_token(container, "audit:read", "secrets:list", identity="user:auditor@acme.example",
                           roles=("tenant_admin",))
    history = await json_of(await client.get(f"/v1/rotation/policies/{policy['id']}/history", headers=auditor), 200)
    [entry] = history["data"]
    assert {k: entry[k] for k in ("secret_path", "status", "old_version", "new_version", "auto_generated")} == {
        "secret_path": PATH, "status": "success", "old_version": 1, "new_version": 2, "auto_generated": False}
    assert entry["grace_period_ends"] == rotated["data"]["grace_period_ends"]
    versions = await json_of(await client.get(f"/v1/secrets/{PATH}/versions", headers=auditor), 200)
    assert [(v["version"], v["readable_until"] == rotated["data"]["grace_period_ends"])
            for v in versions["versions"]] == [(2, False), (1, True)]
