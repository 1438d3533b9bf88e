"""The ``database.postgresql`` backend: login roles created with the engine's root role over asyncpg.

Statements are sent with the simple query protocol (no parameters), so one item of a role's statements may hold
several ``;``-separated statements; all of a create, renew or revoke run in one transaction, which PostgreSQL holds
for DDL too: a failing statement leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import asyncpg

from scaivault.dynamic.connection_urls import (
    ParsedUrl,
    UrlBackend,
    checked_address,
    tls_context,
)
from scaivault.dynamic.port import (
    CreatedCredential,
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetRefused,
    TargetUnavailable,
)
from scaivault.dynamic.statements import EPOCH, UNUSED_PASSWORD, format_expiration, render_statements, scrub

DEFAULT_CREATION = ("""CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';""",)
DEFAULT_REVOCATION = (
    """REASSIGN OWNED BY "{{name}}" TO CURRENT_USER; DROP OWNED BY "{{name}}"; DROP ROLE IF EXISTS "{{name}}";""",
)
DEFAULT_RENEW = ("""ALTER ROLE "{{name}}" VALID UNTIL '{{expiration}}';""",)

CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_MS = 10_000
# The client gives up a little after the server would have cancelled the statement itself.
COMMAND_TIMEOUT_SECONDS = 12.0
_SCHEMES = ("postgresql", "postgres")
_OPTIONS = ("sslmode", "sslrootcert")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
# What a driver call can raise; anything else is a bug of ours and propagates as itself.
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_ROOT_REFUSED = "PostgreSQL refused the root credentials"


