"""Latency against store size: is a read, a write or a listing as fast with a million secrets stored as with a
thousand?

Two ScaiVault servers (``scaivault serve``, started by bench/peer.py's ``scaivault()``), each on a fresh database of
its own, one holding ``--small`` secrets, the other ``--large``, are measured side by side by wrk (bench/peer.py's
``measure``: an unmeasured warm-up each, then ``--rounds`` slices in alternating order, distributions merged), at
``--connections`` (32) connections, with a token whose policy grants read, write and list on bench/**:

    read    GET of existing secrets of the benchmark tenant: a shuffled sample (up to 100,000) of its whole keyspace,
            taken in turn from a random starting point in every wrk run
    update  PUT of a new version to those secrets
    write   PUT to fresh paths (every request creates a secret)
    list    GET /v1/secrets?prefix=<folder>/ of a folder of 25 secrets (the same size in both stores)

The stores are filled without HTTP, as bench/history.py writes its history: real ``Secret`` aggregates and
``AccessRecorded`` events saved through ``Repository.save`` in transactions of about 5,000 events. Every version is
a write request (data key made and wrapped by the owner's key, value sealed under it, ``Secret.write``, the request's
access record); 80% of the secrets were read since (an access record naming the secret, which sets its last-access
time). In the same transaction the inline secrets read model is applied by ``SecretsProjection.apply``, the code a
rebuild replays, which gives what the commands' inline projector gives. The catch-up projections (audit log, event
index) are then built by ``Rebuilder``, which records their positions, so the servers start caught up; then
``VACUUM ANALYZE`` (as autovacuum would have by then) and a ``CHECKPOINT``. Secrets belong to six tenants of two
partners and to the partners themselves (30% to the benchmark tenant), created in random order across owners, in
folders of 25; 30% have a second or later version; most values are tens of bytes, an SSH key about 0.5 KB, a
certificate with its key about 1.4 KB.

Afterwards, with no server running, the statements of a read, a listing, an update, a fresh write, a catch-up
runner's next batch and the once-a-minute housekeeping are captured from the real code and run under
``EXPLAIN (ANALYZE, BUFFERS)`` with a custom plan and with the generic plan that a prepared statement may switch to;
sequential scans of large tables, big sorts and hashes are flagged where the server would run that plan. Results are
printed and written to bench/results/scale-latest.json (fill rate, database size and event count of each store,
figures, ratios large ÷ small against the target p99 ratio of 1.3, the plans).

    python -m bench.scale [--small 1000] [--large 1000000] [--seconds 10] [--rounds 4] [--warmup 2]
                          [--connections 32] [--loads read,update,write,list] [--seed 7] [--workers N]
                          [--fill-only] [--keep-databases]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import asyncpg
from eventsourcing.domain import Aggregate

from bench.history import Cpu
from bench.peer import Cell, Target, comma_list, machine, measure, request, scaivault
from bench.run import ADMIN_URL, RESULTS, admin, source_version
from projections.maintenance.rebuild import ReadModel, Rebuilder
from projections.maintenance.retention import enforce_audit_retention
from projections.secrets import queries
from projections.secrets.lookup import PostgresSecretLookup
from projections.secrets.projection import SecretsProjection
from projections.secrets.projector import project_secret_event
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.revocation import purge_expired as purge_expired_revocations
from scaivault.bootstrap import Container, build_container, catch_up_projections
from scaivault.clock import utcnow
from scaivault.config import Settings
from scaivault.crypto.aead import generate_key, seal
from scaivault.crypto.keyring import data_key_aad
from scaivault.crypto.secret_values import seal_value
from scaivault.domain.access import ACCESS_TOPIC
from scaivault.domain.durations import parse_duration
from scaivault.domain.secrets import Secret, secret_stream_id
from scaivault.ids import new_id, new_request_id

LOADS = ("read", "update", "write", "list")
TARGET_P99_RATIO = 1.3  # large ÷ small, per load
MAX_SECRETS = 10_000_000
SAVE_BATCH = 5_000  # events per fill transaction
READ_SAMPLE = 100_000  # secrets the read and update loads go through (at most)
LIST_SAMPLE = 5_000  # folders the list load goes through (at most)
MAX_PAGES = 1_000  # what a hot statement may read before its plan is flagged (8 MB)
FOLDER_SIZE = 25
TEAMS = 40
KINDS = ("db", "api", "token", "db", "tls", "api", "ssh", "db", "token", "api")  # by slot in a folder
BENCH_OWNER = "tnt_bench"  # the tenant bench/peer.py's token reads and writes (its policy covers bench/**)
PERMISSIONS = ("read", "write", "list")
HISTORY_SPAN = timedelta(days=365)  # the fill's requests are dated over the last year
READ_SHARE = 0.8  # secrets whose value was read since their last write (their last-access time is set)
IDENTITIES = ("sa:deployer", "sa:ci", "user:alice@acme.example", "user:bob@acme.example", "sa:terraform")
AGENTS = ("scaivault-cli/1.4.2", "python-httpx/0.27.0", "Go-http-client/1.1", "terraform-provider-scaivault/0.9.1")


@dataclass(frozen=True)
class Owner:
    """Who owns a share of the secrets: a tenant, or a partner (its shared secrets)."""

    partner_id: str
    tenant_id: str | None
    share: float
    root: str  # the first segment of its paths

    @property
    def owner(self) -> str:
        return self.tenant_id or self.partner_id

    @property
    def route(self) -> str:
        return "/v1/secrets/{path}" if self.tenant_id else "/v1/partner/secrets/{path}"


OWNERS = (
    Owner("ptn_bench", BENCH_OWNER, 0.30, "bench"),
    Owner("ptn_bench", "tnt_scale_a1", 0.20, "apps"),
    Owner("ptn_bench", "tnt_scale_a2", 0.10, "apps"),
    Owner("ptn_bench", None, 0.005, "shared"),
    Owner("ptn_scale_b", "tnt_scale_b1", 0.20, "apps"),
    Owner("ptn_scale_b", "tnt_scale_b2", 0.12, "services"),
    Owner("ptn_scale_b", "tnt_scale_b3", 0.065, "apps"),
    Owner("ptn_scale_b", None, 0.01, "shared"),
)


@dataclass(frozen=True)
class Layout:
    """Which secrets a store of ``size`` holds: how many each owner has, their paths, their creation order."""

    size: int
    seed: int

    @property
    def counts(self) -> list[int]:
        counts = [int(self.size * o.share) for o in OWNERS]
        counts[0] += self.size - sum(counts)
        return counts

    @staticmethod
    def path(owner: Owner, i: int) -> str:
        folder, slot = divmod(i, FOLDER_SIZE)
        return f"{owner.root}/team{folder % TEAMS:02d}/svc{folder:05d}/{KINDS[slot % len(KINDS)]}-{slot:02d}"

    @staticmethod
    def folder(owner: Owner, folder: int) -> str:
        return f"{owner.root}/team{folder % TEAMS:02d}/svc{folder:05d}/"

    def creation_order(self) -> Iterator[tuple[Owner, int]]:
        """(owner, its n-th secret), owners interleaved at random: each tenant's rows spread over the whole table."""
        owners = [k for k, count in enumerate(self.counts) for _ in range(count)]
        random.Random(self.seed).shuffle(owners)
        next_index = [0] * len(OWNERS)
        for k in owners:
            yield OWNERS[k], next_index[k]
            next_index[k] += 1

    def sample_paths(self, rng: random.Random) -> list[str]:
        """Request paths of existing secrets of the benchmark tenant, a shuffled sample of its whole keyspace."""
        count = self.counts[0]
        return [f"/v1/secrets/{self.path(OWNERS[0], i)}" for i in rng.sample(range(count), min(count, READ_SAMPLE))]

    def sample_folders(self, rng: random.Random) -> list[str]:
        """Listing requests of full folders of the benchmark tenant (the last, partial one left out)."""
        folders = self.counts[0] // FOLDER_SIZE
        return [f"/v1/secrets?prefix={self.folder(OWNERS[0], f)}" for f in rng.sample(range(folders),
                                                                                        min(folders, LIST_SAMPLE))]


