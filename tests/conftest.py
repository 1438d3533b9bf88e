"""Shared fixtures: a real PostgreSQL (SCAIVAULT_TEST_DATABASE_URL, else an embedded one), migrated once per run and
emptied before every test that asks for it; the machine's Redis with a proxy that can take it away; the stand-in
ScaiKey."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from scaivault.database import connect, create_pool, embedded_postgres_url
from scaivault.eventstore.migrations import apply_migrations
from tests.redis_helpers import REDIS_URL, RedisProxy
from tests.scaikey_standin import ScaiKeyStandIn


def _embedded_database_for_this_run() -> tuple[str, str]:
    """A database of its own on the shared embedded server, so concurrent runs never truncate each other's tables."""
    server_url = embedded_postgres_url(Path(tempfile.gettempdir()) / "scaivault-test-pg")
    name = f"scaivault_test_{os.getpid()}"

    async def create() -> None:
        conn = await asyncpg.connect(server_url)
        try:
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            await conn.execute(f"CREATE DATABASE {name}")
        finally:
            await conn.close()

    asyncio.run(create())
    return server_url, server_url.replace("/scaivault?", f"/{name}?")


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("SCAIVAULT_TEST_DATABASE_URL")
    server_url = None
    if not url:
        server_url, url = _embedded_database_for_this_run()

    async def migrate() -> None:
        conn = await connect(url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    yield url
    if server_url is not None:

        async def drop() -> None:
            conn = await asyncpg.connect(server_url)
            try:
                await conn.execute(f"DROP DATABASE IF EXISTS scaivault_test_{os.getpid()} WITH (FORCE)")
            finally:
                await conn.close()

        asyncio.run(drop())


async def end_leftover_sessions(conn: asyncpg.Connection) -> None:
    """Sessions a previous test left open (a leak, or a test that failed half-way) must not hold locks over this
    one; they are ended, and named, so a leak is visible rather than a stall."""
    leftovers = await conn.fetch(
        """SELECT pid, application_name, state, left(query, 60) AS query FROM pg_stat_activity
           WHERE datname = current_database() AND pid <> pg_backend_pid()"""
    )
    for row in leftovers:
        await conn.execute("SELECT pg_terminate_backend($1)", row["pid"])
    if leftovers:
        import sys

        print(f"\n[ended {len(leftovers)} leftover sessions: "
              f"{sorted({(r['application_name'], r['state']) for r in leftovers})}]", file=sys.stderr)


async def truncate_all(conn: asyncpg.Connection) -> None:
    tables = await conn.fetch(
        """SELECT quote_ident(tablename) AS name FROM pg_tables
           WHERE schemaname = current_schema() AND tablename <> 'scaivault_schema_migrations'"""
    )
    if tables:
        await conn.execute(f"TRUNCATE {', '.join(t['name'] for t in tables)} RESTART IDENTITY CASCADE")


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(database_url, min_size=1, max_size=10)
    async with pool.acquire() as conn:
        await end_leftover_sessions(conn)
        await truncate_all(conn)
    try:
        yield pool
    finally:
        await pool.close()


HANG_SECONDS = float(os.environ.get("SCAIVAULT_TEST_HANG_SECONDS", "120"))


@pytest.fixture(autouse=True)
async def _hang_watchdog() -> AsyncIterator[None]:
    """A test still running after HANG_SECONDS prints every asyncio task's stack, then is cancelled: a hang
    becomes a failure with a diagnosis instead of a stalled CI run."""
    loop = asyncio.get_running_loop()
    test_task = asyncio.current_task()

    def dump_and_cancel() -> None:
        import sys

        print(f"\n--- test still running after {HANG_SECONDS}s; asyncio tasks: ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            if task is not test_task:
                task.cancel()

    handle = loop.call_later(HANG_SECONDS, dump_and_cancel)
    try:
        yield
    finally:
        handle.cancel()


@pytest.fixture
async def standin() -> AsyncIterator[tuple[ScaiKeyStandIn, str]]:
    """The stand-in ScaiKey served on loopback, and its base URL."""
    server = ScaiKeyStandIn()
    async with TestServer(server.app(), host="127.0.0.1") as test_server:
        yield server, str(test_server.make_url("")).rstrip("/")


@pytest.fixture
async def redis_prefix() -> AsyncIterator[str]:
    """A key prefix of the test's own in the real Redis; its keys are deleted afterwards."""
    prefix = f"scaivault-test-{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
async def raw_redis() -> AsyncIterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_proxy() -> AsyncIterator[RedisProxy]:
    proxy = RedisProxy()
    await proxy.open()
    yield proxy
    if proxy.is_open:
        await proxy.shut()
