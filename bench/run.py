"""ScaiVault benchmark: four figures from one run, each server figure read against a baseline from the same run.

    A  bare aiohttp handler (bench.bare_app)           requests/s
    R  authenticated secret reads, GET ~100 paths      requests/s, p50/p99  -> % of A   (target >= 40%, p99 < 10 ms)
    B  raw asyncpg single-row INSERTs, autocommit      rows/s
    W  authenticated secret writes, PUT ~100 paths     requests/s, p50/p99  -> % of B   (target >= 50%)

Servers run as subprocesses; this process is the load generator (32 keep-alive clients by default). Load goes to
127.0.0.1 only; every loop stops at its deadline or its count bound. Method and figures: docs/performance.md.

    python -m bench.run [--seconds 10] [--warmup 2] [--clients 32] [--profile]
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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
HOST = "127.0.0.1"  # the only address load is ever sent to
ADMIN_URL = os.environ.get("BENCH_ADMIN_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
N_PATHS = 100
MAX_OPS_PER_PHASE = 2_000_000  # count bound of every load loop, besides its deadline
REQUEST_TIMEOUT = 30.0
TARGETS = {"reads_pct_of_bare": 40.0, "reads_p99_ms": 10.0, "writes_pct_of_inserts": 50.0}
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---- CPU accounting: who was busy during a phase (in cores; the machine has os.cpu_count()) ------------------------


def _process_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def _postgres_cpu(database: str) -> float:
    """The PostgreSQL backends serving ``database`` (their title names it); other databases' count as "other"."""
    total = 0.0
    for proc in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            if f" {database} ".encode() in (proc / "cmdline").read_bytes():
                total += _process_cpu(int(proc.name))
    return total


def _machine_cpu() -> float:
    jiffies = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / CLK_TCK  # all but idle and iowait


class CpuMeter:
    def __init__(self, server_pid: int | None, database: str) -> None:
        self.pid, self.database = server_pid, database
        self._start = self._read()

    def _read(self) -> tuple[float, ...]:
        server = _process_cpu(self.pid) if self.pid else 0.0
        return time.perf_counter(), server, time.process_time(), _postgres_cpu(self.database), _machine_cpu()

    def cores(self) -> dict[str, float]:
        """Average busy cores: the server, this process, our PostgreSQL backends, the machine, and the rest of the
        machine (other work, PostgreSQL's own background processes)."""
        end = self._read()
        wall = end[0] - self._start[0]
        server, loadgen, postgres, machine = ((e - s) / wall for s, e in zip(self._start[1:], end[1:], strict=True))
        other = max(0.0, machine - server - loadgen - postgres)
        return {name: round(value, 2) for name, value in
                [("server", server), ("loadgen", loadgen), ("postgres", postgres), ("other", other),
                 ("machine", machine)]}


# ---- the closed-loop driver ---------------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    unit: str
    ops: int
    errors: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float]

    @property
    def rate(self) -> float:
        return self.ops / self.seconds

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")

    def summary(self) -> dict[str, object]:
        return {
            "unit": self.unit,
            "rate": round(self.rate, 1),
            "ops": self.ops,
            "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "p50_ms": round(self.percentile_ms(0.50), 2),
            "p99_ms": round(self.percentile_ms(0.99), 2),
            "cpu_cores": self.cpu,
            "server_cpu_us_per_op": round(1e6 * self.cpu["server"] * self.seconds / self.ops, 1) if self.ops else None,
        }


Op = Callable[[int], Awaitable[bool]]


async def closed_loop(op: Op, *, seconds: float, clients: int) -> tuple[int, int, list[float], float]:
    """``clients`` workers each call ``op(worker)`` back to back until the deadline; returns (ok, errors,
    latencies of the ok calls, elapsed). Calls in flight at the deadline finish and count."""
    deadline = time.perf_counter() + seconds
    latencies: list[float] = []
    errors = 0

    async def worker(i: int) -> None:
        nonlocal errors
        for _ in range(MAX_OPS_PER_PHASE // clients):
            started = time.perf_counter()
            if started >= deadline:
                return
            try:
                ok = await op(i)
            except (aiohttp.ClientError, asyncpg.PostgresError, OSError, asyncio.TimeoutError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1
                await asyncio.sleep(0.01)  # a failing target must not turn this into a busy loop

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(i) for i in range(clients))), seconds + 2 * REQUEST_TIMEOUT)
    return len(latencies), errors, latencies, time.perf_counter() - started