def versions_of(rng: random.Random) -> int:
    """How many versions a secret was written with: most once, a few rotated several times."""
    r = rng.random()
    return 1 if r < 0.70 else 2 if r < 0.88 else 3 if r < 0.95 else rng.randint(4, 6)


def value_of(rng: random.Random, kind: str) -> dict[str, str]:
    """A plausible value: tens of bytes for passwords and API keys, about 0.5 KB for an SSH key, 1.4 KB for a
    certificate and its key."""
    def text(n: int) -> str:
        return base64.b64encode(rng.randbytes(n)).decode()

    if kind == "tls":
        return {"certificate": f"-----BEGIN CERTIFICATE-----\n{text(800)}\n-----END CERTIFICATE-----",
                "private_key": f"-----BEGIN PRIVATE KEY-----\n{text(240)}\n-----END PRIVATE KEY-----"}
    if kind == "ssh":
        return {"private_key": f"-----BEGIN OPENSSH PRIVATE KEY-----\n{text(300)}\n-----END OPENSSH PRIVATE KEY-----"}
    if kind == "db":
        return {"username": f"app_{rng.randrange(10_000)}", "password": text(24)}
    return {"token" if kind == "token" else "api_key": text(36)}


# ---- filling a store ----------------------------------------------------------------------------------------------


