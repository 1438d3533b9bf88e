"""``scaivault serve --workers N`` as operators run it: a supervisor and real worker processes behind one port, on a
database of the test's own that the supervisor migrates from nothing (docs/adr/0016).

A TCP connection stays with the worker that accepted it, so a client session of one kept-alive connection talks to
one worker, which ``/v1/health/detailed`` names. The test process builds a container of its own on the same database
and data directory (the same root key and token issuer) to register tenants, issue tokens and revoke them, as the
CLI would."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import orjson
import pytest

from projections.runner import runner_key
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from tests.e2e.conftest import ALL_SECRET_SCOPES, GENEROUS_RATE_LIMITS, PARTNER, TENANT
from tests.e2e.helpers import POLICY_SCOPES, SCAIVAULT, caller_token, free_port
from tests.helpers import eventually

PROJECTIONS = ("audit_log", "event_index")
START_SECONDS = 60.0


# ---- processes, as /proc shows them --------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state, ppid, ...); None once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> set[int]:
    """The live processes whose parent is ``pid``."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.add(int(entry))
    return found


# ---- a server of the test's own ------------------------------------------------------------------------------------

@dataclass
class Server:
    process: asyncio.subprocess.Process
    port: int
    output_file: Path
    settings: Settings
    container: Container | None = None
    sessions: list[aiohttp.ClientSession] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.output_file.read_text(errors="replace")

    def headers(self, *scopes: str, identity: str = "user:op@acme.example",
                roles: tuple[str, ...] = ("super_admin", "tenant_admin")) -> dict[str, str]:
        """A token of the server's own issuer; by default an operator's (detailed health) and tenant admin's."""
        assert self.container is not None
        return caller_token(self.container, *(scopes or ("admin", *ALL_SECRET_SCOPES, *POLICY_SCOPES)),
                            identity=identity, roles=roles)

    def session(self) -> aiohttp.ClientSession:
        """A client with one connection, kept alive: every request goes to the worker that accepted it."""
        session = aiohttp.ClientSession(self.url, connector=aiohttp.TCPConnector(limit=1))
        self.sessions.append(session)
        return session

    async def worker_of(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        status, body, _ = await call(session, "GET", "/v1/health/detailed", headers=self.headers())
        assert status == 200, body
        return dict(body["worker"])

    async def one_session_per_worker(self, count: int = 2) -> dict[int, aiohttp.ClientSession]:
        """Sessions until each of ``count`` workers has one (the kernel hashes new connections across them)."""
        found: dict[int, aiohttp.ClientSession] = {}
        for _ in range(200):
            session = self.session()
            index = (await self.worker_of(session))["index"]
            if index in found:
                await session.close()
            else:
                found[index] = session
            if len(found) == count:
                return found
        raise AssertionError(f"new connections reached only workers {sorted(found)}")


Launch = Callable[..., Awaitable[Server]]


async def call(session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any, Any]:
    """(status, JSON body, headers), the body read whole: a response left unread makes the client close its
    connection, and the session's next request would open one that may reach another worker."""
    async with session.request(method, path, **kwargs) as response:
        body = await response.read()
        return response.status, orjson.loads(body) if body else None, response.headers


@pytest.fixture
async def launch(fresh_database: str, tmp_path: Path) -> AsyncIterator[Launch]:
    """``launch(*serve_args, **environment)``: ``scaivault serve`` on a free port of loopback, on the fresh database,
    once it says it listens, with the test's container; stopped (and its workers with it) afterwards."""
    servers: list[Server] = []
    data_dir = tmp_path / "data"

    async def start(*args: str, expect_listening: bool = True, **environment: str) -> Server:
        port = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SCAIVAULT_WORKERS")},
            "DATABASE_URL": fresh_database, "SCAIVAULT_DATA_DIR": str(data_dir), "BIND_ADDRESS": f"127.0.0.1:{port}",
            "METRICS_BIND_ADDRESS": "off", "SCAIVAULT_RATE_LIMITS": GENEROUS_RATE_LIMITS,
            "SCAIVAULT_SHUTDOWN_TIMEOUT": "2", **environment,
        }
        output = tmp_path / f"serve-{port}.log"
        with output.open("wb") as out:
            process = await asyncio.create_subprocess_exec(*SCAIVAULT, "serve", *args, env=env, stdout=out, stderr=out)
        settings = Settings(database_url=fresh_database, data_dir=data_dir, bind_address=f"127.0.0.1:{port}")
        server = Server(process, port, output, settings)
        servers.append(server)
        if not expect_listening:
            return server
        await eventually(lambda: "ScaiVault listening on" in server.output() or process.returncode is not None,
                         timeout=START_SECONDS, message="the server did not start")
        assert process.returncode is None, server.output()
        server.container = await build_container(settings, migrate=False)
        await server.container.tenancy_commands.register_tenant(PARTNER, TENANT)
        return server

    yield start
    for server in servers:
        for session in server.sessions:
            await session.close()
        if server.container is not None:
            await server.container.close()
        workers = children(server.process.pid)
        if server.process.returncode is None:
            server.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(server.process.wait(), 30)
            except TimeoutError:
                server.process.kill()
                await server.process.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def _free_port_pair() -> int:
    """A port p of loopback such that p + 1 is free too (worker i serves its internal address on p + i)."""
    for _ in range(100):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise AssertionError("no two consecutive free ports")