async def measure(name: str, unit: str, op: Op, args: argparse.Namespace, server_pid: int | None,
                  profile: Callable[[], contextlib.AbstractAsyncContextManager[object]] | None = None) -> Phase:
    if args.warmup > 0:
        await closed_loop(op, seconds=args.warmup, clients=args.clients)
    async with profile() if profile else contextlib.nullcontext():
        meter = CpuMeter(server_pid, args.database)
        ok, errors, latencies, elapsed = await closed_loop(op, seconds=args.seconds, clients=args.clients)
        cpu = meter.cores()
    phase = Phase(name, unit, ok, errors, elapsed, latencies, cpu)
    print(f"  {name:<16} {phase.rate:9.1f} {unit}  p50 {phase.percentile_ms(.5):7.2f} ms"
          f"  p99 {phase.percentile_ms(.99):7.2f} ms  errors {errors}", file=sys.stderr)
    return phase


def http_session(clients: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=clients),  # keep-alive is aiohttp's default
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
    )


# ---- subprocess servers and the database --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], port: int, log: Path, start_timeout: float = 90) -> Iterator[int]:
    """Start a server subprocess, wait for GET /v1/health = 200, yield its pid; stop it on the way out."""
    with log.open("wb") as log_file:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + start_timeout
        while not _healthy(f"http://{HOST}:{port}/v1/health"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[0]} did not start (exit {proc.poll()}):\n{log.read_text()[-2000:]}")
            time.sleep(0.1)
        yield proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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


# ---- the four phases ----------------------------------------------------------------------------------------------