async def fill(container: Container, layout: Layout, progress: Callable[[str], None]) -> dict[str, Any]:
    """Register the owners through their commands, then write every secret's versions as the write command would
    (data key, sealed value, ``Secret.write``, the request's access record), ``SAVE_BATCH`` events a transaction;
    building the next batch overlaps with PostgreSQL applying the last one."""
    started = time.perf_counter()
    for owner in OWNERS:
        if owner.tenant_id is not None:
            await container.tenancy_commands.register_tenant(owner.partner_id, owner.tenant_id)
    async with container.pool.acquire() as conn:
        owner_keys = {o.owner: await container.keyring.owner_key(conn, o.owner) for o in OWNERS}
    projection, repository = SecretsProjection(), container.repository
    rng = random.Random(layout.seed + 1)
    step = HISTORY_SPAN / (layout.size * (1.45 + READ_SHARE))
    at = datetime.now(UTC) - HISTORY_SPAN
    events: list[Any] = []
    aggregates: list[Aggregate] = []
    data_keys: list[tuple[str, str, bytes]] = []
    pending: asyncio.Task[None] | None = None
    written = versions = 0
    next_report = time.perf_counter() + 10

    async def save(events: list[Any], aggregates: list[Aggregate], data_keys: list[tuple[str, str, bytes]]
                   ) -> None:
        async with container.pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table("scaivault_data_keys", records=data_keys,
                                             columns=("id", "owner", "wrapped"))
            await projection.apply(conn, [(0, e) for e in events])
            await repository.save(conn, events, aggregates)

    for n, (owner, index) in enumerate(layout.creation_order()):
        path = layout.path(owner, index)
        kind = KINDS[index % FOLDER_SIZE % len(KINDS)]  # as its path names it
        secret = Secret(owner=owner.owner, path=path, partner_id=owner.partner_id, tenant_id=owner.tenant_id)
        for _ in range(versions_of(rng)):
            at += step * rng.uniform(0.2, 1.8)
            identity, request_id = rng.choice(IDENTITIES), new_request_id()
            data_key_id, data_key = new_id("dk_"), generate_key()
            data_keys.append((data_key_id, owner.owner,
                              seal(owner_keys[owner.owner], data_key, data_key_aad(owner.owner, data_key_id))))
            created, version = not secret.live, secret.next_version
            secret.write(
                version=version,
                ciphertext=seal_value(data_key, value_of(rng, kind), owner=owner.owner, path=path, version=version),
                data_key_id=data_key_id, at=at, actor=identity, request_id=request_id, secret_type=None,
                metadata={"team": path.split("/")[1], "kind": kind} if created else None, max_versions=None,
                default_max_versions=container.settings.default_max_versions, expires_in=None,
                rotation_policy_id=None, cas=None,
            )
            events += secret.collect_events()
            events.append(AccessRecord(
                recorded_at=at, request_id=request_id, method="PUT", route=owner.route, action="write",
                source_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}", user_agent=rng.choice(AGENTS),
                partner_id=owner.partner_id, tenant_id=owner.tenant_id, identity_id=identity,
                identity_type="user" if identity.startswith("user:") else "service_account", secret_path=path,
                status=201 if created else 200, duration_ms=rng.randrange(3, 30),
            ).event())
            versions += 1
        if rng.random() < READ_SHARE:  # its value read since (by a GET, which leaves its last-access time)
            at += step * rng.uniform(0.2, 1.8)
            identity = rng.choice(IDENTITIES)
            events.append(AccessRecord(
                recorded_at=at, request_id=new_request_id(), method="GET", route=owner.route, action="read",
                source_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}", user_agent=rng.choice(AGENTS),
                partner_id=owner.partner_id, tenant_id=owner.tenant_id, identity_id=identity,
                identity_type="user" if identity.startswith("user:") else "service_account", secret_path=path,
                status=200, duration_ms=rng.randrange(1, 12), extra={"version": secret.current_version},
                accessed_streams=[secret.id],
            ).event())
        aggregates.append(secret)
        if n % 10 == 9:
            await asyncio.sleep(0)  # let the previous batch's statements go out meanwhile
        if len(events) >= SAVE_BATCH or n == layout.size - 1:
            if pending is not None:
                await pending
            pending = asyncio.create_task(save(events, aggregates, data_keys))
            written += len(events)
            events, aggregates, data_keys = [], [], []
            if time.perf_counter() > next_report:
                next_report += 10
                elapsed = time.perf_counter() - started
                progress(f"  {n + 1:,} secrets, {written:,} events in {elapsed:.0f} s ({(n + 1) / elapsed:,.0f}/s)")
    if pending is not None:
        await pending
    events_seconds = time.perf_counter() - started
    progress(f"  {layout.size:,} secrets, {written:,} events in {events_seconds:.1f} s; catch-up projections")
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    rebuilds = {}
    for catch_up in catch_up_projections(container.keyring):
        report = await rebuilder.rebuild(ReadModel(catch_up, inline=False))
        rebuilds[report.name] = round(report.seconds, 2)
    rebuilt = time.perf_counter()
    async with container.pool.acquire() as conn:
        await conn.execute("VACUUM ANALYZE")  # as autovacuum would have by now (it may be off on this server)
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
            await conn.execute("CHECKPOINT")  # the fill's dirty pages written now, not during the measurements
    seconds = time.perf_counter() - started
    return {"secrets": layout.size, "versions": versions, "events": written, "seconds": round(seconds, 1),
            "events_seconds": round(events_seconds, 1), "catch_up_seconds": rebuilds,
            "vacuum_analyze_seconds": round(time.perf_counter() - rebuilt, 1),
            "secrets_per_s": round(layout.size / seconds, 1), "secrets_per_s_events_only":
            round(layout.size / events_seconds, 1), "events_per_s_events_only": round(written / events_seconds, 1)}


