"""The database backends of dynamic secrets against real servers: a PostgreSQL cluster that requires passwords
(started by ``scram_postgres``), the machine's MariaDB and Redis. No ScaiVault database: the backends alone."""

from __future__ import annotations

import asyncio
import secrets
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import aiomysql
import asyncpg
import pymysql
import pytest
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, NoPermissionError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

from scaivault.dynamic import connection_urls, statements
from scaivault.dynamic.mysql import MySqlBackend
from scaivault.dynamic.port import (
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetRefused,
    TargetUnavailable,
)
from scaivault.dynamic.postgresql import PostgresBackend
from scaivault.dynamic.redis_acl import RedisAclBackend
from tests.dynamic_targets import (  # noqa: F401
    LOOPBACK_ALLOWED,
    DatabaseAdmin,
    free_port,
    mariadb_admin,
    redis_admin,
    scram_postgres,
    unique_token,
)

# --- helpers ---------------------------------------------------------------------------------------------------


def _credential(prefix: str, *, ttl: timedelta = timedelta(hours=1)) -> NewCredential:
    now = datetime.now(UTC).replace(microsecond=0)
    return NewCredential(
        lease_id=f"lease-{prefix}",
        username=f"{prefix}_{secrets.token_hex(4)}",
        password=secrets.token_urlsafe(24).replace("-", "_"),
        issued_at=now,
        expires_at=now + ttl,
    )


def _pg_target(
    admin: DatabaseAdmin, *, user: str | None = None, password: str | None = None, **config: Any
) -> EngineTarget:
    return EngineTarget(
        engine_type="database.postgresql",
        config={
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{admin.host}:{admin.port}/"
            f"{admin.database}?sslmode=disable",
            **config,
        },
        root={"username": user or admin.admin_user, "password": admin.admin_password if password is None else password},
        egress_allow=LOOPBACK_ALLOWED,
    )


def _my_target(admin: DatabaseAdmin, *, user: str | None = None, password: str | None = None) -> EngineTarget:
    return EngineTarget(
        engine_type="database.mysql",
        config={
            "connection_url": f"mysql://{{{{username}}}}:{{{{password}}}}@{admin.host}:{admin.port}/{admin.database}"
        },
        root={"username": user or admin.admin_user, "password": admin.admin_password if password is None else password},
        egress_allow=LOOPBACK_ALLOWED,
    )


def _redis_target(admin: DatabaseAdmin, *, user: str | None = None, password: str | None = None) -> EngineTarget:
    return EngineTarget(
        engine_type="database.redis",
        config={"connection_url": f"redis://{{{{username}}}}:{{{{password}}}}@{admin.host}:{admin.port}/0"},
        root={"username": user or admin.admin_user, "password": admin.admin_password if password is None else password},
        egress_allow=LOOPBACK_ALLOWED,
    )


async def _pg_admin(admin: DatabaseAdmin) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=admin.host,
        port=admin.port,
        user=admin.admin_user,
        password=admin.admin_password,
        database=admin.database,
        ssl=False,
    )


async def _pg_login(admin: DatabaseAdmin, user: str, password: str) -> asyncpg.Connection:
    return await asyncpg.connect(
        host=admin.host, port=admin.port, user=user, password=password, database=admin.database, ssl=False, timeout=5
    )


async def _my_admin(admin: DatabaseAdmin) -> aiomysql.Connection:
    return await aiomysql.connect(
        host=admin.host,
        port=admin.port,
        user=admin.admin_user,
        password=admin.admin_password,
        db=admin.database,
        autocommit=True,
    )


async def _my_login(admin: DatabaseAdmin, user: str, password: str) -> aiomysql.Connection:
    return await aiomysql.connect(
        host=admin.host,
        port=admin.port,
        user=user,
        password=password,
        db=admin.database,
        autocommit=True,
        connect_timeout=5,
    )


async def _my_query(connection: aiomysql.Connection, sql: str, args: Any = None) -> list[Any]:
    async with connection.cursor() as cursor:
        await cursor.execute(sql, args)
        return list(await cursor.fetchall())


def _assert_no_secret(error: BaseException, *secret_values: str) -> None:
    for value in secret_values:
        assert value not in str(error)
        assert value not in repr(error)