async def lock_holders(url: str) -> list[tuple[str, bool, int]]:
    """(application name, granted, backend pid) of every session holding or awaiting a projection runner's lock."""
    keys = {runner_key(name) for name in PROJECTIONS}
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT a.application_name, l.granted, l.pid, l.classid::bigint AS high, l.objid::bigint AS low
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
               WHERE l.locktype = 'advisory' AND l.objsubid = 1
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"""
        )
    finally:
        await conn.close()
    holders = []
    for row in rows:
        key = (row["high"] << 32) | row["low"]
        if key >= 1 << 63:
            key -= 1 << 64
        if key in keys:
            holders.append((row["application_name"], row["granted"], row["pid"]))
    return sorted(holders)


async def only_worker_0_runs_the_projections(url: str) -> list[tuple[str, bool, int]] | None:
    holders = await lock_holders(url)
    if [(name, granted) for name, granted, _ in holders] == [("scaivault worker 0", True)] * len(PROJECTIONS):
        return holders
    return None


# ---- the tests ------------------------------------------------------------------------------------------------------

async def test_two_workers_answer_on_one_port_and_share_one_database(launch: Launch, fresh_database: str) -> None:
    metrics_port = _free_port_pair()
    server = await launch("--workers", "2", METRICS_BIND_ADDRESS=f"127.0.0.1:{metrics_port}")
    sessions = await server.one_session_per_worker()
    workers = {index: await server.worker_of(session) for index, session in sessions.items()}
    assert workers[0]["singletons"] and not workers[1]["singletons"]
    assert {worker["workers"] for worker in workers.values()} == {2}
    pids = {worker["pid"] for worker in workers.values()}
    assert len(pids) == 2 and pids == children(server.process.pid), "two processes, both the supervisor's children"

    # Each worker's internal address is the configured port plus its index; it tells no pid (no one authenticated).
    async with aiohttp.ClientSession() as plain:
        for index in (0, 1):
            async with plain.get(f"http://127.0.0.1:{metrics_port + index}/v1/health/detailed") as response:
                worker = (await response.json())["worker"]
            assert worker == {"index": index, "workers": 2, "singletons": index == 0}

    # What one worker writes, the other reads; and back.
    admin = server.headers()
    status, body, _ = await call(sessions[0], "PUT", "/v1/secrets/app/db", json={"data": {"password": "one"}},
                                 headers=admin)
    assert status == 201, body
    status, body, _ = await call(sessions[1], "GET", "/v1/secrets/app/db", headers=admin)
    assert body["data"] == {"password": "one"}
    status, body, _ = await call(sessions[1], "PUT", "/v1/secrets/app/db", json={"data": {"password": "two"}},
                                 headers=admin)
    assert status == 200, body
    status, body, _ = await call(sessions[0], "GET", "/v1/secrets/app/db", headers=admin)
    assert body["data"] == {"password": "two"}

    # One process holds the projection runners' locks, and no other waits for them.
    await eventually(lambda: only_worker_0_runs_the_projections(fresh_database),
                     message="the projection locks are not all worker 0's")
    _, body, _ = await call(sessions[1], "GET", "/v1/health/detailed", headers=admin)
    assert {entry["this_process"] for entry in body["projections"].values()} == {"standby"}
    # ... and it runs them: the audit log and the event index catch up with what both workers recorded.
    conn = await asyncpg.connect(fresh_database)
    try:
        head = await conn.fetchval("SELECT max(notification_id) FROM scaivault_events")

        async def caught_up() -> bool:
            positions = await conn.fetch("SELECT application_name, notification_id FROM scaivault_tracking")
            return {row["application_name"] for row in positions if row["notification_id"] >= head} >= {*PROJECTIONS}

        await eventually(caught_up, message="the projections did not catch up")
    finally:
        await conn.close()
    for index, session in sessions.items():  # the sessions stayed with their workers throughout
        assert (await server.worker_of(session))["index"] == index
    output = server.output()
    assert '"worker":0' in output and '"worker":1' in output  # access lines name the worker that answered


async def test_caches_and_rate_limits_agree_across_workers(launch: Launch) -> None:
    server = await launch("--workers", "2", SCAIVAULT_RATE_LIMITS="*=1000000/s,auth=10/m")
    sessions = await server.one_session_per_worker()
    admin = server.headers()
    assert (await call(sessions[0], "PUT", "/v1/secrets/app/db", json={"data": {"v": 1}}, headers=admin))[0] == 201

    # A binding removed through worker 0 stops counting in worker 1, which had cached it.
    _, body, _ = await call(sessions[0], "POST", "/v1/policies", headers=admin, json={
        "name": "readers", "rules": [{"path_pattern": "app/*", "permissions": ["read"]}]})
    policy = body["id"]
    status, body, _ = await call(sessions[0], "POST", f"/v1/policies/{policy}/bindings", headers=admin,
                                 json={"identity_type": "service_account", "identity_id": "sa:reader"})
    assert status == 201, body
    binding = body["id"]
    reader = server.headers("secrets:read", identity="sa:reader", roles=())
    assert (await call(sessions[1], "GET", "/v1/secrets/app/db", headers=reader))[0] == 200
    status, body, _ = await call(sessions[0], "DELETE", f"/v1/policies/{policy}/bindings/{binding}", headers=admin)
    assert status == 200, body

    async def denied_by_worker_1() -> bool:
        return (await call(sessions[1], "GET", "/v1/secrets/app/db", headers=reader))[0] == 403

    await eventually(denied_by_worker_1, timeout=5, message="worker 1 kept a binding removed through worker 0")

    # A token revoked elsewhere (here, as by `scaivault token revoke`) is refused by every worker.
    victim = server.headers("secrets:read", identity="sa:victim")
    for session in sessions.values():
        assert (await call(session, "GET", "/v1/secrets/app/db", headers=victim))[0] == 200
    assert server.container is not None
    assert await server.container.token_commands.revoke(victim["Authorization"].removeprefix("Bearer "))

    async def refused_everywhere() -> bool:
        statuses = [(await call(session, "GET", "/v1/secrets/app/db", headers=victim))[0]
                    for session in sessions.values()]
        return statuses == [401, 401]

    await eventually(refused_everywhere, timeout=5, message="a worker accepted a revoked token")

    # In-process rate limits: each worker holds half of the identity's bucket, so together they allow the limit.
    counted = server.headers("secrets:read", identity="sa:counted")
    allowed = {}
    for index, session in sessions.items():
        statuses = []
        for _ in range(7):
            status, _, headers = await call(session, "GET", "/v1/auth/whoami", headers=counted)
            statuses.append(status)
            assert headers["X-RateLimit-Limit"] == "5"
        allowed[index] = statuses.count(200)
        assert statuses == [200] * 5 + [429] * 2
    assert sum(allowed.values()) == 10
    for index, session in sessions.items():  # the sessions stayed with their workers throughout
        assert (await server.worker_of(session))["index"] == index


async def test_a_killed_worker_is_started_again_and_sigterm_stops_them_all(
    launch: Launch, fresh_database: str
) -> None:
    server = await launch("--workers", "2")
    sessions = await server.one_session_per_worker()
    primary = (await server.worker_of(sessions[0]))["pid"]
    before = await eventually(lambda: only_worker_0_runs_the_projections(fresh_database))
    os.kill(primary, signal.SIGKILL)

    async def restarted() -> set[int] | None:
        workers = children(server.process.pid)
        return workers if len(workers) == 2 and primary not in workers else None

    workers = await eventually(restarted, message="the killed worker was not started again")

    async def new_primary_runs_the_projections() -> bool:
        holders = await only_worker_0_runs_the_projections(fresh_database)
        return holders is not None and not {pid for _, _, pid in holders} & {pid for _, _, pid in before}

    await eventually(new_primary_runs_the_projections, message="the new worker 0 did not take the projections")
    again = await server.one_session_per_worker()
    assert (await server.worker_of(again[0]))["pid"] in workers - {primary}
    assert "worker exited; starting it again" in server.output()

    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.process.wait(), 30) == 0, server.output()
    assert time.monotonic() - started < 15
    assert not [pid for pid in workers if alive(pid)], "a worker outlived the server"
    assert '"msg":"workers stopped","statuses":[0,0]' in server.output()


async def test_workers_do_not_outlive_a_killed_supervisor(launch: Launch, fresh_database: str) -> None:
    server = await launch("--workers", "2")
    workers = children(server.process.pid)
    assert len(workers) == 2
    server.process.kill()
    await server.process.wait()
    await eventually(lambda: not [pid for pid in workers if alive(pid)], timeout=20,
                     message="workers outlived their supervisor")


async def test_one_worker_is_one_process_as_before(launch: Launch) -> None:
    server = await launch("--workers", "1")
    session = server.session()
    assert await server.worker_of(session) == {
        "index": 0, "workers": 1, "singletons": True, "pid": server.process.pid,
    }
    assert children(server.process.pid) == set()
    assert "ScaiVault listening on " + server.url + "\n" in server.output()
    server.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.process.wait(), 30) == 0


async def test_a_port_held_by_another_program_stops_start_up(launch: Launch) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        server = await launch("--workers", "2", expect_listening=False, BIND_ADDRESS=f"127.0.0.1:{port}")
        assert await asyncio.wait_for(server.process.wait(), START_SECONDS) == 1
    assert "cannot start: " in server.output()
    assert "worker started" not in server.output()