async def store_stats(db_url: str) -> dict[str, Any]:
    """What a store holds: sizes, rows, events, and the planner's statistics state."""
    conn = await asyncpg.connect(db_url)
    try:
        tables = await conn.fetch(
            """SELECT c.relname, pg_total_relation_size(c.oid) AS bytes, c.reltuples::bigint AS rows,
                      s.last_analyze, s.last_autoanalyze, s.last_vacuum, s.last_autovacuum
               FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
               ORDER BY pg_total_relation_size(c.oid) DESC LIMIT 8""")
        return {
            "database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())"),
            "events": await conn.fetchval("SELECT count(*) FROM scaivault_events"),
            "secrets": await conn.fetchval("SELECT count(*) FROM scaivault_secrets"),
            "secret_versions": await conn.fetchval("SELECT count(*) FROM scaivault_secret_versions"),
            "largest_tables": {r["relname"]: {
                "bytes": r["bytes"], "rows_estimated": r["rows"],
                "analyzed": bool(r["last_analyze"] or r["last_autoanalyze"]),
                "vacuumed": bool(r["last_vacuum"] or r["last_autovacuum"])} for r in tables},
        }
    finally:
        await conn.close()


# ---- the plans of the hot statements ------------------------------------------------------------------------------


Statement = tuple[str, tuple[Any, ...]]  # SQL and its arguments


async def captured(conn: asyncpg.Connection, work: Callable[[], Awaitable[object]]) -> list[Statement]:
    """The statements ``work`` sends through ``conn`` (and their arguments), in order, in a transaction rolled back."""
    seen: list[Statement] = []

    def log(record: Any) -> None:
        text = record.query.lstrip().upper()  # ScaiVault's own statements (not asyncpg's type introspection)
        if text.startswith(("SELECT", "INSERT", "UPDATE", "DELETE", "WITH")) and "SCAIVAULT_" in text \
                and "ADVISORY" not in text:
            seen.append((record.query, tuple(record.args or ())))

    conn.add_query_logger(log)
    try:
        tx = conn.transaction()
        await tx.start()
        try:
            await work()
        finally:
            await tx.rollback()
    finally:
        conn.remove_query_logger(log)
    return seen


