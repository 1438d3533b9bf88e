"""ScaiVault benchmark: four figures from one run, each server figure read against a baseline from the same run.

    A  bare aiohttp handler (bench.bare_app)           requests/s
    R  authenticated secret reads, GET ~100 paths      requests/s, p50/p99  -> % of A   (target >= 40%, p99 < 10 ms)
    Q  the same reads from a second server that keeps no access records (SCAIVAULT_UNSAFE_SKIP_READ_AUDIT)
    R' the reads of R again, interleaved with Q        requests/s, p50/p99  -> % of Q   (target >= 85%)
    B  raw asyncpg single-row INSERTs, autocommit      rows/s
    W  authenticated secret writes, PUT ~100 paths     requests/s, p50/p99  -> % of B   (target >= 50%)
    H  rebuild of every read model from a simulated history of 1,000,000 events, against the raw replay (decode
       only) of that history: bench/history.py                                     events/s  (target >= 50,000/s)

Servers run as subprocesses; this process is the load generator (32 keep-alive clients by default). Each pair (A
with R, B with W) is measured in alternating slices (A R R A A R ...), so both sides of a ratio see the same
background noise. Load goes to 127.0.0.1 only; every loop stops at its deadline or its count bound.
Method and figures: docs/performance.md.

    python -m bench.run [--seconds 10] [--rounds 5] [--warmup 2] [--clients 32] [--profile]
                        [--history-events 1000000]    (0 skips H)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # the only address load is ever sent to
ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
N_PATHS = 100
MAX_OPS_PER_SLICE = 1_000_000  # count bound of every load loop, besides its deadline
REQUEST_TIMEOUT = 30.0
TARGETS = {"reads_pct_of_bare": 40.0, "reads_p99_ms": 10.0, "writes_pct_of_inserts": 50.0,
           "audited_reads_pct_of_unaudited": 85.0, "rebuild_events_per_s": 50_000.0}
CATCH_UP_TIMEOUT = 30.0  # how long the audited pair waits for the catch-up projections to finish earlier work
CLK_TCK = os.sysconf("SC_CLK_TCK")
CPU_COLUMNS = ("server", "loadgen", "postgres", "other", "machine")

Op = Callable[[int], Awaitable[None]]  # op(client): one request (or insert); raises if it failed


class UnexpectedStatus(Exception):
    pass


async def expect(response: aiohttp.ClientResponse, status: int) -> None:
    body = await response.read()
    if response.status != status:
        raise UnexpectedStatus(f"HTTP {response.status}", body[:300].decode(errors="replace"))


# ---- CPU accounting: who was busy during a slice, in CPU seconds ---------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` (0 once it has exited)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime, all threads


def postgres_cpu(database: str) -> float:
    """The PostgreSQL backends serving ``database`` (their title names it); other databases' count as "other"."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if f" {database} ".encode() in (proc / "cmdline").read_bytes():
                total += process_cpu(int(proc.name))
    return total


def machine_cpu() -> float:
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLK_TCK  # all but idle and iowait


def cpu_snapshot(server_pid: int | None, database: str) -> Counter[str]:
    return Counter({
        "server": process_cpu(server_pid) if server_pid else 0.0,
        "loadgen": time.process_time(),
        "postgres": postgres_cpu(database),
        "machine": machine_cpu(),
    })


# ---- the closed-loop driver ---------------------------------------------------------------------------------------