class PostgresBackend(UrlBackend):
    """One engine's PostgreSQL. The pool is created on first use and holds at most ``max_open_connections``."""

    SCHEMES = _SCHEMES
    OPTIONS = _OPTIONS
    LABEL = "PostgreSQL"

    def __init__(self, target: EngineTarget) -> None:
        super().__init__(target)
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                url = self._url()
                address = await checked_address(url.host, url.port, self._target.egress_allow)
                max_size = int(self._target.config.get("max_open_connections", 4) or 4)
                self._pool = asyncpg.create_pool(
                    host=address,
                    port=url.port,
                    user=url.username,
                    password=url.password,
                    database=url.database or url.username,
                    ssl=_ssl_for(url),
                    min_size=0,
                    max_size=max(1, max_size),
                    timeout=CONNECT_TIMEOUT_SECONDS,
                    command_timeout=COMMAND_TIMEOUT_SECONDS,
                    statement_cache_size=0,
                    server_settings={
                        "statement_timeout": str(STATEMENT_TIMEOUT_MS),
                        "application_name": "scaivault-dynamic",
                    },
                )
                try:
                    await self._pool
                except BaseException:
                    self._pool = None
                    raise
            return self._pool

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; connection failures mapped to ``TargetRefused``/``TargetUnavailable``."""
        try:
            pool = await self._get_pool()
            connection = await pool.acquire()
        except _DRIVER_ERRORS as exc:
            raise self._connect_error(exc) from None
        try:
            yield connection
        finally:
            try:
                await pool.release(connection)
            except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError, TimeoutError):
                pass

    def _connect_error(self, exc: BaseException) -> BaseException:
        if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
            return TargetRefused(_ROOT_REFUSED)
        if isinstance(exc, asyncpg.InvalidCatalogNameError):
            return TargetRefused("PostgreSQL has no database of the connection_url's name")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TargetRefused("the PostgreSQL server's TLS certificate failed verification")
        if isinstance(exc, asyncpg.CannotConnectNowError | asyncpg.TooManyConnectionsError):
            return TargetUnavailable(f"PostgreSQL is not accepting connections: {exc.sqlstate}")
        if isinstance(exc, asyncpg.PostgresError):
            text = scrub(str(exc), *self._secrets())
            return TargetRefused(f"PostgreSQL refused the connection: {exc.sqlstate} {text}")
        if isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | ConnectionError):
            return TargetUnavailable(f"PostgreSQL could not be reached: {type(exc).__name__}")
        if isinstance(exc, Exception):
            return TargetUnavailable(f"PostgreSQL could not be reached: {type(exc).__name__}")
        return exc

    def _statement_error(self, exc: BaseException, kind: str, index: int, *extra_secrets: str) -> BaseException:
        secrets = (*self._secrets(), *extra_secrets)
        if isinstance(exc, asyncpg.QueryCanceledError | TimeoutError):
            return TargetUnavailable(f"statement {index} of {kind} timed out")
        if isinstance(exc, asyncpg.PostgresError):
            return TargetRefused(f"statement {index} of {kind} failed: {exc.sqlstate} {scrub(str(exc), *secrets)}")
        return self._connect_error(exc)

    async def _run(
        self, connection: asyncpg.Connection, statements: Sequence[str], kind: str, values: Mapping[str, str]
    ) -> None:
        """Every statement in one transaction; the first failure rolls all back and names its position."""
        rendered = render_statements(statements, kind, values)
        try:
            async with connection.transaction():
                for index, statement in enumerate(rendered, start=1):
                    try:
                        await connection.execute(statement)
                    except _DRIVER_ERRORS as exc:
                        raise _Failed(index, exc) from None
        except _Failed as failed:
            raise self._statement_error(failed.error, kind, failed.index, values["password"]) from None
        except _DRIVER_ERRORS as exc:
            raise self._connect_error(exc) from None

    async def verify(self) -> None:
        async with self._connection() as connection:
            try:
                allowed = await connection.fetchval(
                    "SELECT rolcreaterole OR rolsuper FROM pg_roles WHERE rolname = current_user"
                )
            except _DRIVER_ERRORS as exc:
                raise self._statement_error(exc, "the verification", 1) from None
        if not allowed:
            raise TargetRefused("the root user may not create roles (CREATEROLE)")

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        values = {
            "username": credential.username,
            "password": credential.password,
            "expiration": format_expiration(credential.expires_at),
        }
        statements = tuple(role.creation_statements) or DEFAULT_CREATION
        async with self._connection() as connection:
            await self._run(connection, statements, "creation_statements", values)
        return CreatedCredential(data={"username": credential.username, "password": credential.password})

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        values = {"username": username, "password": UNUSED_PASSWORD, "expiration": format_expiration(expires_at)}
        statements = tuple(role.renew_statements) or DEFAULT_RENEW
        async with self._connection() as connection:
            await self._run(connection, statements, "renew_statements", values)

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        values = {"username": username, "password": UNUSED_PASSWORD, "expiration": format_expiration(EPOCH)}
        statements = tuple(role.revocation_statements) or DEFAULT_REVOCATION
        render_statements(statements, "revocation_statements", values)
        async with self._connection() as connection:
            try:
                oid = await connection.fetchval("SELECT oid FROM pg_roles WHERE rolname = $1", username)
            except _DRIVER_ERRORS as exc:
                raise self._statement_error(exc, "the revocation check", 1) from None
            if oid is None:
                return
            await self._take_membership(connection, username)
            # Before: the user's open transactions may hold locks DROP OWNED waits for, and a root that is not a
            # superuser may signal the role's sessions only while the role exists.
            await self._terminate(connection, oid, required=True)
            await self._run(connection, statements, "revocation_statements", values)
            # After: a session that logged in between the two is ended too (matched by oid: the name is gone).
            await self._terminate(connection, oid, required=False)

    async def _take_membership(self, connection: asyncpg.Connection, username: str) -> None:
        """A root that is not a superuser (CREATEROLE, as the tutorial sets up) may reassign a role's objects
        (``REASSIGN OWNED``) and end its sessions only as a member of it: PostgreSQL 15 gives the creator no
        membership, so the root takes it first (its CREATEROLE allows that for any non-superuser role)."""
        try:
            statement = await connection.fetchval(
                """SELECT CASE WHEN r.rolsuper OR pg_has_role(current_user, $1::text, 'USAGE') THEN NULL
                               ELSE format('GRANT %I TO CURRENT_USER', $1::text) END
                   FROM pg_roles r WHERE r.rolname = current_user""",
                username,
            )
            if statement:
                await connection.execute(statement)
        except _DRIVER_ERRORS as exc:
            raise self._statement_error(exc, "taking membership of the user being revoked", 1) from None

    async def _terminate(self, connection: asyncpg.Connection, oid: int, *, required: bool) -> None:
        try:
            await connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE usesysid = $1 AND pid <> pg_backend_pid()",
                oid,
            )
        except asyncpg.InsufficientPrivilegeError:
            if required:
                raise TargetRefused(
                    "the root user may not end the sessions of the user being revoked (grant it pg_signal_backend)"
                ) from None
        except _DRIVER_ERRORS as exc:
            raise self._statement_error(exc, "ending the user's sessions", 1) from None

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        url = self._url()
        async with self._connection() as connection:
            try:
                statement = await connection.fetchval(
                    "SELECT format('ALTER ROLE %I WITH PASSWORD %L', current_user, $1::text)", new_password
                )
                await connection.execute(statement)
            except _DRIVER_ERRORS as exc:
                raise self._statement_error(exc, "the root rotation", 1, new_password) from None
        await self.close()
        self._root_password_override = new_password
        return {**dict(self._target.root), "username": url.username, "password": new_password}

    async def close(self) -> None:
        async with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), timeout=CONNECT_TIMEOUT_SECONDS)
            except (TimeoutError, OSError, asyncpg.InterfaceError, asyncpg.PostgresError):
                pool.terminate()


class _Failed(Exception):
    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(index)
        self.index = index
        self.error = error


def _ssl_for(url: ParsedUrl) -> ssl.SSLContext | str:
    """libpq's ``sslmode`` names; the verifying modes get a context that checks the certificate against the URL's
    host (asyncpg connects to the checked address)."""
    mode = url.options.get("sslmode", "prefer")
    if mode not in _SSLMODES:
        raise TargetRefused(f"sslmode must be one of {', '.join(_SSLMODES)}")
    if mode in ("verify-ca", "verify-full"):
        return tls_context(
            server_name=url.host, verify_name=mode == "verify-full", ca_file=url.options.get("sslrootcert")
        )
    return mode
