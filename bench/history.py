"""History phase of the benchmark: how fast every read model rebuilds from a long event history.

    H  raw replay   every event read in pages of 5,000 (``select_notifications``) and decoded with the mapper, no
                    projection: the floor a rebuild cannot beat                                        events/s
    Rn rebuild      ``Rebuilder.rebuild`` of each read model (tenancy, secrets, audit_exports, audit_log,
                    event_index): copy beside the live tables, replay, swap                  events/s -> % of H

The history is written straight into the event store (``Repository.save`` in transactions of 5,000 events, real
domain classes and mapper), not through HTTP: a million requests would take hours at the served write rate. It
simulates a production mix across four tenants of two partners: one ``AccessRecorded`` per request (reads, listings,
denials, writes), plus the Secret events the writes cause (versions written, aged out past ``max_versions``,
metadata updates, soft deletes, restores, permanent deletes). Values are random bytes standing in for ciphertext, so
no data key is created per write; nothing a rebuild reads is missing. The inline read models are not written while
the history is (the rebuild is what builds them).

Runs in its own database ``scaivault_bench_<pid>_history``, dropped at the end. No server runs; nothing is sent over
the network but to PostgreSQL on 127.0.0.1. Called by ``python -m bench.run`` (``--history-events``), or alone:

    python -m bench.history [--history-events 1000000] [--seed 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
from eventsourcing.domain import Aggregate, DomainEvent

from bench.run import ADMIN_URL, RESULTS, machine_cpu, process_cpu, source_version
from projections.maintenance.rebuild import REPLAY_BATCH, Rebuilder, RebuildReport, fewer_collections
from scaivault.audit.access_records import AccessRecord
from scaivault.bootstrap import Container, build_container, read_models
from scaivault.config import Settings
from scaivault.database import connect
from scaivault.domain.errors import ScaiVaultError, SecretNotFound
from scaivault.domain.secrets import Secret
from scaivault.http.status import STATUS_BY_CODE
from scaivault.ids import new_id

DEFAULT_EVENTS = 1_000_000
MAX_EVENTS = 10_000_000  # bound of the history loop
SAVE_BATCH = 5_000  # events per transaction while writing the history
TARGET_EVENTS_PER_S = 50_000.0

PARTNERS = {"ptn_bench_a": ("tnt_bench_a1", "tnt_bench_a2"), "ptn_bench_b": ("tnt_bench_b1", "tnt_bench_b2")}
SECRETS_PER_TENANT = 400
SECRETS_PER_PARTNER = 25
MAX_VERSIONS = 10
RETENTION = timedelta(days=30)
# Requests per simulated request kind, out of 1,000 (one access record each).
MIX = {
    "read": 800,  # GET a value; about 2% of them hit a missing or deleted secret (404)
    "list": 60,  # GET metadata
    "unauthenticated": 10,  # 401 before any tenant is known: the system chain
    "write": 95,  # PUT: a version, and past max_versions the oldest ages out
    "metadata": 20,  # PATCH metadata
    "delete": 8,  # soft delete
    "restore": 4,
    "destroy": 3,  # permanent delete (Purged); a later write re-creates the path
}
IDENTITIES = ("sa:deployer", "sa:ci", "user:alice@acme.example", "user:bob@acme.example", "sa:billing")
AGENTS = ("scaivault-cli/1.4.2", "python-httpx/0.27.0", "Go-http-client/1.1", "terraform-provider-scaivault/0.9.1")


@dataclass
class Slot:
    owner: str
    partner_id: str
    tenant_id: str | None
    path: str
    secret: Secret | None = None


@dataclass
class Simulation:
    """Requests against a few thousand secrets, as the server would record them; a fixed seed gives the same
    history every run (request ids and key ids aside)."""

    rng: random.Random
    at: datetime
    slots: list[Slot] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    _kinds: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for partner, tenants in PARTNERS.items():
            self.slots += [Slot(partner, partner, None, f"shared/k{n:02d}") for n in range(SECRETS_PER_PARTNER)]
            for tenant in tenants:
                self.slots += [
                    Slot(tenant, partner, tenant, f"apps/svc{n % 40:02d}/{('db', 'api', 'tls', 'ssh')[n % 4]}-{n:03d}")
                    for n in range(SECRETS_PER_TENANT)
                ]
        self._kinds = [kind for kind, weight in MIX.items() for _ in range(weight)]

    def request(self) -> tuple[list[DomainEvent], Secret | None]:
        """One request: its events (the Secret events it caused, then its access record) and the secret it
        changed, if any."""
        rng = self.rng
        self.at += timedelta(microseconds=rng.randrange(200, 4000))
        kind = rng.choice(self._kinds)
        self.kinds[kind] += 1
        slot = self.slots[int(len(self.slots) * rng.random() ** 2)]  # some secrets are much hotter than others
        identity = rng.choice(IDENTITIES)
        record = AccessRecord(
            recorded_at=self.at, request_id=new_id("req_"), method="GET", route="/v1/secrets/{path}", action="read",
            source_ip=f"10.0.{rng.randrange(4)}.{rng.randrange(2, 250)}", user_agent=rng.choice(AGENTS),
            partner_id=slot.partner_id, tenant_id=slot.tenant_id, identity_id=identity,
            identity_type="user" if identity.startswith("user:") else "service_account", secret_path=slot.path,
            duration_ms=rng.randrange(1, 12),
        )
        secret, changed = slot.secret, None
        try:
            if kind == "unauthenticated":
                record.partner_id = record.tenant_id = record.identity_id = record.identity_type = None
                record.status, record.error_code = 401, "authentication_required"
            elif kind in ("read", "list"):
                if secret is None or not secret.live or secret.is_deleted or rng.random() < 0.01:
                    record.status, record.error_code = 404, "secret_not_found"
                else:
                    record.status = 200
                    if kind == "list":
                        record.route, record.action = "/v1/secrets/{path}/metadata", "list"
                    else:
                        record.accessed_streams.append(secret.id)
                        record.extra["version"] = secret.current_version
            elif kind == "write":
                record.method, record.action = "PUT", "write"
                if secret is None:
                    secret = slot.secret = Secret(owner=slot.owner, path=slot.path, partner_id=slot.partner_id,
                                                  tenant_id=slot.tenant_id)
                created = not secret.live
                secret.check_writable(at=self.at, cas=None, actor=identity, request_id=record.request_id)
                secret.write(
                    version=secret.next_version, ciphertext=rng.randbytes(rng.randrange(60, 140)),
                    data_key_id=new_id("dk_"), at=self.at, actor=identity, request_id=record.request_id,
                    secret_type=None, metadata={"team": slot.path.split("/")[1]} if created else None,
                    max_versions=None, default_max_versions=MAX_VERSIONS, expires_in=None, rotation_policy_id=None,
                    cas=None,
                )
                record.status, changed = (201 if created else 200), secret
            else:
                record.method = {"metadata": "PATCH", "restore": "POST"}.get(kind, "DELETE")
                record.action = "write" if kind in ("metadata", "restore") else "delete"
                if kind == "metadata":
                    record.route = "/v1/secrets/{path}/metadata"
                elif kind == "restore":
                    record.route = "/v1/secrets/{path}/restore"
                if secret is None:
                    raise SecretNotFound(path=slot.path)
                if kind == "metadata":
                    secret.update_metadata(
                        at=self.at, actor=identity, request_id=record.request_id,
                        metadata_patch={"rotated_by": identity, "ticket": f"OPS-{rng.randrange(10_000)}"},
                        secret_type=None, max_versions=None, expires_in=None, clear_expiry=False,
                        rotation_policy_id=None, secret_policy_id=None,
                    )
                elif kind == "delete":
                    secret.delete(at=self.at, retention=RETENTION, actor=identity, request_id=record.request_id)
                elif kind == "restore":
                    secret.restore(at=self.at, actor=identity, request_id=record.request_id)
                else:
                    secret.destroy(at=self.at, actor=identity, request_id=record.request_id)
                record.status, changed = 200, secret
        except ScaiVaultError as exc:  # refused by the domain (e.g. writing a soft-deleted secret): recorded too
            record.status, record.error_code = STATUS_BY_CODE.get(exc.code, 400), exc.code
            changed = None
            if secret is not None:
                secret.collect_events()  # nothing is committed for a refused command
        events: list[DomainEvent] = list(changed.collect_events()) if changed is not None else []
        events.append(record.event())
        return events, changed


# ---- writing the history ------------------------------------------------------------------------------------------


async def write_history(container: Container, n_events: int, seed: int) -> dict[str, Any]:
    """Register the tenants through their commands, then append about ``n_events`` simulated events in
    transactions of ``SAVE_BATCH``. Generating the next batch overlaps with PostgreSQL inserting the last one."""
    started = time.perf_counter()
    for partner, tenants in PARTNERS.items():
        for tenant in tenants:
            await container.tenancy_commands.register_tenant(partner, tenant)
    simulation = Simulation(random.Random(seed), datetime.now(UTC) - timedelta(hours=n_events // 300_000 + 1))
    repository = container.repository
    topics: Counter[str] = Counter()
    written = 0
    pending: asyncio.Task[None] | None = None

    async def save(events: list[DomainEvent], aggregates: list[Aggregate]) -> None:
        async with container.pool.acquire() as conn, conn.transaction():
            await repository.save(conn, events, aggregates)

    for _ in range(MAX_EVENTS // SAVE_BATCH + 1):
        if written >= n_events:
            break
        batch: list[DomainEvent] = []
        touched: dict[UUID, Aggregate] = {}
        while len(batch) < SAVE_BATCH and written + len(batch) < n_events:
            events, changed = simulation.request()
            batch += events
            if changed is not None:
                touched[changed.id] = changed
            if len(batch) % 500 < len(events):
                await asyncio.sleep(0)  # let the previous batch's insert make progress meanwhile
        if pending is not None:
            await pending
        # Copies: the next batch changes the aggregates while this one is saved (and maybe snapshotted).
        pending = asyncio.create_task(save(batch, [copy.deepcopy(a) for a in touched.values()]))
        written += len(batch)
        topics.update(type(e).__qualname__ for e in batch)
    if pending is not None:
        await pending
    seconds = time.perf_counter() - started
    async with container.pool.acquire() as conn:
        head = await container.store.max_notification_id(conn)
        total = await conn.fetchval("SELECT count(*) FROM scaivault_events")
        size = await conn.fetchval("SELECT pg_total_relation_size('scaivault_events')")
        snapshots = await conn.fetchval("SELECT count(*) FROM scaivault_snapshots")
    return {"events": int(total), "head": int(head), "seconds": round(seconds, 2),
            "rate": round(total / seconds, 1), "events_table_bytes": int(size), "snapshots": int(snapshots),
            "topics": dict(topics.most_common()), "requests": dict(simulation.kinds.most_common())}


# ---- measuring ----------------------------------------------------------------------------------------------------


def _backends(database: str) -> dict[int, float]:
    """CPU seconds so far of each PostgreSQL backend serving ``database`` (its process title names it)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if f" {database} ".encode() in (proc / "cmdline").read_bytes():
                found[int(proc.name)] = process_cpu(int(proc.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


class Cpu:
    """CPU seconds of this process, of the database's PostgreSQL backends and of the whole machine, over a span.
    A rebuild's connection ends with it, and a dead process's CPU time is gone from /proc, so the backends are
    sampled every 0.2 s (what a backend used in its last 0.2 s may be missed)."""

    def __init__(self, database: str) -> None:
        self._database = database
        self._first = _backends(database)
        self._last = dict(self._first)
        self._start = Counter({"bench": time.process_time(), "machine": machine_cpu()})
        self._wall = time.perf_counter()
        self._task = asyncio.get_running_loop().create_task(self._sample())

    async def _sample(self) -> None:
        for _ in range(100_000):  # bounded: 0.2 s x 100,000
            await asyncio.sleep(0.2)
            self._last.update(_backends(self._database))

    def cores(self) -> dict[str, float]:
        self._task.cancel()
        self._last.update(_backends(self._database))
        wall = time.perf_counter() - self._wall
        used = Counter({"bench": time.process_time(), "machine": machine_cpu()}) - self._start
        used["postgres"] = sum(cpu - self._first.get(pid, 0.0) for pid, cpu in self._last.items())
        busy = {k: used[k] / wall for k in ("bench", "postgres", "machine")}
        busy["other"] = max(0.0, busy["machine"] - busy["bench"] - busy["postgres"])
        return {k: round(v, 2) for k, v in busy.items()}


async def raw_replay(container: Container) -> dict[str, Any]:
    """The baseline: every event read in pages of REPLAY_BATCH and decoded, each page's events kept until the next
    page as a replay keeps them; nothing applied. Under the collector setting a rebuild uses, so the ratio compares
    like with like."""
    store, mapper = container.store, container.repository.mapper
    conn = await connect(container.database_url)
    try:
        with fewer_collections():
            started, position, events = time.perf_counter(), 0, 0
            for _ in range(MAX_EVENTS // REPLAY_BATCH + 2):
                batch = await store.select_notifications(conn, position + 1, REPLAY_BATCH)
                if not batch:
                    break
                page = [(n.id, mapper.to_domain_event(n)) for n in batch]
                position, events = page[-1][0], events + len(page)
            seconds = time.perf_counter() - started
    finally:
        await conn.close()
    return {"events": events, "seconds": round(seconds, 3), "rate": round(events / seconds, 1)}


async def rebuild_all(container: Container, database: str, progress: Callable[[str], None]) -> list[dict[str, Any]]:
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    results = []
    for model in read_models(container.keyring):
        cpu = Cpu(database)
        report: RebuildReport = await rebuilder.rebuild(model)
        cores = cpu.cores()
        results.append({"model": report.name, "events": report.events, "seconds": round(report.seconds, 3),
                        "rate": round(report.rate, 1), "cpu_cores": cores})
        progress(f"  rebuild {report.name:<14} {report.events:>9,} events {report.seconds:7.2f} s "
                 f"{report.rate:>10,.0f} events/s  cpu {cores}")
    return results


async def history_phase(n_events: int, *, seed: int = 7, admin_url: str = ADMIN_URL,
                        progress: Callable[[str], None] = lambda line: print(line, file=sys.stderr)) -> dict[str, Any]:
    """Create the database, write the history, measure the raw replay then every rebuild (then the raw replay
    again: the baseline brackets the rebuilds, so drift over the phase shows), drop the database."""
    database = f"scaivault_bench_{os.getpid()}_history"
    db_url = admin_url.rsplit("/", 1)[0] + "/" + database
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{database}"')
    finally:
        await admin.close()
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-history-") as tmp:
            settings = Settings(database_url=db_url, data_dir=Path(tmp) / "data", log_level="error")
            container = await build_container(settings)
            try:
                progress(f"history: writing {n_events:,} events into {database}")
                cpu = Cpu(database)
                history = await write_history(container, n_events, seed)
                history["cpu_cores"] = cpu.cores()
                progress(f"  wrote {history['events']:,} events in {history['seconds']:.1f} s "
                         f"({history['rate']:,.0f}/s), {history['events_table_bytes'] / 2**20:,.0f} MiB")
                async with container.pool.acquire() as conn:
                    await conn.execute("VACUUM ANALYZE scaivault_events")  # as autovacuum would have by now
                    # Write the history's dirty pages out now, not during the measurements.
                    with contextlib.suppress(asyncpg.InsufficientPrivilegeError):
                        await conn.execute("CHECKPOINT")
                raws = []
                cpu = Cpu(database)
                raws.append(await raw_replay(container) | {"cpu_cores": cpu.cores()})
                progress(f"  raw replay     {raws[0]['events']:>9,} events {raws[0]['seconds']:7.2f} s "
                         f"{raws[0]['rate']:>10,.0f} events/s")
                rebuilds = await rebuild_all(container, database, progress)
                cpu = Cpu(database)
                raws.append(await raw_replay(container) | {"cpu_cores": cpu.cores()})
                progress(f"  raw replay     {raws[1]['events']:>9,} events {raws[1]['seconds']:7.2f} s "
                         f"{raws[1]['rate']:>10,.0f} events/s")
            finally:
                await container.close()
    finally:
        admin = await asyncpg.connect(admin_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        finally:
            await admin.close()
    raw_rate = sum(r["events"] for r in raws) / sum(r["seconds"] for r in raws)
    for rebuild in rebuilds:
        rebuild["pct_of_raw"] = round(100 * rebuild["rate"] / raw_rate, 1)
    total_events = sum(r["events"] for r in rebuilds)
    total_seconds = sum(r["seconds"] for r in rebuilds)
    slowest = min(rebuilds, key=lambda r: r["rate"])
    return {
        "history": history,
        "raw_replay": raws,
        "raw_replay_rate": round(raw_rate, 1),
        "rebuilds": rebuilds,
        "overall": {
            # Every model rebuilt one after the other, as `scaivault projections rebuild` of all of them does.
            "events_replayed": total_events,
            "seconds": round(total_seconds, 2),
            "rate": round(total_events / total_seconds, 1),
            "pct_of_raw": round(100 * total_events / total_seconds / raw_rate, 1),
        },
        "slowest": {"model": slowest["model"], "rate": slowest["rate"], "pct_of_raw": slowest["pct_of_raw"]},
        "target_events_per_s": TARGET_EVENTS_PER_S,
        "target_met": slowest["rate"] >= TARGET_EVENTS_PER_S,
    }


def print_history(result: dict[str, Any]) -> None:
    history = result["history"]
    kinds = ", ".join(f"{k} {v:,}" for k, v in history["topics"].items())
    print(f"\nhistory: {history['events']:,} events ({kinds})")
    print(
        f"{'rebuild':<17}{'events':>10}{'seconds':>9}{'events/s':>11}{'% of raw':>10}"
        "   cpu cores: bench / postgres / other"
    )
    for raw in result["raw_replay"]:
        c = raw["cpu_cores"]
        print(f"{'raw decode':<17}{raw['events']:>10,}{raw['seconds']:>9.2f}{raw['rate']:>11,.0f}{'':>10}"
              f"   {c['bench']:.2f} / {c['postgres']:.2f} / {c['other']:.2f}")
    for r in result["rebuilds"]:
        c = r["cpu_cores"]
        print(f"{r['model']:<17}{r['events']:>10,}{r['seconds']:>9.2f}{r['rate']:>11,.0f}{r['pct_of_raw']:>9.1f}%"
              f"   {c['bench']:.2f} / {c['postgres']:.2f} / {c['other']:.2f}")
    o = result["overall"]
    print(
        f"{'all ' + str(len(result['rebuilds'])):<17}{o['events_replayed']:>10,}{o['seconds']:>9.2f}"
        f"{o['rate']:>11,.0f}{o['pct_of_raw']:>9.1f}%"
    )
    s = result["slowest"]
    verdict = "met" if result["target_met"] else "MISSED"
    print(f"\nrebuild: slowest model {s['model']} at {s['rate']:,.0f} events/s = {s['pct_of_raw']:.1f}% of raw decode "
          f"({result['raw_replay_rate']:,.0f}/s)   (target >= {TARGET_EVENTS_PER_S:,.0f}/s)   {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__.split("\n\n")[0])
    parser.add_argument("--history-events", type=int, default=DEFAULT_EVENTS,
                        help=f"events in the history (default {DEFAULT_EVENTS:,})")
    parser.add_argument("--seed", type=int, default=7, help="the simulation's random seed (default 7)")
    args = parser.parse_args()
    if not 1_000 <= args.history_events <= MAX_EVENTS:
        parser.error(f"--history-events in [1000, {MAX_EVENTS}]")
    result = asyncio.run(history_phase(args.history_events, seed=args.seed))
    result["meta"] = {"at": datetime.now(UTC).isoformat(timespec="seconds"), "source": source_version()}
    print_history(result)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "history-latest.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'history-latest.json'}")


if __name__ == "__main__":
    main()