@dataclass
class Load:
    """One measured thing and what was measured of it."""

    name: str
    unit: str
    op: Op
    server_pid: int | None
    ops: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by kind, e.g. "HTTP 503"
    error_example: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu_seconds: Counter[str] = field(default_factory=Counter)
    database: str | None = None  # whose PostgreSQL backends count as "postgres" (default: the run's database)

    @property
    def rate(self) -> float:
        return self.ops / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def cores(self) -> dict[str, float]:
        """Average busy cores: the server, this process, our PostgreSQL backends, and the rest of the machine
        (other people's work, PostgreSQL's background writers, the kernel's share of loopback TCP)."""
        busy = {k: self.cpu_seconds[k] / self.seconds for k in ("server", "loadgen", "postgres", "machine")}
        busy["other"] = max(0.0, busy["machine"] - busy["server"] - busy["loadgen"] - busy["postgres"])
        return {k: round(busy[k], 2) for k in CPU_COLUMNS}

    def summary(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "rate": round(self.rate, 1),
            "ops": self.ops,
            "errors": sum(self.errors.values()),
            "error_kinds": dict(self.errors),
            "error_examples": self.error_example,
            "seconds": round(self.seconds, 2),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "cpu_cores": self.cores(),
            "server_cpu_us_per_op": (
                round(1e6 * self.cpu_seconds["server"] / self.ops, 1) if self.ops and self.server_pid else None
            ),
        }


Outcome = tuple[list[float], Counter[str], dict[str, str], float]


async def closed_loop(op: Op, *, seconds: float, clients: int) -> Outcome:
    """``clients`` workers each call ``op(worker)`` back to back until the deadline; returns (latencies of the
    calls that succeeded, failures by kind, an example of each kind, elapsed). Calls in flight at the deadline
    finish and count."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    examples: dict[str, str] = {}

    async def worker(i: int) -> None:
        for _ in range(MAX_OPS_PER_SLICE // clients):
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                await op(i)
            except (UnexpectedStatus, aiohttp.ClientError, asyncpg.PostgresError, OSError, TimeoutError) as exc:
                kind, example = exc.args if isinstance(exc, UnexpectedStatus) else (type(exc).__name__, str(exc))
                errors[kind] += 1
                examples.setdefault(kind, example)
                await asyncio.sleep(0.01)  # a failing target must not turn this into a busy loop
            else:
                latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(clients))), seconds + 2 * REQUEST_TIMEOUT)
    return latencies, errors, examples, time.perf_counter() - started


async def run_slice(load: Load, seconds: float, args: argparse.Namespace) -> None:
    database = load.database or args.database
    before = cpu_snapshot(load.server_pid, database)
    latencies, errors, examples, elapsed = await closed_loop(load.op, seconds=seconds, clients=args.clients)
    load.cpu_seconds.update(cpu_snapshot(load.server_pid, database) - before)
    load.ops, load.seconds = load.ops + len(latencies), load.seconds + elapsed
    load.latencies += latencies
    load.errors.update(errors)
    load.error_example = {**examples, **load.error_example}


async def interleaved(baseline: Load, subject: Load, args: argparse.Namespace) -> None:
    """Warm both up, then measure them in ``rounds`` alternating slices (ABBA order) of ``seconds / rounds``."""
    for load in (baseline, subject):
        if args.warmup > 0:
            await closed_loop(load.op, seconds=args.warmup, clients=args.clients)
    for r in range(args.rounds):
        for load in (baseline, subject) if r % 2 == 0 else (subject, baseline):
            await run_slice(load, args.seconds / args.rounds, args)
    for load in (baseline, subject):
        print(f"  {load.name:<16} {load.rate:9.1f} {load.unit:<6}  p50 {load.percentile_ms(.5):7.2f} ms"
              f"  p99 {load.percentile_ms(.99):7.2f} ms  errors {dict(load.errors) or 0}", file=sys.stderr)


# ---- subprocess servers, the database, the operations -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an HTTP(S)_PROXY


def _healthy(url: str) -> bool:
    try:
        with _DIRECT.open(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A subprocess writing to ``log``; terminated (then killed) on the way out."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], port: int, log: Path, start_timeout: float = 90) -> Iterator[int]:
    """Start a server subprocess, wait for GET /v1/health = 200, yield its pid; stop it on the way out."""
    with process(argv, env, log) as proc:
        deadline = time.monotonic() + start_timeout
        while not _healthy(f"http://{HOST}:{port}/v1/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start (exit {proc.poll()}):\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc.pid


@contextlib.contextmanager
def projection_worker(env: dict[str, str], log: Path) -> Iterator[int]:
    """`scaivault projections run` beside a server started with SCAIVAULT_RUN_PROJECTIONS=false; yields its pid."""
    with process([str(BIN / "scaivault"), "projections", "run"], env, log) as proc:
        yield proc.pid


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(BIN / "scaivault"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"scaivault {' '.join(args[:2])} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


async def admin(sql: str) -> None:
    conn = await asyncpg.connect(ADMIN_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def http_session(clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients),  # keep-alive is aiohttp's default
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


def bare_get(session: aiohttp.ClientSession, url: str) -> Op:
    async def get(_: int) -> None:
        async with session.get(url) as response:
            await expect(response, 200)

    return get


@contextlib.asynccontextmanager
async def raw_insert(db_url: str, clients: int) -> AsyncIterator[Op]:
    """Baseline B: client ``i`` owns connection ``i`` of a pool and INSERTs one 200-byte row per call (autocommit)."""
    pool = await asyncpg.create_pool(db_url, min_size=clients, max_size=clients)
    try:
        await pool.execute("CREATE TABLE bench_scratch (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conns = [await pool.acquire() for _ in range(clients)]
        payload = "x" * 200

        async def insert(i: int) -> None:
            await conns[i].execute("INSERT INTO bench_scratch (payload) VALUES ($1)", payload, timeout=REQUEST_TIMEOUT)

        yield insert
        for conn in conns:
            await pool.release(conn)
    finally:
        await pool.close()


def read_urls(base: str) -> list[str]:
    return [f"{base}/v1/secrets/bench/read/s{n:03d}" for n in range(N_PATHS)]


def reads(session: aiohttp.ClientSession, urls: list[str], token: str) -> Op:
    """GET ``urls`` round robin with ``token``; each must answer 200."""
    headers = {"Authorization": f"Bearer {token}"}
    counter = itertools.count()

    async def get(_: int) -> None:
        async with session.get(urls[next(counter) % len(urls)], headers=headers) as response:
            await expect(response, 200)

    return get


async def secret_ops(session: aiohttp.ClientSession, base: str, token: str) -> tuple[Op, Op]:
    """Write version 1 of ~100 read paths and ~100 write paths; return the read (GET) and write (PUT) operations,
    each going round robin over its paths."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    write_urls = [f"{base}/v1/secrets/bench/write/s{n:03d}" for n in range(N_PATHS)]
    counter = itertools.count()

    def body(n: int) -> bytes:
        return b'{"data": {"password": "bench-%024d"}}' % n

    for url in read_urls(base) + write_urls:  # so that every measured write adds a version to an existing secret
        async with session.put(url, data=body(next(counter)), headers=headers) as response:
            await expect(response, 201)

    async def put(_: int) -> None:
        n = next(counter)
        async with session.put(write_urls[n % N_PATHS], data=body(n), headers=headers) as response:
            await expect(response, 200)

    return reads(session, read_urls(base), token), put


