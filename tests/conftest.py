"""Shared fixtures: a real PostgreSQL (SCAIVAULT_TEST_DATABASE_URL, else an embedded one), migrated once per run and
emptied before every test that asks for it; the machine's Redis with a proxy that can take it away; the stand-in
ScaiKey.

Under pytest-xdist (``make test`` runs ``-n 2``) every worker has a database of its own on the same server,
``<database>_<worker>`` (``scaivault_ci_..._gw0``), created empty and migrated when the worker starts and dropped
when it ends: the fixtures truncate every table before each test, which would wipe a neighbour's rows mid-test."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import redis.asyncio as redis
from aiohttp.test_utils import TestServer

from scaivault.database import connect, create_pool, embedded_postgres_url
from scaivault.eventstore.migrations import apply_migrations
from tests.redis_helpers import REDIS_URL, RedisProxy
from tests.scaikey_standin import ScaiKeyStandIn

# "gw0", "gw1", ... in a pytest-xdist worker; None in a run without xdist (or with -n 0).
XDIST_WORKER = os.environ.get("PYTEST_XDIST_WORKER")


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def _recreate_database(server_url: str, name: str) -> None:
    """A leftover of a run that was killed (same worker id, or same pid) must not leak its rows into this one."""
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
        await conn.execute(f"CREATE DATABASE {_quoted(name)}")
    finally:
        await conn.close()


async def _drop_database(server_url: str, name: str) -> None:
    conn = await asyncpg.connect(server_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
    finally:
        await conn.close()


@contextlib.contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    """Across processes: the xdist workers of one run (and concurrent runs) start the embedded server together, and
    the first start of a new data directory also creates its database, which two processes cannot both do."""
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _embedded_database_for_this_run() -> tuple[str, str, str]:
    """A database of its own on the shared embedded server, so concurrent runs (and the xdist workers of one run,
    each a process of its own) never truncate each other's tables. Returns (server URL, database URL, name)."""
    data_dir = Path(tempfile.gettempdir()) / "scaivault-test-pg"
    with _exclusive(data_dir / "start.lock"):
        server_url = embedded_postgres_url(data_dir)
    name = f"scaivault_test_{os.getpid()}"
    asyncio.run(_recreate_database(server_url, name))
    return server_url, server_url.replace("/scaivault?", f"/{name}?"), name


def _worker_database(base_url: str, worker: str) -> tuple[str, str, str]:
    """``<database>_<worker>`` beside the given database, on the same server; the given one is only connected to,
    to create and drop it (CI creates it fresh and drops it, with whatever the workers left)."""
    base_name = urlsplit(base_url).path.lstrip("/")
    if not base_name:
        raise pytest.UsageError("SCAIVAULT_TEST_DATABASE_URL must name a database (postgresql://host/<database>)")
    name = f"{base_name}_{worker}"
    if len(name.encode()) > 63:  # PostgreSQL would truncate it silently, and two workers could share one
        raise pytest.UsageError(f"the database name {base_name!r} leaves no room for the worker suffix {worker!r}")
    asyncio.run(_recreate_database(base_url, name))
    return base_url, _with_database(base_url, name), name


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("SCAIVAULT_TEST_DATABASE_URL")
    server_url = own_database = None
    if not url:
        server_url, url, own_database = _embedded_database_for_this_run()
    elif XDIST_WORKER is not None:
        server_url, url, own_database = _worker_database(url, XDIST_WORKER)

    async def migrate() -> None:
        conn = await connect(url)
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    yield url
    if server_url is not None and own_database is not None:
        asyncio.run(_drop_database(server_url, own_database))


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


# One query naming the tables (all but the migrations') that hold a row.
_NON_EMPTY_TABLES = """
    SELECT string_agg(format('SELECT %L AS name WHERE EXISTS (SELECT FROM %I)', tablename, tablename), ' UNION ALL ')
    FROM pg_tables WHERE schemaname = current_schema() AND tablename <> 'scaivault_schema_migrations'"""
# The sequences of those tables (serial and identity columns) that have handed out a value since their last restart.
_USED_SEQUENCES = """
    SELECT format('ALTER SEQUENCE %I.%I RESTART', s.schemaname, s.sequencename) AS statement
    FROM pg_sequences s
    JOIN pg_class c ON c.relname = s.sequencename AND c.relnamespace = s.schemaname::regnamespace
    JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                    AND d.refclassid = 'pg_class'::regclass
    WHERE s.schemaname = current_schema() AND s.last_value IS NOT NULL
      AND d.refobjid::regclass::text <> 'scaivault_schema_migrations'"""


