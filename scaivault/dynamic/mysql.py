"""The ``database.mysql`` backend (MariaDB and MySQL): users created with the engine's root user over aiomysql.

Each item of a role's statements is split on ``;`` (outside quotes) and the pieces run one by one: the client keeps
multi-statements off. ``CREATE USER`` and ``GRANT`` commit implicitly, so no transaction can hold a create together:
when one statement fails, the role's revocation statements run (best effort) before the error is raised, so what
was created is removed again.

``verify`` reads ``SHOW GRANTS`` and refuses a root user whose grants show neither ``CREATE USER`` nor
``ALL PRIVILEGES ON *.*``. That can refuse a MySQL 8 root that holds the right only through a role (its grants
name the role, not the privilege); such an engine's root user needs the privilege granted directly.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

import aiomysql
import pymysql

from scaivault.dynamic.connection_urls import (
    UrlBackend,
    checked_address,
    tls_context,
    unencrypted_context,
)
from scaivault.dynamic.port import (
    CreatedCredential,
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetRefused,
    TargetUnavailable,
)
from scaivault.dynamic.statements import (
    EPOCH,
    UNUSED_PASSWORD,
    format_expiration,
    render_statements,
    scrub,
    split_mysql,
)

DEFAULT_CREATION = ("CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",)
DEFAULT_REVOCATION = ("DROP USER IF EXISTS '{{name}}'@'%';",)

CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_SECONDS = 10.0
_SCHEMES = ("mysql", "mariadb")
_OPTIONS = ("ssl-mode", "ssl-ca")
_SSL_MODES = ("DISABLED", "PREFERRED", "REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY")
# What a driver call can raise (aiomysql raises RuntimeError for some protocol states); anything else is a bug of
# ours and propagates as itself.
_DRIVER_ERRORS = (pymysql.MySQLError, OSError, TimeoutError, RuntimeError)
_ROOT_REFUSED = "MariaDB/MySQL refused the root credentials"
_ACCESS_DENIED = (1045, 1698)
_UNKNOWN_THREAD = 1094
# Client-side error codes (2000-2999: could not connect, lost the connection) and the server's "too many
# connections" / "query interrupted by its time limit": worth retrying, not a refusal.
_UNAVAILABLE = (1040, 1053, 1969, 3024)


class MySqlBackend(UrlBackend):
    """One engine's MariaDB/MySQL server. A connection per operation: the operations are rare, and a pool would
    keep the root user logged in between them."""

    SCHEMES = _SCHEMES
    OPTIONS = _OPTIONS
    LABEL = "MariaDB/MySQL"

    def __init__(self, target: EngineTarget) -> None:
        super().__init__(target)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiomysql.Connection]:
        url = self._url()
        mode = url.options.get("ssl-mode", "PREFERRED").upper()
        if mode not in _SSL_MODES:
            raise TargetRefused(f"ssl-mode must be one of {', '.join(_SSL_MODES)}")
        address = await checked_address(url.host, url.port, self._target.egress_allow)
        context: ssl.SSLContext | None = None
        if mode in ("VERIFY_CA", "VERIFY_IDENTITY"):
            context = tls_context(
                server_name=url.host, verify_name=mode == "VERIFY_IDENTITY", ca_file=url.options.get("ssl-ca")
            )
        elif mode in ("PREFERRED", "REQUIRED"):
            context = unencrypted_context()
        try:
            connection = await asyncio.wait_for(
                aiomysql.connect(
                    host=address,
                    port=url.port,
                    user=url.username,
                    password=url.password,
                    db=url.database or None,
                    connect_timeout=CONNECT_TIMEOUT_SECONDS,
                    autocommit=True,
                    ssl=context,
                    local_infile=False,
                    program_name="scaivault-dynamic",
                ),
                timeout=CONNECT_TIMEOUT_SECONDS * 2,
            )
        except _DRIVER_ERRORS as exc:
            raise self._connect_error(exc) from None
        try:
            # aiomysql goes on in plain text when the server offers no TLS; REQUIRED and stronger must not.
            if mode not in ("DISABLED", "PREFERRED") and not getattr(connection, "_secure", False):
                raise TargetRefused("the MariaDB/MySQL server does not offer TLS, which ssl-mode requires")
            await self._limit_statement_time(connection)
            yield connection
        finally:
            connection.close()

    async def _limit_statement_time(self, connection: aiomysql.Connection) -> None:
        """MariaDB ends a statement running longer than this itself; MySQL only has a limit for SELECT, so there the
        client's timeout is all."""
        if "mariadb" not in str(connection.get_server_info()).lower():
            return
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(f"SET SESSION max_statement_time = {int(STATEMENT_TIMEOUT_SECONDS)}")
        except _DRIVER_ERRORS as exc:
            raise self._statement_error(exc, "the session setup", 1) from None

    def _connect_error(self, exc: BaseException) -> BaseException:
        code = _code(exc)
        if code in _ACCESS_DENIED:
            return TargetRefused(_ROOT_REFUSED)
        if code == 1044:
            return TargetRefused("the root user may not use the connection_url's database")
        if code == 1049:
            return TargetRefused("MariaDB/MySQL has no database of the connection_url's name")
        if isinstance(exc, ssl.SSLCertVerificationError) or isinstance(exc.__cause__, ssl.SSLCertVerificationError):
            return TargetRefused("the MariaDB/MySQL server's TLS certificate failed verification")
        if code is not None and (2000 <= code < 3000 or code in _UNAVAILABLE):
            return TargetUnavailable(f"MariaDB/MySQL could not be reached (error {code})")
        if isinstance(exc, pymysql.MySQLError):
            return TargetRefused(f"MariaDB/MySQL refused the connection: {code} {scrub(_text(exc), *self._secrets())}")
        if isinstance(exc, Exception):
            return TargetUnavailable(f"MariaDB/MySQL could not be reached: {type(exc).__name__}")
        return exc

    def _statement_error(self, exc: BaseException, kind: str, index: int, *extra_secrets: str) -> BaseException:
        code = _code(exc)
        if isinstance(exc, TimeoutError) or code in (1969, 3024):
            return TargetUnavailable(f"statement {index} of {kind} timed out")
        if isinstance(exc, pymysql.MySQLError) and code is not None and not 2000 <= code < 3000:
            text = scrub(_text(exc), *self._secrets(*extra_secrets))
            return TargetRefused(f"statement {index} of {kind} failed: {code} {text}")
        return self._connect_error(exc)

    async def _run(
        self, connection: aiomysql.Connection, statements: Sequence[str], kind: str, values: Mapping[str, str]
    ) -> None:
        rendered = render_statements(statements, kind, values)
        for index, item in enumerate(rendered, start=1):
            for piece in split_mysql(item):
                try:
                    async with connection.cursor() as cursor:
                        await asyncio.wait_for(cursor.execute(piece), timeout=STATEMENT_TIMEOUT_SECONDS)
                except _DRIVER_ERRORS as exc:
                    raise self._statement_error(exc, kind, index, values["password"]) from None

    async def verify(self) -> None:
        async with self._connection() as connection:
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute("SHOW GRANTS FOR CURRENT_USER()")
                    grants = [str(row[0]) for row in await cursor.fetchall()]
            except _DRIVER_ERRORS as exc:
                raise self._statement_error(exc, "the verification", 1) from None
        normalized = [" ".join(grant.upper().replace("`", "").split()) for grant in grants]
        if not any("CREATE USER" in grant or "ALL PRIVILEGES ON *.*" in grant for grant in normalized):
            raise TargetRefused("the root user may not create users (CREATE USER)")

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        values = {
            "username": credential.username,
            "password": credential.password,
            "expiration": format_expiration(credential.expires_at),
        }
        creation = tuple(role.creation_statements) or DEFAULT_CREATION
        revocation = tuple(role.revocation_statements) or DEFAULT_REVOCATION
        render_statements(revocation, "revocation_statements", values)
        async with self._connection() as connection:
            try:
                await self._run(connection, creation, "creation_statements", values)
            except BaseException:
                await self._undo(connection, revocation, values)
                raise
        return CreatedCredential(data={"username": credential.username, "password": credential.password})

    async def _undo(
        self, connection: aiomysql.Connection, revocation: Sequence[str], values: Mapping[str, str]
    ) -> None:
        """Best effort: the error of the create is the one the caller sees; a statement that fails here (it drops
        what was never created) must not hide it."""
        for item in render_statements(revocation, "revocation_statements", values):
            for piece in split_mysql(item):
                try:
                    async with connection.cursor() as cursor:
                        await asyncio.wait_for(cursor.execute(piece), timeout=STATEMENT_TIMEOUT_SECONDS)
                except (pymysql.MySQLError, TimeoutError, OSError):
                    continue

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        if not role.renew_statements:
            return
        values = {"username": username, "password": UNUSED_PASSWORD, "expiration": format_expiration(expires_at)}
        async with self._connection() as connection:
            await self._run(connection, tuple(role.renew_statements), "renew_statements", values)

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        values = {"username": username, "password": UNUSED_PASSWORD, "expiration": format_expiration(EPOCH)}
        statements = tuple(role.revocation_statements) or DEFAULT_REVOCATION
        render_statements(statements, "revocation_statements", values)
        async with self._connection() as connection:
            if await self._user_exists(connection, username):
                await self._run(connection, statements, "revocation_statements", values)
            # Always, also when the user is already gone: a revoke that dropped the user and then failed to end its
            # sessions is retried, and the sessions of a dropped user keep working until killed.
            await self._kill_sessions(connection, username)

    async def _user_exists(self, connection: aiomysql.Connection, username: str) -> bool:
        try:
            async with connection.cursor() as cursor:
                await cursor.execute("SELECT 1 FROM mysql.user WHERE User = %s LIMIT 1", (username,))
                return await cursor.fetchone() is not None
        except pymysql.MySQLError as exc:
            if _code(exc) in (1142, 1143):
                # No read access to mysql.user: run the statements, whose defaults are idempotent.
                return True
            raise self._statement_error(exc, "the revocation check", 1) from None
        except _DRIVER_ERRORS as exc:
            raise self._statement_error(exc, "the revocation check", 1) from None

    async def _kill_sessions(self, connection: aiomysql.Connection, username: str) -> None:
        try:
            async with connection.cursor() as cursor:
                await cursor.execute(
                    "SELECT ID FROM information_schema.PROCESSLIST WHERE USER = %s AND ID <> CONNECTION_ID()",
                    (username,),
                )
                ids = [int(row[0]) for row in await cursor.fetchall()]
                for thread_id in ids:
                    try:
                        await cursor.execute(f"KILL CONNECTION {thread_id:d}")
                    except pymysql.MySQLError as exc:
                        if _code(exc) != _UNKNOWN_THREAD:
                            raise
        except pymysql.MySQLError as exc:
            if _code(exc) == 1095:
                raise TargetRefused(
                    "the root user may not end the sessions of the user being revoked (CONNECTION ADMIN or SUPER)"
                ) from None
            raise self._statement_error(exc, "ending the user's sessions", 1) from None
        except _DRIVER_ERRORS as exc:
            raise self._statement_error(exc, "ending the user's sessions", 1) from None

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        """By the account's name from ``CURRENT_USER()``: MariaDB 10.11 accepts ``ALTER USER CURRENT_USER()
        IDENTIFIED BY`` and silently changes nothing. A login with the new password then proves the change, so the
        caller never stores a password the server does not have."""
        url = self._url()
        async with self._connection() as connection:
            try:
                async with connection.cursor() as cursor:
                    await cursor.execute("SELECT CURRENT_USER()")
                    row = await cursor.fetchone()
                    account = str(row[0]) if row else ""
                    user, _, host = account.rpartition("@")
                    if not user:
                        raise TargetRefused("the server did not name the root account (CURRENT_USER())")
                    await cursor.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, new_password))
            except _DRIVER_ERRORS as exc:
                raise self._statement_error(exc, "the root rotation", 1, new_password) from None
        previous = self._root_password_override
        self._root_password_override = new_password
        try:
            async with self._connection():
                pass
        except TargetRefused:
            self._root_password_override = previous
            raise TargetRefused("the root password change did not take effect on the server") from None
        return {**dict(self._target.root), "username": url.username, "password": new_password}

    async def close(self) -> None:
        """Nothing stays open between operations."""


def _code(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return int(exc.args[0])
    return None


def _text(exc: BaseException) -> str:
    if isinstance(exc, pymysql.MySQLError) and len(exc.args) > 1:
        return str(exc.args[1])
    return type(exc).__name__
