"""Two servers' export workers on one database: an export's job runs in one process at a time, whatever fails.

Each job waits, before reading the log, until the audit-log projection has caught up; the projections are not
running at first, so a started job stays in flight until the test starts them. Each server writes local exports
to a directory of its own: a job run twice leaves a manifest in both."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

import scaivault.audit.exports.worker as worker_module
from commands.audit_exports import RequestExport
from projections.audit_exports.queries import open_export_ids
from scaivault.audit.exports.credentials import RequesterCredentials
from scaivault.audit.exports.worker import AuditExportWorker, job_lock_key
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.audit_exports import audit_export_stream_id
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

PARTNER, TENANT = "ptn_acme", "tnt_acme_prod"


@dataclass
class Server:
    container: Container
    settings: Settings

    def manifests(self) -> list[Path]:
        return sorted(self.settings.exports_directory.rglob("manifest.json"))


async def server(database_url: str, data_dir: Path, export_dir: Path) -> Server:
    # One data directory (the root key file), as servers sharing a database share their root key.
    settings = Settings(database_url=database_url, data_dir=data_dir, export_dir=export_dir)
    container = await build_container(settings)
    container.export_worker.poll_seconds = 0.05
    return Server(container, settings)


@pytest.fixture
async def servers(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    one = await server(database_url, tmp_path / "data", tmp_path / "exports-one")
    try:
        two = await server(database_url, tmp_path / "data", tmp_path / "exports-two")
        try:
            await one.container.tenancy_commands.register_tenant(PARTNER, TENANT)
            yield one, two
        finally:
            await two.container.close()
    finally:
        await one.container.close()


def worker_locking_through(server: Server, lock_dsn: str) -> AuditExportWorker:
    """A worker like the server's own, but taking its job locks over a connection to ``lock_dsn``."""
    container = server.container
    worker = AuditExportWorker(
        dsn=lock_dsn, pool=container.pool, store=container.store, commands=container.audit_exports,
        credentials=RequesterCredentials(container.secret_reader, container.principals, container.access_recorder),
        export_dir=server.settings.exports_directory,
    )
    worker.poll_seconds = 0.05
    return worker


