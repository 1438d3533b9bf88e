"""Background jobs outlive their failures: a job whose work raises is logged (by type only) and started again with
a growing delay, and a listener started while PostgreSQL refuses it keeps trying instead of ending its job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from scaivault.auth.revocation import revoke
from scaivault.bootstrap import Container, build_container, forever
from scaivault.config import Settings
from scaivault.eventstore.recorder import EventStoreListener
from scaivault.tasks import run_supervised
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

CANARY = "hunter2-canary-7f3a"


def restarts(caplog: pytest.LogCaptureFixture, job: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if getattr(record, "job", None) == job]


async def test_a_job_whose_work_fails_once_is_running_again_afterwards(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    running_again = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise ConnectionRefusedError(f"cannot reach postgresql://vault:{CANARY}@db.internal")
        running_again.set()
        await asyncio.Event().wait()

    job = forever("flaky", work)
    with caplog.at_level(logging.WARNING):
        await job.start()
        try:
            await eventually(running_again.is_set, timeout=10, message="the job was not started again")
        finally:
            await job.stop()
    assert runs == 2
    [restart] = restarts(caplog, "flaky")
    assert restart.outcome == "ConnectionRefusedError"  # type: ignore[attr-defined]
    assert CANARY not in caplog.text and all(CANARY not in str(r.__dict__) for r in caplog.records)


async def test_restarts_back_off_exponentially_up_to_a_cap_and_start_over_after_a_healthy_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, cap = 1 / 1024, 8 / 1024  # exact in binary, so the doubled delays compare equal
    runs = 0
    done = asyncio.Event()

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs == 6:
            await asyncio.sleep(2 * cap)  # a healthy run: the next failure waits the first delay again
        if runs == 8:
            done.set()
            await asyncio.Event().wait()
        raise RuntimeError

    with caplog.at_level(logging.WARNING):
        task = asyncio.create_task(run_supervised("failing", work, first_delay=first, max_delay=cap))
        try:
            await eventually(done.is_set, message="the work was not restarted seven times")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    delays = [record.restart_in_seconds for record in restarts(caplog, "failing")]  # type: ignore[attr-defined]
    assert delays == [first, 2 * first, 4 * first, cap, cap, first, 2 * first]


async def test_stopping_a_job_is_not_a_failure(caplog: pytest.LogCaptureFixture) -> None:
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.Event().wait()

    job = forever("steady", work)
    with caplog.at_level(logging.WARNING):
        await job.start()
        await eventually(started.is_set)
        await job.stop()
    assert restarts(caplog, "steady") == []


async def test_a_listener_started_while_postgres_refuses_it_wakes_once_it_can_connect(
    pool: asyncpg.Pool, database_url: str
) -> None:
    channel = "scaivault_listener_refused_test"  # not a real channel: other tests' writes must not wake us
    proxy = TcpProxy.to_postgres(database_url)  # shut: connections to it are refused
    try:
        async with EventStoreListener(
            proxy.postgres_dsn(database_url), channel=channel, reconnect_delay_seconds=0.05
        ) as listener:
            assert listener.backend_pid is None
            assert await listener.wait(0.05) is False
            await proxy.open()
            # Its first connection: True at once (what was sent while it was away is unknown), then NOTIFYs.
            await eventually(lambda: listener.wait(0.05), message="the listener never connected")
            assert listener.backend_pid is not None
            await pool.execute("SELECT pg_notify($1, '')", channel)
            assert await listener.wait(30) is True
            assert await listener.wait(0.05) is False
    finally:
        if proxy.is_open:
            await proxy.shut()


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    try:
        yield container
    finally:
        await container.close()


async def test_revocations_keep_arriving_while_the_revocation_listener_is_refused(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    proxy = TcpProxy.to_postgres(database_url)  # shut: the job's listener cannot connect
    container.database_url = proxy.postgres_dsn(database_url)  # the listeners' DSN; the pool connects directly
    [sync] = [job for job in container.background_jobs() if job.name == "revocation-sync"]
    await sync.start()
    try:
        async with pool.acquire() as conn:
            await revoke(conn, "jti", "revoked-while-refused", None)
        await eventually(
            lambda: container.revocations.is_revoked("jti", "revoked-while-refused"),
            message="the revocation sync stopped when its listener could not connect",
        )
        await proxy.open()

        async def listening() -> Any:
            return await pool.fetchval(
                """SELECT count(*) FROM pg_stat_activity
                   WHERE datname = current_database() AND application_name = 'scaivault-listener'"""
            )

        await eventually(listening, message="the revocation listener never connected")
        async with pool.acquire() as conn:
            await revoke(conn, "jti", "revoked-when-listening", None)
        await eventually(lambda: container.revocations.is_revoked("jti", "revoked-when-listening"))
    finally:
        await sync.stop()
        if proxy.is_open:
            await proxy.shut()


SINGLETONS = {"projections", "housekeeping", "audit-exports", "rotation-scheduler"}
PER_PROCESS = [
    "access-records", "rate-limit-redis-probe", "revocation-sync", "authorization-sync", "subscription-feed",
    "webhook-deliveries", "acme-orders", "lease-expiry",
]


async def test_only_a_primary_runs_the_singleton_jobs(container: Container) -> None:
    """Every process keeps its own caches current and commits its own access records; the jobs one process runs for
    the whole server (catch-up projections, housekeeping, audit exports) are the primary worker's alone."""
    primary = [job.name for job in container.background_jobs(singletons=True)]
    other = [job.name for job in container.background_jobs(singletons=False)]
    assert other == PER_PROCESS
    assert set(primary) == SINGLETONS | set(PER_PROCESS)
    assert [name for name in primary if name in PER_PROCESS] == PER_PROCESS  # the same order, the singletons added
    assert [job.name for job in container.background_jobs()] == primary  # by default: everything, as before


async def test_without_projections_a_primary_runs_the_other_singletons(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path, run_projections=False))
    try:
        names = {job.name for job in container.background_jobs(singletons=True)}
        assert names == SINGLETONS - {"projections"} | set(PER_PROCESS)
    finally:
        await container.close()