# ---- the run ------------------------------------------------------------------------------------------------------


def register(env: dict[str, str]) -> str:
    """Register ptn_bench/tnt_bench on the server ``env`` points at; return a token minted by the CLI (a tenant
    admin's: it needs no policy, so these figures do not include policy evaluation; bench/policies.py measures that)."""
    cli(env, "tenants", "create", "--partner", "ptn_bench", "--tenant", "tnt_bench")
    return cli(env, "token", "issue", "--partner", "ptn_bench", "--tenant", "tnt_bench", "--identity",
               "sa:bench", "--scopes", "secrets:read secrets:write secrets:list policies:read policies:write",
               "--roles", "tenant_admin", "--ttl", "1h")


async def caught_up(db_url: str, timeout: float) -> int:
    """Wait (at most ``timeout`` s) until the catch-up projections (audit log, event index) have applied every
    event; return what they still lag behind the head of the log, in events (0 when caught up)."""
    conn = await asyncpg.connect(db_url)
    try:
        deadline = time.monotonic() + timeout
        while True:
            lag = await conn.fetchval(
                """SELECT coalesce(max(e.head - coalesce(t.notification_id, 0)), 0)
                   FROM (SELECT coalesce(max(notification_id), 0) AS head FROM scaivault_events) e
                   CROSS JOIN unnest(ARRAY['audit_log', 'event_index']) AS p(name)
                   LEFT JOIN scaivault_tracking t ON t.application_name = p.name""")
            if lag == 0 or time.monotonic() > deadline:
                return int(lag)
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


