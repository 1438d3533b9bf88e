"""Secret expiry over HTTP (docs/api-decisions.md): an expired secret reads as 404 ``secret_not_found`` with
``expired: true``; listings still show it with its ``expires_at``; ``?expiring_within=`` finds what expires soon
(the CLI's ``secrets expiring``); the scheduler sends ``notify_before`` notices and the expiry once each."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.conftest import GENEROUS_RATE_LIMITS
from tests.e2e.helpers import admin, error_document, error_of
from tests.helpers import eventually


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
                    rate_limits=GENEROUS_RATE_LIMITS, scheduler_interval="1s")


async def put(client: TestClient, container: Container, path: str, body: dict[str, object]) -> None:
    response = await client.put(f"/v1/secrets/{path}", json=body, headers=admin(container))
    assert response.status in (200, 201), await response.text()


async def test_an_expired_secret_reads_as_not_found_but_is_still_listed(
    client: TestClient, container: Container
) -> None:
    await put(client, container, "exp/short", {"data": {"v": "1"}, "options": {"expires_in": "2s"}})
    await put(client, container, "exp/long", {"data": {"v": "1"}, "options": {"expires_in": "90d"}})
    await put(client, container, "exp/never", {"data": {"v": "1"}})
    assert (await client.get("/v1/secrets/exp/short", headers=admin(container))).status == 200
    await asyncio.sleep(2.2)
    response = await client.get("/v1/secrets/exp/short", headers=admin(container))
    error = await error_document(response)
    assert response.status == 404 and error["code"] == "secret_not_found"
    assert error["details"]["expired"] is True and error["details"]["expired_at"].endswith("Z")
    assert await error_of(await client.get("/v1/secrets/exp/short?version=1", headers=admin(container))) == (
        404, "secret_not_found")
    batch = await (await client.post("/v1/secrets/batch", json={"paths": ["exp/short", "exp/long"]},
                                     headers=admin(container))).json()
    assert list(batch["secrets"]) == ["exp/long"] and batch["errors"]["exp/short"]["code"] == "secret_not_found"
    listing = await (await client.get("/v1/secrets?prefix=exp/", headers=admin(container))).json()
    assert [s["path"] for s in listing["secrets"]] == ["exp/long", "exp/never", "exp/short"]
    assert listing["secrets"][2]["expires_at"] is not None
    metadata = await client.get("/v1/secrets/exp/short/metadata", headers=admin(container))
    assert metadata.status == 200  # metadata stays readable: it says when the secret expired
    # A new write with a new expiry makes it readable again.
    await put(client, container, "exp/short", {"data": {"v": "2"}, "options": {"expires_in": "1h"}})
    assert (await (await client.get("/v1/secrets/exp/short", headers=admin(container))).json())["data"] == {"v": "2"}


async def test_expiring_within_finds_what_expires_soon(client: TestClient, container: Container) -> None:
    await put(client, container, "app/a", {"data": {"v": "1"}, "options": {"expires_in": "10d"}})
    await put(client, container, "app/b", {"data": {"v": "1"}, "options": {"expires_in": "60d"}})
    await put(client, container, "app/c", {"data": {"v": "1"}})
    await put(client, container, "other/d", {"data": {"v": "1"}, "options": {"expires_in": "1d"}})
    soon = await (await client.get("/v1/secrets?expiring_within=30d&prefix=app/", headers=admin(container))).json()
    assert [s["path"] for s in soon["secrets"]] == ["app/a"]
    everywhere = await (await client.get("/v1/secrets?expiring_within=90d", headers=admin(container))).json()
    assert [s["path"] for s in everywhere["secrets"]] == ["app/a", "app/b", "other/d"]
    for bad in ("30", "thirty-days", "0d"):
        response = await client.get(f"/v1/secrets?expiring_within={bad}", headers=admin(container))
        error = await error_document(response)
        assert (response.status, error["code"]) == (400, "invalid_duration"), bad
        assert error["details"]["field"] == "expiring_within"


async def test_the_scheduler_sends_each_notice_once(client: TestClient, container: Container) -> None:
    await put(client, container, "notify/me", {"data": {"v": "1"}, "metadata": {"notify_before": ["2s"]},
                                               "options": {"expires_in": "3s"}})

    async def kinds() -> list[str]:
        rows = await container.pool.fetch(
            """SELECT substring(e.topic from '[^.]+$') AS kind FROM scaivault_events e
               JOIN scaivault_secret_schedules s ON s.stream_id = e.originator_id
               WHERE s.path = 'notify/me' ORDER BY e.originator_version"""
        )
        return [row["kind"] for row in rows]

    await eventually(lambda: _ends_with_expired(kinds()), timeout=15, message="no expiry notice")
    await asyncio.sleep(1.5)  # more scans: nothing more is sent
    assert [k for k in await kinds() if k in ("ExpiryWarned", "Expired")] == ["ExpiryWarned", "Expired"]


async def _ends_with_expired(kinds: object) -> bool:
    assert asyncio.iscoroutine(kinds)
    return "Expired" in await kinds