# --- statements and URLs (no server) --------------------------------------------------------------------------


def test_render_substitutes_every_placeholder_and_refuses_unknown_ones() -> None:
    text = statements.render(
        """CREATE ROLE "{{name}}" PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; -- {{username}}""",
        username="v_a1",
        password="Pw_1",
        expiration="2030-01-02 03:04:05+00",
    )
    assert text == """CREATE ROLE "v_a1" PASSWORD 'Pw_1' VALID UNTIL '2030-01-02 03:04:05+00'; -- v_a1"""
    with pytest.raises(ValueError, match="unknown placeholder {{schema}}"):
        statements.render("GRANT x ON {{schema}}", username="a", password="b", expiration="2030-01-01 00:00:00+00")


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("x'; DROP TABLE users; --", "username"),
        ('x"; DROP ROLE postgres; --', "username"),
        ("pw' OR '1'='1", "password"),
        ("", "password"),
        ("2030-01-01'; DROP", "expiration"),
    ],
)
def test_check_substitutable_refuses_quote_breakers(value: str, kind: statements.SubstitutableKind) -> None:
    with pytest.raises(ValueError) as raised:
        statements.check_substitutable(value, kind)
    if value:
        assert value not in str(raised.value)


def test_format_expiration_is_utc_with_an_offset() -> None:
    moment = datetime(2030, 1, 2, 5, 4, 5, 999, tzinfo=UTC)
    assert statements.format_expiration(moment) == "2030-01-02 05:04:05+00"
    plus_two = moment.astimezone(timezone(timedelta(hours=2)))
    assert statements.format_expiration(plus_two) == "2030-01-02 05:04:05+00"


def test_split_mysql_splits_outside_quotes_only() -> None:
    text = "CREATE USER 'a;b'@'%' IDENTIFIED BY 'x\\';y'; GRANT SELECT ON `d;b`.* TO 'a;b'@'%' ; -- tail; comment\n"
    assert statements.split_mysql(text) == [
        "CREATE USER 'a;b'@'%' IDENTIFIED BY 'x\\';y'",
        "GRANT SELECT ON `d;b`.* TO 'a;b'@'%'",
    ]


def test_scrub_removes_plain_and_url_quoted_secrets() -> None:
    assert statements.scrub("bad 'p@ss' in p%40ss", "p@ss") == "bad '***' in ***"


def test_fill_quotes_credentials_so_they_cannot_move_the_host() -> None:
    url = connection_urls.fill("postgresql://{{username}}:{{password}}@db.example:5432/app", "u", "p@evil:1/x")
    parsed = connection_urls.parse_target(url, ("postgresql",))
    assert (parsed.host, parsed.port, parsed.database, parsed.username) == ("db.example", 5432, "app", "u")
    assert parsed.password == "p@evil:1/x"
    assert "p@evil" not in repr(parsed)


def test_parse_target_refuses_other_schemes_without_echoing_the_url() -> None:
    with pytest.raises(TargetRefused) as raised:
        connection_urls.parse_target("http://u:s3cr3t@h/", ("redis",))
    assert "s3cr3t" not in str(raised.value)


async def test_checked_address_uses_the_guard_and_its_public_message() -> None:
    assert await connection_urls.checked_address("127.0.0.1", 5432, LOOPBACK_ALLOWED) == "127.0.0.1"
    with pytest.raises(TargetRefused) as raised:
        await connection_urls.checked_address("127.0.0.1", 5432, ())
    assert "127.0.0.1" not in str(raised.value)


def test_tls_context_checks_the_url_host_not_the_address() -> None:
    context = connection_urls.tls_context(server_name="db.example", verify_name=True)
    ssl_object = context.wrap_bio(ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="192.0.2.1")
    assert ssl_object.server_hostname == "db.example"
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED


# --- PostgreSQL -----------------------------------------------------------------------------------------------


@pytest.fixture
async def pg_table(scram_postgres: DatabaseAdmin) -> AsyncIterator[str]:  # noqa: F811
    """A table the created roles get SELECT on (and not INSERT)."""
    name = f"{unique_token()}_items"
    admin = await _pg_admin(scram_postgres)
    try:
        await admin.execute(f'CREATE TABLE "{name}" (id int); INSERT INTO "{name}" VALUES (1), (2)')
        yield name
    finally:
        await admin.execute(f'DROP TABLE IF EXISTS "{name}"')
        await admin.close()


