"""A server killed mid-delivery delivers after a restart (docs/webhooks.md, "Several servers"; docs/adr/0018): the
real ``scaivault serve`` sends an event to a receiver on loopback that takes the request in and never answers; the
server is SIGKILLed while the request is in the receiver's hands and started again; once its lease
(``SCAIVAULT_WEBHOOK_LEASE``) is over the delivery is sent again with the same event id (so the receiver can
de-duplicate), signed as the spec's reference receiver verifies it, and the next event of the same secret follows it,
never before it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from tests.e2e.conftest import GENEROUS_RATE_LIMITS, PARTNER, TENANT
from tests.e2e.helpers import SCAIVAULT, caller_token, free_port
from tests.helpers import eventually
from tests.webhook_receiver import Received, Receiver

SECRET = "whsec_crash_0123456789abcdef0123456789"
START_SECONDS = 30.0
# Short enough for the test, longer than a try may take (SCAIVAULT_WEBHOOK_TIMEOUT), as the server demands.
TIMEOUT_SECONDS, LEASE_SECONDS = "2", "3"
# Both servers are one deployment: the same public URL, so the tokens of its issuer are the same servers' tokens.
BASE_URL = "https://vault.crash.test"


@dataclass
class Server:
    process: asyncio.subprocess.Process
    url: str
    log: Path


Start = Callable[[], Awaitable[Server]]


@pytest.fixture
async def start_server(fresh_database: str, tmp_path: Path) -> AsyncIterator[Start]:
    """``scaivault serve --workers 1`` (one process: a SIGKILL takes all of it) on the fresh database, always with the
    same data directory (root key, token issuer), each time on a new port; stopped afterwards if still running."""
    servers: list[Server] = []

    async def start() -> Server:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCAIVAULT_WORKERS")},
            "DATABASE_URL": fresh_database, "SCAIVAULT_DATA_DIR": str(tmp_path / "data"),
            "BIND_ADDRESS": f"127.0.0.1:{port}", "BASE_URL": BASE_URL, "METRICS_BIND_ADDRESS": "off",
            "SCAIVAULT_RATE_LIMITS": GENEROUS_RATE_LIMITS, "SCAIVAULT_SHUTDOWN_TIMEOUT": "1",
            "SCAIVAULT_EGRESS_ALLOW": "127.0.0.1/32", "SCAIVAULT_WEBHOOK_TIMEOUT": TIMEOUT_SECONDS,
            "SCAIVAULT_WEBHOOK_LEASE": LEASE_SECONDS, "SCAIVAULT_WEBHOOK_RETRY_BASE": "0.1",
        }
        log = tmp_path / f"serve-{len(servers)}.log"
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                *SCAIVAULT, "serve", "--workers", "1", env=env, stdout=out, stderr=out
            )
        server = Server(process, f"http://127.0.0.1:{port}", log)
        servers.append(server)
        await eventually(
            lambda: "ScaiVault listening on" in log.read_text(errors="replace") or process.returncode is not None,
            timeout=START_SECONDS, message="the server did not start",
        )
        assert process.returncode is None, log.read_text(errors="replace")
        return server

    yield start
    for server in servers:
        if server.process.returncode is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.process.wait(), 15)
            except TimeoutError:
                server.process.kill()
                await server.process.wait()


@dataclass
class HoldingReceiver:
    """Records every request (``receiver.received``); the first is taken in whole and then left unanswered until
    ``release`` is set."""

    receiver: Receiver
    release: asyncio.Event


@contextlib.asynccontextmanager
async def holding_receiver() -> AsyncIterator[HoldingReceiver]:
    receiver = Receiver()
    release = asyncio.Event()

    async def handle(request: web.Request) -> web.StreamResponse:
        if receiver.received:
            return await receiver.handle(request)
        receiver.received.append(Received(dict(request.headers), await request.read(), time.monotonic()))
        await release.wait()
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("POST", "/hook", handle)
    async with TestServer(app, host="127.0.0.1") as server:
        receiver.url = str(server.make_url("/hook"))
        try:
            yield HoldingReceiver(receiver, release)
        finally:
            release.set()


@pytest.fixture
async def container(fresh_database: str, tmp_path: Path) -> AsyncIterator[Callable[[], Awaitable[Container]]]:
    """The test's own container on the servers' database and data directory, built once the first server has
    migrated it: it registers the tenant and issues tokens the servers accept."""
    made: list[Container] = []

    async def build() -> Container:
        settings = Settings(database_url=fresh_database, data_dir=tmp_path / "data", base_url=BASE_URL)
        built = await build_container(settings, migrate=False)
        made.append(built)
        await built.tenancy_commands.register_tenant(PARTNER, TENANT)
        return built

    yield build
    for built in made:
        await built.close()


async def request(server: Server, method: str, path: str, headers: dict[str, str], **body: object) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.request(
        method, server.url + path, json=body, headers=headers
    ) as response:
        return response.status, await response.json()


async def test_a_server_killed_mid_delivery_delivers_after_restart(
    start_server: Start, container: Callable[[], Awaitable[Container]], fresh_database: str
) -> None:
    first = await start_server()
    admin = caller_token(await container(), "admin", "secrets:write", "secrets:read",
                         identity="user:admin@acme.example", roles=("tenant_admin",))
    async with holding_receiver() as holding:
        receiver = holding.receiver
        status, webhook = await request(first, "POST", "/v1/webhooks", admin, name="crash", url=receiver.url,
                                        secret=SECRET, events=["secret.created", "secret.updated"])
        assert status == 201, webhook
        status, body = await request(first, "PUT", "/v1/secrets/app/db", admin, data={"password": "one"})
        assert status == 201, body
        await eventually(lambda: receiver.received, timeout=10, message="the first delivery did not arrive")

        # The request is in the receiver's hands, unanswered: the server dies without a word.
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        conn = await asyncpg.connect(fresh_database)
        try:
            row = await conn.fetchrow(
                "SELECT status, attempts, event_id FROM scaivault_webhook_deliveries WHERE target_id = $1",
                webhook["id"],
            )
        finally:
            await conn.close()
        held = receiver.received[0]
        assert (row["status"], row["attempts"], row["event_id"]) == (
            "pending", 0, held.headers["X-ScaiVault-Event-Id"])  # the try was never recorded

        second = await start_server()
        status, body = await request(second, "PUT", "/v1/secrets/app/db", admin, data={"password": "two"})
        assert status == 200, body
        await eventually(lambda: len(receiver.received) >= 3, timeout=15,
                         message="the delivery was not sent again after the restart")

    again, updated = receiver.received[1:3]
    assert len(receiver.received) == 3
    # The same event, under the same id: the receiver de-duplicates on it.
    assert again.headers["X-ScaiVault-Event-Id"] == held.headers["X-ScaiVault-Event-Id"]
    assert again.envelope == held.envelope
    assert again.envelope["event_id"] == held.headers["X-ScaiVault-Event-Id"]
    assert (again.envelope["event_type"], again.envelope["path"], again.envelope["data"]["version"]) == (
        "secret.created", "app/db", 1)
    # Signed as the spec's reference receiver checks (a fresh timestamp per try), and after it, the next write.
    assert held.verifies_with(SECRET) and again.verifies_with(SECRET) and updated.verifies_with(SECRET)
    assert (updated.envelope["event_type"], updated.envelope["data"]["new_version"]) == ("secret.updated", 2)
    assert updated.headers["X-ScaiVault-Event-Id"] != again.headers["X-ScaiVault-Event-Id"]
    assert updated.at >= again.at