async def truncate_all(conn: asyncpg.Connection) -> None:
    """The state one ``TRUNCATE <every table> RESTART IDENTITY CASCADE`` leaves. That statement took 0.3 s a test
    (new files for 50-odd tables and their indexes, most of them already empty), a third of the suite's time; only
    the tables holding rows are truncated, and the sequences of the others restarted if a rolled-back insert moved
    them."""
    union = await conn.fetchval(_NON_EMPTY_TABLES)
    tables = [row["name"] for row in await conn.fetch(union)] if union else []
    if tables:
        quoted = ", ".join(_quoted(name) for name in tables)
        await conn.execute(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE")
    for row in await conn.fetch(_USED_SEQUENCES):
        await conn.execute(row["statement"])


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


# Modules whose tests start servers of several processes, kill them and time their restarts. Two of them at once
# (one per xdist worker) on a 2-core machine leave start-ups and restarts racing their deadlines, so a worker takes
# a lock of the run's around each of them; the other worker goes on with any other test. (xdist's own
# ``--dist loadgroup`` cannot do this: with pytest 9.2 it silently ignores xdist_group marks, pytest-xdist#1386.)
PROCESS_HEAVY_MODULES = (
    "tests/e2e/test_workers.py",
    "tests/e2e/test_delivery_survives_crash.py",
    "tests/e2e/test_cli.py",
    "tests/integration/test_supervisor.py",
)


@pytest.fixture(autouse=True)
def _one_process_heavy_test_at_a_time(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    if XDIST_WORKER is None or request.node.nodeid.split("::", 1)[0] not in PROCESS_HEAVY_MODULES:
        yield
        return
    # The workers' base temporary directories (popen-gw0, ...) share the run's parent directory.
    with _exclusive(tmp_path_factory.getbasetemp().parent / "process-heavy-tests.lock"):
        yield


HANG_SECONDS = float(os.environ.get("SCAIVAULT_TEST_HANG_SECONDS", "120"))


def _test_function_codes(request: pytest.FixtureRequest) -> set[types.CodeType]:
    """The code objects the test's coroutine may run: its function's, through any wrappers (pytest-asyncio's,
    hypothesis's), and a hypothesis test's inner test."""
    codes: set[types.CodeType] = set()
    function = getattr(request, "function", None)
    for candidate in (function, getattr(getattr(function, "hypothesis", None), "inner_test", None)):
        while candidate is not None:
            code = getattr(candidate, "__code__", None)
            if code is not None:
                codes.add(code)
            candidate = getattr(candidate, "__wrapped__", None)
    return codes


@pytest.fixture(autouse=True)
async def _hang_watchdog(request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """A test still running after HANG_SECONDS prints every asyncio task's stack, then is cancelled: a hang
    becomes a failure with a diagnosis instead of a stalled CI run (in each xdist worker, for its own test).

    Only the test's own task is cancelled. Cancelling every task also stopped its fixtures' background tasks (a
    server's access recorder), so their teardown raised CancelledError, pytest kept the half-torn-down fixtures,
    and every later test of the process was given a closed container ("The server is shutting down"). While no
    test task runs (a fixture hangs in setup or teardown), every task is cancelled, as nothing else would end it."""
    loop = asyncio.get_running_loop()
    this_task = asyncio.current_task()
    test_codes = _test_function_codes(request)

    def dump_and_cancel() -> None:
        import sys

        print(f"\n--- test still running after {HANG_SECONDS}s; asyncio tasks: ---", file=sys.stderr)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)
        tasks = asyncio.all_tasks(loop)
        test_tasks = [task for task in tasks if getattr(task.get_coro(), "cr_code", None) in test_codes]
        for task in test_tasks or [task for task in tasks if task is not this_task]:
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
    """A key prefix of the test's own in the real Redis (shared by the xdist workers and by concurrent runs); its keys
    are deleted afterwards. The worker's name is in it only to tell, in Redis, whose a leftover key was."""
    prefix = f"scaivault-test-{XDIST_WORKER or 'main'}-{uuid.uuid4().hex}:"
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