async def benchmark(args: argparse.Namespace, tmp: Path) -> tuple[list[Load], dict[str, object]]:
    port, bare_port, quiet_port = free_port(), free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": args.db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data"),
           "BIND_ADDRESS": f"{HOST}:{port}", "LOG_LEVEL": "error",
           # One process, whose CPU is the server column (bench.peer measures `--workers`).
           "SCAIVAULT_WORKERS": "1",
           # Limits no load here reaches: the limiter's cost stays in every figure, its refusals out of them.
           "SCAIVAULT_RATE_LIMITS": "*=1000000000/s"}
    # The server without access records has a database (and keys) of its own, so it never runs, or waits for, the
    # audited server's catch-up projections.
    quiet_env = {**env, "DATABASE_URL": args.quiet_db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data-quiet"),
                 "BIND_ADDRESS": f"{HOST}:{quiet_port}", "SCAIVAULT_UNSAFE_SKIP_READ_AUDIT": "true"}
    bare_argv = [sys.executable, "-m", "bench.bare_app", f"{HOST}:{bare_port}"]
    audit: dict[str, object] = {"projections": args.projections}
    separate = args.projections == "worker"
    server_env = {**env, "SCAIVAULT_RUN_PROJECTIONS": "false"} if separate else env
    with serve([str(BIN / "scaivault"), "serve"], server_env, port, tmp / "scaivault.log") as pid, \
            (projection_worker(env, tmp / "projections.log") if separate else contextlib.nullcontext()), \
            serve(bare_argv, env, bare_port, tmp / "bare_app.log") as bare_pid:
        token = register(env)
        async with http_session(args.clients) as bare_session, http_session(args.clients) as session, \
                raw_insert(args.db_url, args.clients) as insert:
            get, put = await secret_ops(session, f"http://{HOST}:{port}", token)
            loads = [
                Load("A bare handler", "req/s", bare_get(bare_session, f"http://{HOST}:{bare_port}/v1/health"),
                     bare_pid),
                Load("R secret reads", "req/s", get, pid),
                Load("B raw inserts", "rows/s", insert, None),
                Load("W secret writes", "req/s", put, pid),
            ]
            await interleaved(loads[0], loads[1], args)
            with serve([str(BIN / "scaivault"), "serve"], quiet_env, quiet_port, tmp / "scaivault-quiet.log") \
                    as quiet_pid:
                quiet_token = register(quiet_env)
                async with http_session(args.clients) as quiet_session:
                    quiet_get, _ = await secret_ops(quiet_session, f"http://{HOST}:{quiet_port}", quiet_token)
                    quiet = Load("Q reads, no audit", "req/s", quiet_get, quiet_pid, database=args.quiet_database)
                    audited = Load("R' reads, audited", "req/s", get, pid)
                    # R left the audit log to catch up with ~50,000 records: R' must not pay for those.
                    audit["lag_before"] = await caught_up(args.db_url, CATCH_UP_TIMEOUT)
                    await interleaved(quiet, audited, args)
                    # What the audited server's projections had not applied when its last slice ended.
                    audit["lag_after"] = await caught_up(args.db_url, 0)
            loads[2:2] = [quiet, audited]
            await interleaved(loads[4], loads[5], args)
            if args.profile:  # separate, unmeasured phases: a profiler slows what it watches
                from bench.profile import Profiler

                for name, op in (("reads", get), ("writes", put)):
                    print(f"  profiling {name} for {args.seconds:g} s", file=sys.stderr)
                    async with Profiler(pid, args.db_url, RESULTS / f"profile-{name}", args.seconds):
                        latencies, errors, _, elapsed = await closed_loop(op, seconds=args.seconds,
                                                                          clients=args.clients)
                    print(f"  (under the profiler: {len(latencies) / elapsed:.1f} req/s, errors {dict(errors) or 0})",
                          file=sys.stderr)
    return loads, audit