def plan_summary(plan: dict[str, Any], big_tables: set[str]) -> dict[str, Any]:
    """The nodes of an EXPLAIN (ANALYZE, FORMAT JSON) plan, its estimated cost, and what is suspect in it at scale:
    a sequential scan of a large table, a sort or hash of many rows, many rows read and filtered out, many pages."""
    nodes: list[str] = []
    suspect: list[str] = []
    relations = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal relations
        name = node["Node Type"] + (f" {node['Relation Name']}" if "Relation Name" in node else "") + (
            f" using {node['Index Name']}" if "Index Name" in node else "")
        nodes.append(name)
        relations += "Relation Name" in node
        if node["Node Type"] == "Seq Scan" and node.get("Relation Name") in big_tables:
            suspect.append(name)
        if node["Node Type"] in ("Sort", "Incremental Sort", "Hash") and node.get(
                "Actual Rows", 0) * node.get("Actual Loops", 1) > 1_000:
            suspect.append(f"{node['Node Type']} of {node['Actual Rows']} rows")
        removed = node.get("Rows Removed by Filter", 0) * node.get("Actual Loops", 1)
        if removed > 10_000:
            suspect.append(f"{name} filtering out {removed} rows")
        for child in node.get("Plans", []):
            walk(child)

    walk(plan["Plan"])
    top = plan["Plan"]
    pages = top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0)
    if pages > MAX_PAGES:
        suspect.append(f"{pages} pages read")
    return {"ms": round(plan.get("Execution Time", 0.0), 3), "cost": top["Total Cost"], "relations": relations,
            "nodes": nodes, "suspect": suspect, "buffers_hit": top.get("Shared Hit Blocks", 0),
            "buffers_read": top.get("Shared Read Blocks", 0)}


def generic_chosen(custom: dict[str, Any], generic: dict[str, Any]) -> bool:
    """Whether PostgreSQL would run a prepared statement with its generic plan after the first five runs: when the
    generic plan's estimated cost is below the custom plans' average, which includes an estimate of planning
    (1000 x cpu_operator_cost per relation plus one; plancache.c)."""
    return bool(generic["cost"] < custom["cost"] + 1000 * 0.0025 * (custom["relations"] + 1))


async def explained(conn: asyncpg.Connection, statements: list[Statement], generic: bool,
                    big_tables: set[str]) -> list[dict[str, Any]]:
    """Each statement under EXPLAIN (ANALYZE, BUFFERS), in order, in one transaction rolled back, as a prepared
    statement with its arguments: with a custom plan (the values known), or with the generic plan a prepared
    statement may switch to after five runs (as the server's cached statements do)."""
    out = []
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f"SET LOCAL plan_cache_mode = {'force_generic_plan' if generic else 'force_custom_plan'}")
        for sql, args in statements:
            types = [await conn.fetchval("SELECT format_type($1::oid, NULL)", p.oid)
                     for p in (await conn.prepare(sql)).get_parameters()]
            literals = [await conn.fetchval(f"SELECT quote_nullable($1::{t}::text) || '::{t}'", arg)
                        for t, arg in zip(types, args, strict=True)]
            await conn.execute(f"PREPARE scale_explain ({', '.join(types)}) AS {sql}" if types
                               else f"PREPARE scale_explain AS {sql}")
            try:
                raw = await conn.fetchval("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) EXECUTE scale_explain"
                                          + (f"({', '.join(literals)})" if literals else ""))
            finally:
                await conn.execute("DEALLOCATE scale_explain")
            plan = json.loads(raw) if isinstance(raw, str) else raw  # the pool decodes json, a connection may not
            out.append({"sql": " ".join(sql.split())[:160], **plan_summary(plan[0], big_tables)})
    finally:
        await tx.rollback()
    return out