async def bare_handler(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> Phase:
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_app", f"{HOST}:{port}"]
    with serve(argv, env, port, tmp / "bare_app.log") as pid:
        async with http_session(args.clients) as session:
            url = f"http://{HOST}:{port}/v1/health"

            async def get(_: int) -> bool:
                async with session.get(url) as response:
                    await response.read()
                    return response.status == 200

            return await measure("A bare handler", "req/s", get, args, pid)


async def raw_inserts(args: argparse.Namespace, db_url: str) -> Phase:
    pool = await asyncpg.create_pool(db_url, min_size=args.clients, max_size=args.clients)
    try:
        await pool.execute("CREATE TABLE bench_scratch (id bigserial PRIMARY KEY, payload text NOT NULL)")
        conns = [await pool.acquire() for _ in range(args.clients)]  # each client task owns one connection
        payload = "x" * 200

        async def insert(i: int) -> bool:
            await conns[i].execute("INSERT INTO bench_scratch (payload) VALUES ($1)", payload, timeout=REQUEST_TIMEOUT)
            return True

        phase = await measure("B raw inserts", "rows/s", insert, args, None)
        for conn in conns:
            await pool.release(conn)
        return phase
    finally:
        await pool.close()


async def secret_ops(session: aiohttp.ClientSession, base: str, token: str) -> tuple[Op, Op]:
    """Write version 1 of ~100 read paths and ~100 write paths; return the read (GET) and write (PUT) operations."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    read_urls = [f"{base}/v1/secrets/bench/read/s{n:03d}" for n in range(N_PATHS)]
    write_urls = [f"{base}/v1/secrets/bench/write/s{n:03d}" for n in range(N_PATHS)]
    counter = itertools.count()

    def body(n: int) -> bytes:
        return b'{"data": {"password": "bench-%024d"}}' % n

    for url in read_urls + write_urls:  # so that every measured write adds a version to an existing secret
        async with session.put(url, data=body(next(counter)), headers=headers) as response:
            if response.status != 201:
                raise RuntimeError(f"setup PUT {url}: {response.status} {await response.text()}")

    async def get(_: int) -> bool:
        async with session.get(read_urls[next(counter) % N_PATHS], headers=headers) as response:
            await response.read()
            return response.status == 200

    async def put(_: int) -> bool:
        n = next(counter)
        async with session.put(write_urls[n % N_PATHS], data=body(n), headers=headers) as response:
            await response.read()
            return response.status == 200

    return get, put


# ---- report -------------------------------------------------------------------------------------------------------


def report(phases: list[Phase], meta: dict[str, object]) -> dict[str, object]:
    by = {p.name[0]: p for p in phases}
    a, r, b, w = by["A"], by["R"], by["B"], by["W"]
    ratios = {
        "reads_pct_of_bare": round(100 * r.rate / a.rate, 1),
        "reads_p99_ms": round(r.percentile_ms(0.99), 2),
        "writes_pct_of_inserts": round(100 * w.rate / b.rate, 1),
    }
    met = {
        "reads_pct_of_bare": ratios["reads_pct_of_bare"] >= TARGETS["reads_pct_of_bare"],
        "reads_p99_ms": ratios["reads_p99_ms"] < TARGETS["reads_p99_ms"],
        "writes_pct_of_inserts": ratios["writes_pct_of_inserts"] >= TARGETS["writes_pct_of_inserts"],
    }
    cpu_columns = ("server", "loadgen", "postgres", "other", "machine")
    print(f"\n{'phase':<17}{'rate':>10}  {'unit':<7}{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}  cpu cores:"
          + "".join(f"{c:>9}" for c in cpu_columns))
    for p in phases:
        print(f"{p.name:<17}{p.rate:>10.1f}  {p.unit:<7}{p.percentile_ms(.5):>8.2f}{p.percentile_ms(.99):>8.2f}"
              f"{p.errors:>7}  {'':10}" + "".join(f"{p.cpu[c]:>9.2f}" for c in cpu_columns))
    print(f"\nreads  = {ratios['reads_pct_of_bare']:5.1f}% of bare handler   (target >= 40%)   "
          f"{'met' if met['reads_pct_of_bare'] else 'MISSED'}")
    print(f"reads  p99 = {ratios['reads_p99_ms']:.2f} ms              (target < 10 ms)  "
          f"{'met' if met['reads_p99_ms'] else 'MISSED'}")
    print(f"writes = {ratios['writes_pct_of_inserts']:5.1f}% of raw inserts    (target >= 50%)   "
          f"{'met' if met['writes_pct_of_inserts'] else 'MISSED'}")
    errors = sum(p.errors for p in phases)
    if errors:
        print(f"\nWARNING: {errors} failed operations; the figures above are suspect.")
    return {"meta": meta, "phases": {p.name: p.summary() for p in phases}, "ratios": ratios, "targets": TARGETS,
            "targets_met": met}


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    database = args.database = f"scaivault_bench_{os.getpid()}"
    args.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + database
    await admin(f'CREATE DATABASE "{database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-") as tmp_name:
            tmp = Path(tmp_name)
            port = free_port()
            env = {**os.environ, "DATABASE_URL": args.db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data"),
                   "BIND_ADDRESS": f"{HOST}:{port}", "LOG_LEVEL": "error"}
            print(f"database {database}, {args.clients} clients, {args.seconds:g} s per phase "
                  f"(+{args.warmup:g} s warm-up)", file=sys.stderr)
            with serve([str(BIN / "scaivault"), "serve"], env, port, tmp / "scaivault.log") as pid:
                cli(env, "tenants", "create", "--partner", "ptn_bench", "--tenant", "tnt_bench")
                token = cli(env, "token", "issue", "--partner", "ptn_bench", "--tenant", "tnt_bench",
                            "--identity", "sa:bench", "--scopes", "secrets:read secrets:write secrets:list",
                            "--ttl", "1h")

                def profiler(name: str) -> Callable[[], contextlib.AbstractAsyncContextManager[object]] | None:
                    if not args.profile:
                        return None
                    from bench.profile import Profiler

                    return lambda: Profiler(pid, args.db_url, RESULTS / f"profile-{name}", args.seconds)

                # Each server figure is measured right after its own baseline: A then R, B then W.
                bare = await bare_handler(args, env, tmp)
                async with http_session(args.clients) as session:
                    get, put = await secret_ops(session, f"http://{HOST}:{port}", token)
                    reads = await measure("R secret reads", "req/s", get, args, pid, profiler("reads"))
                    raw = await raw_inserts(args, args.db_url)
                    writes = await measure("W secret writes", "req/s", put, args, pid, profiler("writes"))
            conn = await asyncpg.connect(args.db_url)
            try:
                pg = {name: await conn.fetchval(f"SHOW {name}") for name in
                      ("server_version", "synchronous_commit", "fsync", "shared_buffers")}
            finally:
                await conn.close()
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    meta = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": args.seconds,
        "warmup": args.warmup,
        "clients": args.clients,
        "profiled": args.profile,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "asyncpg": asyncpg.__version__,
        "postgres": pg,
    }
    return report([bare, reads, raw, writes], meta)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured duration of each phase (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured warm-up before each phase (default 2)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--profile", action="store_true",
                        help="sample the server with py-spy and PostgreSQL wait events during R and W "
                             "(needs `pip install py-spy`; the figures of a profiled run are not comparable)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 0 <= args.warmup <= 60 and 1 <= args.clients <= 256):
        parser.error("--seconds in (0, 600], --warmup in [0, 60], --clients in [1, 256]")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    stamp = str(results["meta"]["at"]).replace(":", "").replace("+0000", "Z")  # type: ignore[index]
    (RESULTS / f"run-{stamp}{'-profiled' if args.profile else ''}.json").write_text(text)
    print(f"\nwrote {RESULTS / 'latest.json'}")


if __name__ == "__main__":
    main()