def report(loads: list[Load], meta: dict[str, object], history: dict[str, Any] | None) -> dict[str, object]:
    a, r, q, r2, b, w = loads
    ratios: dict[str, float] = {
        "reads_pct_of_bare": round(100 * r.rate / a.rate, 1),
        "reads_p99_ms": round(r.percentile_ms(0.99), 2),
        "audited_reads_pct_of_unaudited": round(100 * r2.rate / q.rate, 1),
        "writes_pct_of_inserts": round(100 * w.rate / b.rate, 1),
    }
    met = {
        "reads_pct_of_bare": ratios["reads_pct_of_bare"] >= TARGETS["reads_pct_of_bare"],
        "reads_p99_ms": ratios["reads_p99_ms"] < TARGETS["reads_p99_ms"],
        "audited_reads_pct_of_unaudited": (ratios["audited_reads_pct_of_unaudited"]
                                           >= TARGETS["audited_reads_pct_of_unaudited"]),
        "writes_pct_of_inserts": ratios["writes_pct_of_inserts"] >= TARGETS["writes_pct_of_inserts"],
    }
    if history is not None:
        ratios["rebuild_events_per_s"] = history["slowest"]["rate"]
        ratios["rebuild_pct_of_raw_decode"] = history["slowest"]["pct_of_raw"]
        met["rebuild_events_per_s"] = history["target_met"]
    print(f"\n{'phase':<19}{'rate':>10}  {'unit':<7}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'server us/op':>13}"
          "  cpu cores:" + "".join(f"{c:>9}" for c in CPU_COLUMNS))
    for load in loads:
        cores, per_op, errors = load.cores(), load.summary()["server_cpu_us_per_op"], sum(load.errors.values())
        print(f"{load.name:<19}{load.rate:>10.1f}  {load.unit:<7}{load.percentile_ms(.5):>8.2f}"
              f"{load.percentile_ms(.99):>8.2f}{errors:>7}{per_op if load.server_pid else '-':>13}  {'':10}"
              + "".join(f"{cores[c]:>9.2f}" for c in CPU_COLUMNS))
    if history is not None:
        from bench.history import print_history

        print_history(history)
    verdict = {True: "met", False: "MISSED"}
    print(f"\nreads  = {ratios['reads_pct_of_bare']:5.1f}% of bare handler   (target >= 40%)   "
          f"{verdict[met['reads_pct_of_bare']]}")
    print(f"reads  p99 = {ratios['reads_p99_ms']:.2f} ms          (target < 10 ms)  {verdict[met['reads_p99_ms']]}")
    print(f"audited reads = {ratios['audited_reads_pct_of_unaudited']:5.1f}% of unaudited (target >= 85%)   "
          f"{verdict[met['audited_reads_pct_of_unaudited']]}")
    print(f"writes = {ratios['writes_pct_of_inserts']:5.1f}% of raw inserts    (target >= 50%)   "
          f"{verdict[met['writes_pct_of_inserts']]}")
    if history is not None:
        print(f"rebuild = {ratios['rebuild_events_per_s']:,.0f} events/s, slowest model "
              f"({ratios['rebuild_pct_of_raw_decode']:.1f}% of raw decode)   (target >= 50,000/s)   "
              f"{verdict[met['rebuild_events_per_s']]}")
    for load in loads:
        for kind, count in load.errors.items():
            print(f"\nWARNING: {load.name}: {count} x {kind}, e.g. {load.error_example[kind][:200]}")
    results: dict[str, object] = {"meta": meta, "phases": {load.name: load.summary() for load in loads},
                                  "ratios": ratios, "targets": TARGETS, "targets_met": met}
    if history is not None:
        results["history"] = history
    return results


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    args.database = f"scaivault_bench_{os.getpid()}"
    args.quiet_database = f"scaivault_bench_{os.getpid()}_quiet"
    args.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + args.database
    args.quiet_db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + args.quiet_database
    print(f"database {args.database}, {args.clients} clients, {args.seconds:g} s per figure in {args.rounds} "
          f"slices (+{args.warmup:g} s warm-up)", file=sys.stderr)
    await admin(f'CREATE DATABASE "{args.database}"')
    await admin(f'CREATE DATABASE "{args.quiet_database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-") as tmp:
            loads, audit = await benchmark(args, Path(tmp))
        conn = await asyncpg.connect(args.db_url)
        try:
            postgres = {name: await conn.fetchval(f"SHOW {name}")
                        for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")}
            # A write replays its secret's events since the last snapshot, so its cost grows with these.
            event_store = {"events": await conn.fetchval("SELECT count(*) FROM scaivault_events"),
                           "snapshots": await conn.fetchval("SELECT count(*) FROM scaivault_snapshots")}
        finally:
            await conn.close()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        await admin(f'DROP DATABASE IF EXISTS "{args.quiet_database}" WITH (FORCE)')
    history = None
    if args.history_events:  # last, with no server running; in a database of its own
        from bench.history import history_phase

        history = await history_phase(args.history_events, admin_url=ADMIN_URL)
    meta = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": args.seconds, "rounds": args.rounds, "warmup": args.warmup, "clients": args.clients,
        "cpus": os.cpu_count(), "python": platform.python_version(), "aiohttp": aiohttp.__version__,
        "asyncpg": asyncpg.__version__, "postgres": postgres,
        "event_store_at_end": event_store, "source": source_version(),
        # Events the audited server's catch-up projections had not applied before and after the audited reads.
        "audit_projection_lag": audit, "history_events": args.history_events,
    }
    return report(loads, meta, history)


def source_version() -> dict[str, object]:
    """Which tree was measured (read-only git queries); the server runs from this working tree."""
    def git(*args: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        return ""

    return {"commit": git("rev-parse", "--short", "HEAD") or None,
            "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no"))}