class OneConnection:
    """A pool of one connection, already acquired: for code that takes a pool, so its statements can be captured."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        yield self._conn


async def query_plans(settings: Settings, layout: Layout) -> dict[str, Any]:
    """Capture what a read, a listing, an update and a fresh write send (the real query and projector code, on a
    cold repository cache as a server meets most secrets of a large store), then explain each statement."""
    container = await build_container(settings, migrate=False)
    rng = random.Random(layout.seed + 2)
    owner = OWNERS[0]
    path = layout.path(owner, rng.randrange(layout.counts[0]))
    folder = layout.folder(owner, rng.randrange(max(1, layout.counts[0] // FOLDER_SIZE)))
    stream = secret_stream_id(owner.owner, path)
    try:
        async with container.pool.acquire() as conn:
            big_tables = {r["relname"] for r in await conn.fetch(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND reltuples > 10000")}

            async def update() -> None:
                secret = await container.repository.get(conn, stream)
                assert isinstance(secret, Secret)
                data_key = await container.keyring.new_data_key(conn, owner.owner)  # a cold key cache: the lookup
                data_key = await container.keyring.new_data_key(conn, owner.owner)  # a warm one: the checked insert
                secret.write(version=secret.next_version, ciphertext=b"x" * 60, data_key_id=data_key.id,
                             at=datetime.now(UTC), actor="sa:explain", request_id=None, secret_type=None,
                             metadata=None, max_versions=None, default_max_versions=10, expires_in=None,
                             rotation_policy_id=None, cas=None)
                for domain_event in secret.collect_events():
                    await project_secret_event(conn, domain_event)

            async def create() -> None:
                secret = Secret(owner=owner.owner, path=f"{folder}explain", partner_id=owner.partner_id,
                                tenant_id=owner.tenant_id)
                secret.write(version=1, ciphertext=b"x" * 60, data_key_id="dk_explain", at=datetime.now(UTC),
                             actor="sa:explain", request_id=None, secret_type=None, metadata={}, max_versions=None,
                             default_max_versions=10, expires_in=None, rotation_policy_id=None, cas=None)
                for domain_event in secret.collect_events():
                    await project_secret_event(conn, domain_event)

            async def catch_up() -> None:
                """What a catch-up runner asks for its next batch near the head (runner.py's _next_batch)."""
                head = await container.store.max_notification_id(conn)
                position = max(0, head - 1_000)
                await container.store.select_event_rows(conn, position + 1, 500, stop=head, topics=[ACCESS_TOPIC])
                await container.store.select_event_rows(conn, position + 1, 500, stop=head,
                                                        exclude_topics=[ACCESS_TOPIC])

            async def housekeeping() -> None:
                """What every server's housekeeping job asks once a minute (bootstrap.py's _housekeeping)."""
                await PostgresSecretLookup().deletions_past_retention(conn, utcnow(), 500)
                await purge_expired_revocations(conn)
                await enforce_audit_retention(cast(asyncpg.Pool, OneConnection(conn)), container.keyring,
                                              retention=parse_duration(settings.audit_retention), now=utcnow())

            operations: dict[str, Callable[[], Awaitable[object]]] = {
                "read": lambda: queries.secret_value_rows(conn, owner.owner, [path], None),
                "list": lambda: queries.list_secret_rows(conn, owner.owner, prefix=folder, after=None, limit=101,
                                                         include_deleted=False),
                "update": update,
                "write": create,
                "catch_up": catch_up,
                "housekeeping": housekeeping,
            }
            plans: dict[str, Any] = {}
            for name, work in operations.items():
                statements = await captured(conn, work)
                custom = await explained(conn, statements, False, big_tables)
                generic = await explained(conn, statements, True, big_tables)
                for c, g in zip(custom, generic, strict=True):
                    g["chosen_by_server"] = generic_chosen(c, g)
                plans[name] = {"custom": custom, "generic": generic}
            return plans
    finally:
        await container.close()


# ---- the run ------------------------------------------------------------------------------------------------------


def label_of(size: int) -> str:
    for unit, name in ((1_000_000, "M"), (1_000, "k")):
        if size >= unit and size % (unit // 10) == 0:
            return f"{size / unit:g}{name}"
    return str(size)


def settings_for(db_url: str, data_dir: Path) -> Settings:
    """The settings the server of this store runs with (its environment), as far as filling it goes."""
    return Settings.from_env({**os.environ, "DATABASE_URL": db_url, "SCAIVAULT_DATA_DIR": str(data_dir),
                              "LOG_LEVEL": "error"})


async def prepare_store(size: int, seed: int, database: str, data_dir: Path) -> dict[str, Any]:
    """A fresh database filled with ``size`` secrets (keys in ``data_dir``, where its server will find them)."""
    await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{database}"')
    db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    container = await build_container(settings_for(db_url, data_dir))
    try:
        label = label_of(size)
        print(f"{label}: filling {database} with {size:,} secrets", file=sys.stderr)
        cpu = Cpu(database)
        result = await fill(container, Layout(size, seed), lambda line: print(f"{label}:{line}", file=sys.stderr))
        result["cpu_cores"] = cpu.cores()
    finally:
        await container.close()
    result["store"] = await store_stats(db_url)
    print(f"{label}: filled in {result['seconds']:.1f} s ({result['secrets_per_s']:,.0f} secrets/s; events and read "
          f"model {result['events_seconds']:.1f} s, catch-up {result['catch_up_seconds']}, VACUUM ANALYZE "
          f"{result['vacuum_analyze_seconds']:.1f} s), {result['store']['database_bytes'] / 2**20:,.0f} MiB, "
          f"{result['store']['events']:,} events; cpu {result['cpu_cores']}", file=sys.stderr)
    return result


def drop_database(database: str) -> None:
    asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))


