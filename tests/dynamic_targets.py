"""Real targets for the dynamic-secrets backends, as pytest fixtures other test modules import:

    from tests.dynamic_targets import mariadb_admin, redis_admin, scram_postgres  # noqa: F401

``scram_postgres`` starts a PostgreSQL cluster of its own that requires passwords over TCP (the machine's server on
5432 trusts every loopback login, so a test there cannot show that a generated password matters). ``mariadb_admin``
and ``redis_admin`` make a uniquely named admin user on the machine's MariaDB (127.0.0.1:3306, root without a
password) and Redis (127.0.0.1:6379), to be the engine's root, so parallel workers never share one.

The fixtures are synchronous (subprocesses and blocking clients) so that session scope does not tie them to one
event loop.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scaivault.egress import IPNetwork, parse_allow_list

LOOPBACK_ALLOWED: tuple[IPNetwork, ...] = parse_allow_list("127.0.0.0/8")
MARIADB_HOST, MARIADB_PORT = "127.0.0.1", 3306
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379


@dataclass(frozen=True)
class DatabaseAdmin:
    """An admin login on a real target; ``admin_password`` is kept out of the repr like any secret."""

    host: str
    port: int
    admin_user: str
    admin_password: str = field(repr=False)
    database: str = ""


def unique_token() -> str:
    """A lowercase prefix for the names a test creates: two workers may run the same test at the same time."""
    return "t" + secrets.token_hex(5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _pg_bindir() -> Path | None:
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parent.parent.name or 0)
    )
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _as_postgres(command: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as the ``postgres`` OS user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


@pytest.fixture(scope="session")
def scram_postgres() -> Iterator[DatabaseAdmin]:
    """A throwaway PostgreSQL cluster on a free port of 127.0.0.1 with scram-sha-256 for every TCP login."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("initdb not found: cannot start a PostgreSQL cluster that requires passwords")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        pytest.skip("running as root without runuser: cannot run initdb as the postgres user")
    base = Path(tempfile.mkdtemp(prefix="scaivault-scram-pg-"))
    data = base / "data"
    password = secrets.token_hex(16)
    pwfile = base / "pwfile"
    pwfile.write_text(password + "\n")
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    pwfile.chmod(0o600)
    port = free_port()
    started = False
    try:
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    f"--pwfile={pwfile}",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        pwfile.unlink()
        options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run(
            _as_postgres(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-D",
                    str(data),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(base / "server.log"),
                    "-o",
                    options,
                ]
            ),
            check=True,
            capture_output=True,
            timeout=90,
        )
        started = True
        deadline = time.monotonic() + 30
        while not _answers("127.0.0.1", port):
            if time.monotonic() > deadline:
                pytest.fail(f"the scram PostgreSQL cluster did not listen on port {port}")
            time.sleep(0.1)
        yield DatabaseAdmin("127.0.0.1", port, "postgres", password, "postgres")
    except subprocess.CalledProcessError as exc:
        log = base / "server.log"
        detail = log.read_text()[-2000:] if log.exists() else exc.stderr.decode(errors="replace")[-2000:]
        pytest.fail(f"could not start the scram PostgreSQL cluster: {detail}")
    finally:
        if started:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                subprocess.run(
                    _as_postgres([str(bindir / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate"]),
                    capture_output=True,
                    timeout=60,
                )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def mariadb_admin() -> Iterator[DatabaseAdmin]:
    """A uniquely named MariaDB user with every privilege (WITH GRANT OPTION) and a password, and a database of its
    own; both dropped at the end."""
    if not _answers(MARIADB_HOST, MARIADB_PORT):
        pytest.skip(f"no MariaDB/MySQL answers on {MARIADB_HOST}:{MARIADB_PORT}")
    import pymysql

    token = unique_token()
    user, database, password = f"{token}_admin", f"{token}_db", secrets.token_hex(16)
    root = pymysql.connect(host=MARIADB_HOST, port=MARIADB_PORT, user="root", password="", autocommit=True)
    try:
        with root.cursor() as cursor:
            cursor.execute(f"CREATE USER '{user}'@'%%' IDENTIFIED BY %s", (password,))
            cursor.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{user}'@'%' WITH GRANT OPTION")
            cursor.execute(f"CREATE DATABASE `{database}`")
        yield DatabaseAdmin(MARIADB_HOST, MARIADB_PORT, user, password, database)
    finally:
        with root.cursor() as cursor:
            cursor.execute(f"DROP USER IF EXISTS '{user}'@'%'")
            cursor.execute(f"DROP DATABASE IF EXISTS `{database}`")
        root.close()


@pytest.fixture(scope="session")
def redis_admin() -> Iterator[DatabaseAdmin]:
    """A uniquely named Redis ACL user with every right (``+@all ~* &*``) and a password; deleted at the end."""
    if not _answers(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"no Redis answers on {REDIS_HOST}:{REDIS_PORT}")
    import redis

    token = unique_token()
    user, password = f"{token}_admin", secrets.token_hex(16)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        client.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", "+@all", "~*", "&*")
        yield DatabaseAdmin(REDIS_HOST, REDIS_PORT, user, password, "0")
    finally:
        client.execute_command("ACL", "DELUSER", user)
        client.close()