@contextlib.asynccontextmanager
async def worker_running(server: Server, worker: AuditExportWorker | None = None) -> AsyncIterator[None]:
    task = asyncio.create_task((worker or server.container.export_worker).run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@contextlib.asynccontextmanager
async def projections_running(server: Server) -> AsyncIterator[None]:
    await server.container.projections.start()
    try:
        yield
    finally:
        await server.container.projections.stop()


async def requested_export(container: Container) -> str:
    now = datetime.now(UTC)
    request = RequestExport(
        tenant_id=TENANT, partner_id=PARTNER, format="jsonl", since=now - timedelta(hours=1), until=now, filters={},
        destination={"type": "local", "prefix": "locks"},
    )
    principal = Principal.from_claims(
        {"jti": "test-token", "sub": "user:alice@acme.example", "scopes": ["audit:export"], "tenant_id": TENANT,
         "partner_id": PARTNER}
    )
    return (await container.audit_exports.request(request, Caller(principal, TENANT, PARTNER), None)).export_id


async def export_row(pool: asyncpg.Pool, export_id: str) -> asyncpg.Record:
    return await pool.fetchrow("SELECT status, attempts FROM scaivault_audit_exports WHERE export_id = $1", export_id)


async def wait_for(pool: asyncpg.Pool, export_id: str, *, status: str, attempts: int) -> None:
    async def reached() -> bool:
        row = await export_row(pool, export_id)
        return (row["status"], row["attempts"]) == (status, attempts)

    await eventually(reached, timeout=30, message=f"{export_id} is not {status} after {attempts} attempts")


async def event_names(container: Container, export_id: str) -> list[str]:
    history = await container.repository.history(container.pool, audit_export_stream_id(export_id))
    return [type(event).__name__ for event in history]


@dataclass
class LockGrants:
    """What each of a worker's tries at one export's lock got (True: it took the lock)."""

    export_id: str
    results: list[bool] = field(default_factory=list)


def lock_grants(server: Server, export_id: str, monkeypatch: pytest.MonkeyPatch) -> LockGrants:
    worker, grants = server.container.export_worker, LockGrants(export_id)
    try_lock = worker._try_lock

    async def recording(candidate: str) -> Any:
        locked = await try_lock(candidate)
        if candidate == export_id:
            grants.results.append(bool(locked))
        return locked

    monkeypatch.setattr(worker, "_try_lock", recording)
    return grants


@dataclass
class PollFault:
    """Makes the next poll of one server's worker fail as a dropped database connection would."""

    pool: asyncpg.Pool
    armed: bool = False
    raised: int = 0

    async def __call__(self, conn: Any, *args: Any) -> list[str]:
        if conn is self.pool and self.armed:
            self.armed = False
            self.raised += 1
            raise ConnectionResetError("connection reset by peer")
        return await open_export_ids(conn, *args)


async def test_a_poll_failure_while_a_job_runs_never_lets_another_server_start_it(
    servers: tuple[Server, Server], pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = servers
    export_id = await requested_export(one.container)
    fault = PollFault(one.container.pool)
    monkeypatch.setattr(worker_module, "open_export_ids", fault)
    grants = lock_grants(two, export_id, monkeypatch)
    async with worker_running(one):
        await wait_for(pool, export_id, status="running", attempts=1)
        async with worker_running(two):
            await eventually(lambda: grants.results, message="the second worker never tried the job's lock")
            fault.armed = True
            await eventually(lambda: fault.raised, message="the first worker did not poll")
            tried_before = len(grants.results)
            await eventually(
                lambda: any(grants.results) or len(grants.results) >= tried_before + 3,
                message="the second worker stopped trying the job's lock",
            )
            assert not any(grants.results), "the second server took the lock of a job the first one is running"
            async with projections_running(one):
                await wait_for(pool, export_id, status="completed", attempts=1)
    assert await event_names(one.container, export_id) == ["Requested", "Started", "Completed"]
    assert len(one.manifests()) == 1 and two.manifests() == []


async def test_a_worker_that_loses_its_lock_connection_stops_the_job_which_then_runs_once(
    servers: tuple[Server, Server], pool: asyncpg.Pool
) -> None:
    one, two = servers
    export_id = await requested_export(one.container)
    async with worker_running(one):
        await wait_for(pool, export_id, status="running", attempts=1)
        async with worker_running(two):
            await end_the_session_holding_the_lock(pool, export_id)
            # Its job stops with the lock; one of the servers takes the lock again and starts it again.
            await wait_for(pool, export_id, status="running", attempts=2)
            async with projections_running(one):
                await wait_for(pool, export_id, status="completed", attempts=2)
    assert await event_names(one.container, export_id) == ["Requested", "Started", "Started", "Completed"]
    assert len(one.manifests() + two.manifests()) == 1, "the export ran twice at once"


async def end_the_session_holding_the_lock(pool: asyncpg.Pool, export_id: str) -> None:
    # A bigint advisory lock shows in pg_locks as its high and low 32 bits (classid, objid), with objsubid 1.
    key = job_lock_key(export_id) & 0xFFFF_FFFF_FFFF_FFFF
    holder = await pool.fetchval(
        """SELECT pid FROM pg_locks
           WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database
                                                                   WHERE datname = current_database())
             AND classid::bigint = $1 AND objid::bigint = $2 AND objsubid = 1""",
        key >> 32, key & 0xFFFF_FFFF,
    )
    assert holder is not None, "no session holds the job's lock"
    assert await pool.fetchval("SELECT pg_terminate_backend($1)", holder)


async def test_a_worker_whose_lock_connection_went_silent_stops_the_job_before_it_runs_twice(
    servers: tuple[Server, Server], pool: asyncpg.Pool, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The server ends the lock's session (a failover, a partition) and the worker is never told: it finds out by
    its check of the connection, within ``lock_connection_timeout`` of its next poll, and stops the job."""
    one, two = servers
    proxy = TcpProxy.to_postgres(database_url)
    await proxy.open()
    silenced = worker_locking_through(one, proxy.postgres_dsn(database_url))
    silenced.lock_connection_timeout = 0.2
    export_id = await requested_export(one.container)

    def stopped() -> bool:
        return any(export_id in getattr(record, "export_ids", ()) for record in caplog.records)

    try:
        with caplog.at_level(logging.WARNING, logger="scaivault.audit.exports.worker"):
            async with worker_running(one, silenced):
                await wait_for(pool, export_id, status="running", attempts=1)
                async with worker_running(two):
                    proxy.freeze()
                    await eventually(stopped, message="the worker never noticed that its lock was gone")
                    await wait_for(pool, export_id, status="running", attempts=2)
                    async with projections_running(two):
                        await wait_for(pool, export_id, status="completed", attempts=2)
    finally:
        await proxy.shut()
    assert len(one.manifests() + two.manifests()) == 1, "the export ran twice at once"