def paths_file(tmp: Path, name: str, lines: list[str]) -> str:
    path = tmp / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ratios(cells: list[Cell], small: str, large: str) -> dict[str, dict[str, Any]]:
    """Per load: large ÷ small of p50, p99, p99.9 and of the rate; the p99 ratio against its target."""
    by_key = {(c.system, c.load): c for c in cells}
    out: dict[str, dict[str, Any]] = {}
    for load in dict.fromkeys(c.load for c in cells):
        s, lg = by_key.get((f"scaivault-{small}", load)), by_key.get((f"scaivault-{large}", load))
        if s is None or lg is None or not s.requests or not lg.requests:
            continue
        p99 = lg.percentile_ms(99) / s.percentile_ms(99)
        out[load] = {"p50": round(lg.percentile_ms(50) / s.percentile_ms(50), 2), "p99": round(p99, 2),
                     "p999": round(lg.percentile_ms(99.9) / s.percentile_ms(99.9), 2),
                     "rate": round(lg.rate / s.rate, 2), "p99_target": TARGET_P99_RATIO,
                     "p99_met": p99 <= TARGET_P99_RATIO}
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [args.small, args.large]
    labels = [label_of(size) for size in sizes]
    databases = [f"scaivault_bench_scale_{os.getpid()}_{label.replace('.', '_').lower()}" for label in labels]
    stores: dict[str, Any] = {}
    cells: list[Cell] = []
    plans: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="scaivault-bench-scale-") as tmp_name, contextlib.ExitStack() as drops:
        tmp = Path(tmp_name)
        if not args.keep_databases:
            for database in databases:
                drops.callback(drop_database, database)
        for size, label, database in zip(sizes, labels, databases, strict=True):
            (tmp / label).mkdir()
            stores[label] = asyncio.run(prepare_store(size, args.seed, database, tmp / label / "data"))
        if not args.fill_only:
            with contextlib.ExitStack() as servers:
                targets: list[Target] = []
                for size, label, database in zip(sizes, labels, databases, strict=True):
                    target = servers.enter_context(scaivault(tmp / label, database, args.workers, PERMISSIONS))
                    layout, rng = Layout(size, args.seed), random.Random(args.seed + 3)
                    reads, lists = layout.sample_paths(rng), layout.sample_folders(rng)
                    status, body = request("GET", target.url + reads[0], target.headers())
                    if status != 200:
                        raise RuntimeError(f"{label}: a stored secret cannot be read: HTTP {status} {body}")
                    wrk_env = (("PEER_READ_FILE", paths_file(tmp, f"{label}-reads.txt", reads)),
                               ("PEER_LIST_FILE", paths_file(tmp, f"{label}-lists.txt", lists)))
                    targets.append(dataclasses.replace(target, name=f"scaivault-{label}", wrk_env=wrk_env))
                print(f"servers up: {', '.join(t.name for t in targets)}; {args.seconds:g} s per figure in "
                      f"{args.rounds} slices (+{args.warmup:g} s warm-up), {args.connections} connections",
                      file=sys.stderr)
                for load in args.loads:
                    cells += measure(targets, load, args.connections, args)
        for label, database in zip(labels, databases, strict=True):  # with no server running
            db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
            stores[label]["store_at_end"] = asyncio.run(store_stats(db_url))
            plans[label] = asyncio.run(query_plans(settings_for(db_url, tmp / label / "data"),
                                                   Layout(stores[label]["secrets"], args.seed)))
    if args.keep_databases:
        print(f"kept the databases {', '.join(databases)}", file=sys.stderr)
    return {
        "meta": {"at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                 "sizes": dict(zip(labels, sizes, strict=True)), "seconds": args.seconds, "rounds": args.rounds,
                 "warmup": args.warmup, "connections": args.connections, "seed": args.seed,
                 "workers": args.workers or "default", "python": platform.python_version(),
                 "source": source_version(), "postgres": asyncio.run(postgres_settings()),
                 "asyncpg": asyncpg.__version__},
        "stores": stores,
        "cells": [{"system": c.system, "load": c.load, "connections": c.connections, **c.summary()} for c in cells],
        "ratios_large_over_small": ratios(cells, labels[0], labels[1]),
        "suspect_plans": suspect_plans(plans),
        "plans": plans,
    }