async def _pg_role_exists(admin: DatabaseAdmin, name: str) -> bool:
    connection = await _pg_admin(admin)
    try:
        return bool(await connection.fetchval("SELECT count(*) FROM pg_roles WHERE rolname = $1", name))
    finally:
        await connection.close()


async def test_postgres_verify_and_wrong_root_password(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    backend = PostgresBackend(_pg_target(scram_postgres))
    try:
        await backend.verify()
    finally:
        await backend.close()
    wrong = secrets.token_hex(12)
    backend = PostgresBackend(_pg_target(scram_postgres, password=wrong))
    try:
        with pytest.raises(TargetRefused, match="PostgreSQL refused the root credentials") as raised:
            await backend.verify()
        _assert_no_secret(raised.value, wrong, scram_postgres.admin_password)
    finally:
        await backend.close()


async def test_postgres_verify_refuses_a_root_without_createrole(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    name, password = f"{unique_token()}_plain", secrets.token_hex(12)
    admin = await _pg_admin(scram_postgres)
    try:
        await admin.execute(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{password}'")
        backend = PostgresBackend(_pg_target(scram_postgres, user=name, password=password))
        try:
            with pytest.raises(TargetRefused, match="CREATEROLE"):
                await backend.verify()
        finally:
            await backend.close()
    finally:
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


async def test_postgres_egress_guard_and_unreachable_target(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    unguarded = _pg_target(scram_postgres)
    backend = PostgresBackend(EngineTarget(unguarded.engine_type, unguarded.config, unguarded.root))
    with pytest.raises(TargetRefused, match="not a publicly routable address") as raised:
        await backend.verify()
    _assert_no_secret(raised.value, scram_postgres.admin_password)
    await backend.close()
    closed = DatabaseAdmin("127.0.0.1", free_port(), "postgres", "x", "postgres")
    backend = PostgresBackend(_pg_target(closed))
    with pytest.raises(TargetUnavailable):
        await backend.verify()
    await backend.close()


async def test_postgres_credential_lifecycle(scram_postgres: DatabaseAdmin, pg_table: str) -> None:  # noqa: F811
    backend = PostgresBackend(_pg_target(scram_postgres))
    credential = _credential(unique_token())
    role = RoleRecipe(
        name="reader",
        creation_statements=(
            """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';""",
            f'GRANT SELECT ON "{pg_table}" TO "{{{{name}}}}";',
        ),
    )
    try:
        created = await backend.create(role, credential)
        assert created.data == {"username": credential.username, "password": credential.password}
        assert created.revocation == {}
        user = await _pg_login(scram_postgres, credential.username, credential.password)
        try:
            assert await user.fetchval(f'SELECT count(*) FROM "{pg_table}"') == 2
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await user.execute(f'INSERT INTO "{pg_table}" VALUES (3)')
        finally:
            await user.close()
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _pg_login(scram_postgres, credential.username, credential.password + "x")

        session = await _pg_login(scram_postgres, credential.username, credential.password)
        await backend.revoke(role, credential.username, created.revocation)
        # The server's FATAL may reach the idle client before or during the query: any error means it is cut off.
        with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)):
            await session.fetchval("SELECT 1")
        session.terminate()
        assert not await _pg_role_exists(scram_postgres, credential.username)
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _pg_login(scram_postgres, credential.username, credential.password)
        await backend.revoke(role, credential.username, created.revocation)
    finally:
        await _pg_drop(scram_postgres, credential.username)
        await backend.close()


async def _pg_drop(admin: DatabaseAdmin, name: str) -> None:
    connection = await _pg_admin(admin)
    try:
        if await connection.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
            await connection.execute(f'DROP OWNED BY "{name}"; DROP ROLE "{name}"')
    finally:
        await connection.close()


async def test_postgres_renew_moves_valid_until(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    backend = PostgresBackend(_pg_target(scram_postgres))
    credential = _credential(unique_token())
    role = RoleRecipe(name="default")
    try:
        await backend.create(role, credential)
        later = credential.expires_at + timedelta(days=2)
        await backend.renew(role, credential.username, {}, later)
        admin = await _pg_admin(scram_postgres)
        try:
            valid_until = await admin.fetchval(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1", credential.username
            )
        finally:
            await admin.close()
        assert valid_until == later
        await backend.revoke(role, credential.username, {})
    finally:
        await _pg_drop(scram_postgres, credential.username)
        await backend.close()


async def test_postgres_failing_creation_leaves_nothing_and_scrubs_the_password(
    scram_postgres: DatabaseAdmin,  # noqa: F811
) -> None:
    backend = PostgresBackend(_pg_target(scram_postgres))
    credential = _credential(unique_token())
    role = RoleRecipe(
        name="broken",
        creation_statements=(
            """CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';""",
            "SELECT '{{password}}'::int;",
        ),
    )
    try:
        with pytest.raises(TargetRefused, match="statement 2 of creation_statements failed: 22P02") as raised:
            await backend.create(role, credential)
        _assert_no_secret(raised.value, credential.password, scram_postgres.admin_password)
        assert not await _pg_role_exists(scram_postgres, credential.username)
    finally:
        await _pg_drop(scram_postgres, credential.username)
        await backend.close()


async def test_postgres_refuses_injection_and_unknown_placeholders(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    backend = PostgresBackend(_pg_target(scram_postgres))
    try:
        evil = _credential("x")
        evil = NewCredential(
            evil.lease_id, 'x"; DROP ROLE postgres; --', evil.password, evil.issued_at, evil.expires_at
        )
        with pytest.raises(TargetRefused, match="statement 1 of creation_statements cannot be rendered"):
            await backend.create(RoleRecipe(name="default"), evil)
        with pytest.raises(TargetRefused, match="revocation_statements cannot be rendered"):
            await backend.revoke(RoleRecipe(name="default"), "a'; DROP TABLE x; --", {})
        with pytest.raises(TargetRefused, match=r"unknown placeholder \{\{db\}\}"):
            await backend.create(RoleRecipe(name="r", creation_statements=("GRANT ALL ON {{db}}",)), _credential("y"))
        assert await _pg_role_exists(scram_postgres, "postgres")
    finally:
        await backend.close()


async def test_postgres_rotate_root(scram_postgres: DatabaseAdmin) -> None:  # noqa: F811
    name, old = f"{unique_token()}_root", secrets.token_hex(12)
    admin = await _pg_admin(scram_postgres)
    await admin.execute(f"CREATE ROLE \"{name}\" LOGIN CREATEROLE PASSWORD '{old}'")
    backend = PostgresBackend(_pg_target(scram_postgres, user=name, password=old))
    try:
        await backend.verify()
        new = secrets.token_hex(16)
        assert await backend.rotate_root(new) == {"username": name, "password": new}
        with pytest.raises(asyncpg.InvalidPasswordError):
            await _pg_login(scram_postgres, name, old)
        (await _pg_login(scram_postgres, name, new)).terminate()
        await backend.verify()
    finally:
        await backend.close()
        await admin.execute(f'DROP ROLE IF EXISTS "{name}"')
        await admin.close()


# --- MariaDB / MySQL ------------------------------------------------------------------------------------------


@pytest.fixture
async def my_table(mariadb_admin: DatabaseAdmin) -> AsyncIterator[str]:  # noqa: F811
    name = f"{unique_token()}_items"
    admin = await _my_admin(mariadb_admin)
    try:
        await _my_query(admin, f"CREATE TABLE `{name}` (id int)")
        await _my_query(admin, f"INSERT INTO `{name}` VALUES (1), (2)")
        yield name
    finally:
        await _my_query(admin, f"DROP TABLE IF EXISTS `{name}`")
        admin.close()


async def _my_user_exists(admin: DatabaseAdmin, name: str) -> bool:
    connection = await _my_admin(admin)
    try:
        return bool(await _my_query(connection, "SELECT 1 FROM mysql.user WHERE User = %s", (name,)))
    finally:
        connection.close()


async def _my_drop(admin: DatabaseAdmin, name: str) -> None:
    connection = await _my_admin(admin)
    try:
        if await _my_query(connection, "SELECT 1 FROM mysql.user WHERE User = %s", (name,)):
            await _my_query(connection, f"DROP USER '{name}'@'%%'")
    finally:
        connection.close()


async def test_mysql_verify_and_wrong_root_password(mariadb_admin: DatabaseAdmin) -> None:  # noqa: F811
    backend = MySqlBackend(_my_target(mariadb_admin))
    await backend.verify()
    wrong = secrets.token_hex(12)
    backend = MySqlBackend(_my_target(mariadb_admin, password=wrong))
    with pytest.raises(TargetRefused, match="MariaDB/MySQL refused the root credentials") as raised:
        await backend.verify()
    _assert_no_secret(raised.value, wrong, mariadb_admin.admin_password)


async def test_mysql_verify_refuses_a_root_without_create_user(mariadb_admin: DatabaseAdmin) -> None:  # noqa: F811
    name, password = f"{unique_token()}_plain", secrets.token_hex(12)
    admin = await _my_admin(mariadb_admin)
    try:
        await _my_query(admin, f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (password,))
        await _my_query(admin, f"GRANT SELECT ON `{mariadb_admin.database}`.* TO '{name}'@'%'")
        with pytest.raises(TargetRefused, match="CREATE USER"):
            await MySqlBackend(_my_target(mariadb_admin, user=name, password=password)).verify()
    finally:
        await _my_query(admin, f"DROP USER IF EXISTS '{name}'@'%'")
        admin.close()


async def test_mysql_unreachable_target() -> None:
    closed = DatabaseAdmin("127.0.0.1", free_port(), "root", "x", "")
    with pytest.raises(TargetUnavailable):
        await MySqlBackend(_my_target(closed)).verify()


async def test_mysql_credential_lifecycle(mariadb_admin: DatabaseAdmin, my_table: str) -> None:  # noqa: F811
    backend = MySqlBackend(_my_target(mariadb_admin))
    credential = _credential(unique_token())
    role = RoleRecipe(
        name="reader",
        creation_statements=(
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';"
            f"GRANT SELECT ON `{mariadb_admin.database}`.`{my_table}` TO '{{{{name}}}}'@'%';",
        ),
    )
    try:
        created = await backend.create(role, credential)
        assert created.data == {"username": credential.username, "password": credential.password}
        user = await _my_login(mariadb_admin, credential.username, credential.password)
        try:
            assert await _my_query(user, f"SELECT count(*) FROM `{my_table}`") == [(2,)]
            with pytest.raises(pymysql.err.OperationalError) as denied:
                await _my_query(user, f"INSERT INTO `{my_table}` VALUES (3)")
            assert denied.value.args[0] == 1142
        finally:
            user.close()
        with pytest.raises(pymysql.err.OperationalError) as wrong:
            await _my_login(mariadb_admin, credential.username, credential.password + "x")
        assert wrong.value.args[0] == 1045

        session = await _my_login(mariadb_admin, credential.username, credential.password)
        await backend.revoke(role, credential.username, created.revocation)
        with pytest.raises((pymysql.err.OperationalError, pymysql.err.InterfaceError, RuntimeError)):
            await _my_query(session, "SELECT 1")
        session.close()
        assert not await _my_user_exists(mariadb_admin, credential.username)
        with pytest.raises(pymysql.err.OperationalError):
            await _my_login(mariadb_admin, credential.username, credential.password)
        await backend.revoke(role, credential.username, created.revocation)
    finally:
        await _my_drop(mariadb_admin, credential.username)


async def test_mysql_failing_creation_leaves_nothing(mariadb_admin: DatabaseAdmin) -> None:  # noqa: F811
    backend = MySqlBackend(_my_target(mariadb_admin))
    credential = _credential(unique_token())
    role = RoleRecipe(
        name="broken",
        creation_statements=(
            "CREATE USER '{{name}}'@'%' IDENTIFIED BY '{{password}}';",
            f"GRANT SELECT ON `{mariadb_admin.database}`.`no_such_table_{unique_token()}` TO '{{{{name}}}}'@'%';",
        ),
    )
    try:
        with pytest.raises(TargetRefused, match="statement 2 of creation_statements failed: 1146") as raised:
            await backend.create(role, credential)
        _assert_no_secret(raised.value, credential.password, mariadb_admin.admin_password)
        assert not await _my_user_exists(mariadb_admin, credential.username)
        evil = NewCredential("l", "a'@'%'; DROP USER root; --", "pw", credential.issued_at, credential.expires_at)
        with pytest.raises(TargetRefused, match="cannot be rendered"):
            await backend.create(RoleRecipe(name="default"), evil)
    finally:
        await _my_drop(mariadb_admin, credential.username)


async def test_mysql_rotate_root(mariadb_admin: DatabaseAdmin) -> None:  # noqa: F811
    name, old = f"{unique_token()}_root", secrets.token_hex(12)
    admin = await _my_admin(mariadb_admin)
    await _my_query(admin, f"CREATE USER '{name}'@'%%' IDENTIFIED BY %s", (old,))
    await _my_query(admin, f"GRANT CREATE USER ON *.* TO '{name}'@'%'")
    await _my_query(admin, f"GRANT SELECT ON `{mariadb_admin.database}`.* TO '{name}'@'%'")
    try:
        backend = MySqlBackend(_my_target(mariadb_admin, user=name, password=old))
        await backend.verify()
        new = secrets.token_hex(16)
        assert await backend.rotate_root(new) == {"username": name, "password": new}
        with pytest.raises(pymysql.err.OperationalError):
            await _my_login(mariadb_admin, name, old)
        (await _my_login(mariadb_admin, name, new)).close()
        await backend.verify()
    finally:
        await _my_query(admin, f"DROP USER IF EXISTS '{name}'@'%'")
        admin.close()


# --- Redis ----------------------------------------------------------------------------------------------------


def _redis_client(admin: DatabaseAdmin, user: str | None = None, password: str | None = None) -> redis.Redis:
    return redis.Redis(
        host=admin.host,
        port=admin.port,
        username=user or admin.admin_user,
        password=admin.admin_password if password is None else password,
        socket_timeout=5,
        retry=Retry(NoBackoff(), 0),
    )


async def _acl_users(admin: DatabaseAdmin) -> list[str]:
    client = _redis_client(admin)
    try:
        return [u.decode() if isinstance(u, bytes) else str(u) for u in await client.execute_command("ACL", "USERS")]
    finally:
        await client.aclose()


async def _redis_drop(admin: DatabaseAdmin, name: str) -> None:
    client = _redis_client(admin)
    try:
        await client.execute_command("ACL", "DELUSER", name)
    finally:
        await client.aclose()


async def test_redis_verify_and_wrong_root_password(redis_admin: DatabaseAdmin) -> None:  # noqa: F811
    backend = RedisAclBackend(_redis_target(redis_admin))
    try:
        await backend.verify()
    finally:
        await backend.close()
    wrong = secrets.token_hex(12)
    backend = RedisAclBackend(_redis_target(redis_admin, password=wrong))
    try:
        with pytest.raises(TargetRefused, match="Redis refused the root credentials") as raised:
            await backend.verify()
        _assert_no_secret(raised.value, wrong, redis_admin.admin_password)
    finally:
        await backend.close()


async def test_redis_unreachable_target() -> None:
    closed = DatabaseAdmin("127.0.0.1", free_port(), "root", "x", "0")
    backend = RedisAclBackend(_redis_target(closed))
    try:
        with pytest.raises(TargetUnavailable):
            await backend.verify()
    finally:
        await backend.close()


async def test_redis_credential_lifecycle(redis_admin: DatabaseAdmin) -> None:  # noqa: F811
    token = unique_token()
    backend = RedisAclBackend(_redis_target(redis_admin))
    credential = _credential(token)
    role = RoleRecipe(name="cache", creation_statements=(f"~{token}:cache:* +get", "+set"))
    admin = _redis_client(redis_admin)
    try:
        await admin.set(f"{token}:cache:a", "1")
        await admin.set(f"{token}:other", "2")
        created = await backend.create(role, credential)
        assert created.data == {"username": credential.username, "password": credential.password}
        assert credential.username in await _acl_users(redis_admin)
        user = _redis_client(redis_admin, credential.username, credential.password)
        try:
            assert await user.get(f"{token}:cache:a") == b"1"
            with pytest.raises(NoPermissionError):
                await user.get(f"{token}:other")
            with pytest.raises(NoPermissionError):
                await user.delete(f"{token}:cache:a")
        finally:
            await user.aclose()
        wrong = _redis_client(redis_admin, credential.username, credential.password + "x")
        with pytest.raises(AuthenticationError):
            await wrong.ping()
        await wrong.aclose()

        session = _redis_client(redis_admin, credential.username, credential.password)
        await session.get(f"{token}:cache:a")
        await backend.revoke(role, credential.username, created.revocation)
        with pytest.raises((RedisConnectionError, AuthenticationError, ResponseError)):
            await session.get(f"{token}:cache:a")
        await session.aclose()
        assert credential.username not in await _acl_users(redis_admin)
        await backend.revoke(role, credential.username, created.revocation)
    finally:
        await admin.delete(f"{token}:cache:a", f"{token}:other")
        await admin.aclose()
        await _redis_drop(redis_admin, credential.username)
        await backend.close()


@pytest.mark.parametrize("rule", ["nopass", "resetpass", ">other", "<x", "#abc", "!abc", "on", "off", "reset"])
async def test_redis_refuses_rules_touching_the_password(redis_admin: DatabaseAdmin, rule: str) -> None:  # noqa: F811
    backend = RedisAclBackend(_redis_target(redis_admin))
    credential = _credential(unique_token())
    try:
        with pytest.raises(TargetRefused) as raised:
            await backend.create(RoleRecipe(name="r", creation_statements=(f"~* {rule} +@read",)), credential)
        if rule[0] in "><#!":
            assert rule not in str(raised.value)
        assert credential.username not in await _acl_users(redis_admin)
    finally:
        await backend.close()


async def test_redis_bad_rule_leaves_nothing(redis_admin: DatabaseAdmin) -> None:  # noqa: F811
    backend = RedisAclBackend(_redis_target(redis_admin))
    credential = _credential(unique_token())
    try:
        with pytest.raises(TargetRefused, match="creating the ACL user failed") as raised:
            await backend.create(RoleRecipe(name="r", creation_statements=("~* +nosuchcommand",)), credential)
        _assert_no_secret(raised.value, credential.password, redis_admin.admin_password)
        assert credential.username not in await _acl_users(redis_admin)
    finally:
        await _redis_drop(redis_admin, credential.username)
        await backend.close()


async def test_redis_rotate_root(redis_admin: DatabaseAdmin) -> None:  # noqa: F811
    name, old = f"{unique_token()}_root", secrets.token_hex(12)
    admin = _redis_client(redis_admin)
    await admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{old}", "+@all", "~*", "&*")
    backend = RedisAclBackend(_redis_target(redis_admin, user=name, password=old))
    try:
        await backend.verify()
        new = secrets.token_hex(16)
        assert await backend.rotate_root(new) == {"username": name, "password": new}
        stale = _redis_client(redis_admin, name, old)
        with pytest.raises(AuthenticationError):
            await stale.ping()
        await stale.aclose()
        fresh = _redis_client(redis_admin, name, new)
        assert await fresh.ping()
        await fresh.aclose()
        await backend.verify()
        default_root = RedisAclBackend(_redis_target(redis_admin, user="default", password=""))
        with pytest.raises(TargetRefused, match="other than default"):
            await default_root.rotate_root(secrets.token_hex(8))
    finally:
        await backend.close()
        await admin.execute_command("ACL", "DELUSER", name)
        await admin.aclose()


async def test_backends_reprs_hold_no_secret(
    scram_postgres: DatabaseAdmin,  # noqa: F811
    mariadb_admin: DatabaseAdmin,  # noqa: F811
    redis_admin: DatabaseAdmin,  # noqa: F811
) -> None:
    for backend in (
        PostgresBackend(_pg_target(scram_postgres)),
        MySqlBackend(_my_target(mariadb_admin)),
        RedisAclBackend(_redis_target(redis_admin)),
    ):
        text = repr(backend)
        for admin in (scram_postgres, mariadb_admin, redis_admin):
            assert admin.admin_password not in text
        await backend.close()
    assert asyncio.get_running_loop()