def add_load_options(parser: argparse.ArgumentParser, *, rounds: int) -> None:
    """The options of every closed-loop benchmark: how long, in how many slices, after what warm-up, how many
    clients."""
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each figure (default 10)")
    parser.add_argument("--rounds", type=int, default=rounds,
                        help=f"alternating slices the time is cut into (default {rounds})")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up of each load (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    add_load_options(parser, rounds=5)
    parser.add_argument("--profile", action="store_true",
                        help="afterwards, run reads and writes once more under py-spy and a PostgreSQL wait-event "
                             "sampler (needs `.venv/bin/pip install py-spy`); writes bench/results/profile-*")
    parser.add_argument("--projections", choices=("worker", "server"), default="worker",
                        help="run the audited server's catch-up projections in a `scaivault projections run` worker "
                             "(default) or inside the server (SCAIVAULT_RUN_PROJECTIONS=true)")
    parser.add_argument("--history-events", type=int, default=1_000_000,
                        help="events in the history the rebuild phase replays (default 1,000,000; 0 skips it; "
                             "also: python -m bench.history)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 1 <= args.rounds <= 50 and 0 <= args.warmup <= 60
            and 1 <= args.clients <= 256 and (args.history_events == 0 or 1_000 <= args.history_events <= 10_000_000)):
        parser.error("--seconds in (0, 600], --rounds in [1, 50], --warmup in [0, 60], --clients in [1, 256], "
                     "--history-events 0 or in [1000, 10000000]")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    stamp = str(results["meta"]["at"]).replace(":", "").replace("+0000", "Z")  # type: ignore[index]
    (RESULTS / f"run-{stamp}.json").write_text(text)
    print(f"\nwrote {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