async def postgres_settings() -> dict[str, str]:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        return {name: await conn.fetchval(f"SHOW {name}") for name in (
            "server_version", "shared_buffers", "effective_cache_size", "work_mem", "random_page_cost", "autovacuum",
            "synchronous_commit", "fsync")}
    finally:
        await conn.close()


def print_report(results: dict[str, Any]) -> None:
    print(f"\n{'store':<16}{'secrets':>10}{'versions':>10}{'events':>11}{'MiB':>8}{'fill s':>8}{'secrets/s':>11}")
    for label, store in results["stores"].items():
        print(f"{label:<16}{store['secrets']:>10,}{store['versions']:>10,}{store['store']['events']:>11,}"
              f"{store['store']['database_bytes'] / 2**20:>8,.0f}{store['seconds']:>8.1f}"
              f"{store['secrets_per_s']:>11,.0f}")
    if results["cells"]:
        print(f"\n{'load':<8}{'system':<18}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'errors':>8}"
              f"{'server':>8}{'pg':>6}{'us/req':>8}")
        for c in results["cells"]:
            print(f"{c['load']:<8}{c['system']:<18}{c['rate']:>9.1f}{c['p50_ms']:>9.2f}{c['p99_ms']:>9.2f}"
                  f"{c['p999_ms']:>10.2f}{sum(c['errors'].values()):>8}{c['cpu_cores']['server']:>8.2f}"
                  f"{c['cpu_cores']['postgres']:>6.2f}{c['server_cpu_us_per_request'] or 0:>8.0f}")
        print(f"\n{'large ÷ small':<14}{'p50':>7}{'p99':>7}{'p99.9':>7}{'rate':>7}   p99 target <= {TARGET_P99_RATIO}")
        for load, r in results["ratios_large_over_small"].items():
            print(f"{load:<14}{r['p50']:>7.2f}{r['p99']:>7.2f}{r['p999']:>7.2f}{r['rate']:>7.2f}   "
                  f"{'met' if r['p99_met'] else 'MISSED'}")
    print()
    suspects = suspect_plans(results["plans"])
    for line in suspects:
        print(f"PLAN {line}")
    if not suspects:
        print("plans: no sequential scan of a large table, no large sort or hash, in the plan each hot statement "
              "runs with in either store")


def suspect_plans(plans: dict[str, Any]) -> list[str]:
    """What is suspect in the plans statements run with: custom plans, and generic ones the server would choose."""
    found = []
    for label, operations in plans.items():
        for name, kinds in operations.items():
            for kind, statements in kinds.items():
                for s in statements:
                    if s["suspect"] and (kind == "custom" or s.get("chosen_by_server")):
                        found.append(f"{label} {name} ({kind} plan): {', '.join(s['suspect'])} in {s['sql'][:90]}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000, help="secrets in the small store (default 1,000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="secrets in the large store (default 1,000,000)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per figure (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="slices each figure is cut into (default 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up per figure (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk's keep-alive connections (default 32)")
    parser.add_argument("--loads", type=comma_list(LOADS), default=list(LOADS), help=f"default {','.join(LOADS)}")
    parser.add_argument("--seed", type=int, default=7, help="the layout's random seed (default 7)")
    parser.add_argument("--workers", type=int, default=None, help="the servers' `serve --workers` (default: theirs)")
    parser.add_argument("--fill-only", action="store_true", help="fill both stores, report, explain; no servers")
    parser.add_argument("--keep-databases", action="store_true", help="do not drop the two databases at the end")
    args = parser.parse_args()
    if not (200 <= args.small < args.large <= MAX_SECRETS):
        parser.error(f"200 <= --small < --large <= {MAX_SECRETS:,}")
    if not (1 <= args.seconds <= 600 and 1 <= args.rounds <= 20 and 0 <= args.warmup <= 60
            and args.seconds / args.rounds >= 1 and 1 <= args.connections <= 1024):
        parser.error("--seconds in [1, 600], --rounds in [1, 20] with slices of at least 1 s, --warmup in [0, 60], "
                     "--connections in [1, 1024]")
    if not args.fill_only and shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk; `make bench-peer` installs it)")
    started = time.monotonic()
    results = run(args)
    results["meta"]["elapsed_seconds"] = round(time.monotonic() - started)
    print_report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "scale-fill-latest.json" if args.fill_only else "scale-latest.json"
    (RESULTS / name).write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS / name}")


if __name__ == "__main__":
    main()
