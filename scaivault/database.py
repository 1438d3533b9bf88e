"""PostgreSQL connections: the asyncpg pool, and an embedded server for single-node use and tests."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from scaivault.config import ConfigurationError

# Failures meaning the database is down, overloaded or locked up: transient, so a client may retry (503).
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)
# PostgreSQL refusing a character of a value (a NUL in text or JSON): the request's fault (400).
UNSTORABLE_TEXT: tuple[type[BaseException], ...] = (
    asyncpg.CharacterNotInRepertoireError,
    asyncpg.UntranslatableCharacterError,
)

log = logging.getLogger(__name__)

# What a worker of ``serve --workers N`` adds to the application_name of every session it opens (" worker 1"), so
# pg_stat_activity and pg_locks show which process holds what; nothing in a single process.
_session_suffix = ""


def name_sessions(suffix: str) -> None:
    """Called once, at a serving worker's start, before it connects."""
    global _session_suffix
    _session_suffix = suffix


def application_name(base: str = "scaivault") -> str:
    return base + _session_suffix


# What a transaction runs on: a connection of our own, or one lent by the pool (asyncpg hands out a proxy).
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy
# Reads need no transaction, so they also accept a pool (one statement per call).
Queryable: TypeAlias = asyncpg.Connection | PoolConnectionProxy | asyncpg.Pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=lambda value: orjson.dumps(value).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


async def _reset_connection(conn: asyncpg.Connection) -> None:
    """Returning a connection to the pool: we never change session state on pooled connections (no session SET,
    no LISTEN, only transaction-scoped advisory locks), so asyncpg's default full reset, a round trip on every
    release, buys nothing. An interrupted transaction is still rolled back."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def create_pool(dsn: str, *, min_size: int = 2, max_size: int = 20, lock_timeout: float = 5.0) -> asyncpg.Pool:
    """Every lock wait is bounded (``lock_timeout``, seconds): a stuck transaction elsewhere turns into a prompt
    503 instead of requests that hang."""
    return await asyncpg.create_pool(
        dsn,
        min_size=min(min_size, max_size),
        max_size=max_size,
        init=_init_connection,
        reset=_reset_connection,
        # Every transaction is short; a session stuck inside one must not hold the event-store lock for ever.
        server_settings=_server_settings(lock_timeout),
    )


def _server_settings(lock_timeout: float) -> dict[str, str]:
    """Every session, pooled or dedicated: lock waits are bounded, and a session that stalls inside a transaction
    is ended by the server rather than holding its locks for ever."""
    return {
        "idle_in_transaction_session_timeout": "10000",
        "lock_timeout": str(round(lock_timeout * 1000)),
        "application_name": application_name(),
    }


async def connect(dsn: str, *, lock_timeout: float = 5.0) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn, server_settings=_server_settings(lock_timeout))
    await _init_connection(conn)
    return conn


def embedded_postgres_url(data_dir: Path) -> str:
    """Start (or reuse) a PostgreSQL kept in ``data_dir/postgres`` and return its DSN.

    The server is the ``pgserver`` wheel's; it outlives this process so the CLI and the server share it, and it is
    reused by the next start.
    """
    try:
        import pgserver  # imported lazily: only single-node set-ups need it
    except ImportError:
        raise ConfigurationError(
            "invalid configuration: no DATABASE_URL, and the embedded PostgreSQL is not installed"
            " (pip install 'scaivault[embedded]', or set DATABASE_URL)"
        ) from None

    pgdata = (data_dir / "postgres").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)
    if not _database_exists(server, "scaivault"):
        server.psql("CREATE DATABASE scaivault;")
    log.info("embedded PostgreSQL ready", extra={"pgdata": str(pgdata)})
    return server.get_uri("scaivault")


def _database_exists(server: object, name: str) -> bool:
    output = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")  # type: ignore[attr-defined]
    return "(1 row)" in output
