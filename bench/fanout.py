"""Webhook fan-out benchmark: secret writes fanned out to 10 webhooks on loopback, each figure against a baseline
of the same run.

    D  direct: this process POSTs signed envelopes to the same 10 receivers      deliveries/s (the receivers' capacity)
    F  fan-out: writes at full speed (32 clients) with 10 webhooks listening;
       every event delivered to all 10, counted until the outbox drains        deliveries/s -> % of D, events/s
    W  the same writes with the webhooks disabled, in slices alternating with F's  writes/s -> F's writes as % of W
    L  latency at a paced 200 writes/s: from the event's commit (its envelope's timestamp, taken in the write's
       transaction) to its receipt, every delivery                                p50/p99 ms (target p99 < 250 ms)

Receivers verify every signature as the spec's reference receiver does. The server is a subprocess
(SCAIVAULT_WORKERS=1, projections and dispatcher in it); load goes to 127.0.0.1 only. Method: docs/performance.md.

    python -m bench.fanout [--seconds 10] [--rate 200] [--webhooks 10]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.run import (
    ADMIN_URL,
    BIN,
    HOST,
    RESULTS,
    admin,
    cli,
    closed_loop,
    expect,
    free_port,
    http_session,
    serve,
    source_version,
)

SECRET = "bench-webhook-signing-secret-0123456789"
DRAIN_TIMEOUT = 120.0
P99_TARGET_MS = 250.0


class Receivers:
    """N webhook endpoints on one loopback server: verify each delivery, note when each event arrived."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.received = 0
        self.bad_signatures = 0
        self.latencies_ms: list[float] = []
        self.measuring = False
        self._runner: web.AppRunner | None = None
        self.port = free_port()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{n}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, HOST, self.port).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, n: int) -> str:
        return f"http://{HOST}:{self.port}/hook/{n}"

    async def _receive(self, request: web.Request) -> web.Response:
        arrived = time.time()
        body = await request.read()
        timestamp = request.headers.get("X-ScaiVault-Timestamp", "")
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        signature = request.headers.get("X-ScaiVault-Signature", "")
        if not hmac.compare_digest(signature, f"sha256={expected}"):
            self.bad_signatures += 1
            return web.Response(status=401)
        self.received += 1
        if self.measuring:
            committed = datetime.fromisoformat(json.loads(body)["timestamp"].replace("Z", "+00:00")).timestamp()
            self.latencies_ms.append((arrived - committed) * 1000)
        return web.json_response({"ok": True})

    async def drained(self, expected: int, timeout: float = DRAIN_TIMEOUT) -> float:
        """Wait until ``expected`` deliveries arrived in all; return when the last did (monotonic)."""
        deadline = time.monotonic() + timeout
        while self.received < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.received} of {expected} deliveries arrived within {timeout:g} s")
            await asyncio.sleep(0.01)
        return time.monotonic()


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=1000)[int(q * 1000) - 1] if len(values) > 1 else (values or [0.0])[0]


async def create_webhooks(session: aiohttp.ClientSession, base: str, token: str, receivers: Receivers) -> list[str]:
    ids = []
    for n in range(receivers.count):
        body = {"name": f"bench-{n}", "url": receivers.url(n), "secret": SECRET,
                "events": ["secret.created", "secret.updated"]}
        async with session.post(f"{base}/v1/webhooks", json=body, headers={"Authorization": f"Bearer {token}"}) as r:
            await expect(r, 201)
            ids.append((await r.json())["id"])
    return ids


async def set_enabled(session: aiohttp.ClientSession, base: str, token: str, ids: list[str], enabled: bool) -> None:
    for webhook_id in ids:
        async with session.patch(f"{base}/v1/webhooks/{webhook_id}", json={"enabled": enabled},
                                 headers={"Authorization": f"Bearer {token}"}) as r:
            await expect(r, 200)


def writer(session: aiohttp.ClientSession, base: str, token: str, counter: itertools.count[int]) -> Any:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def put(_: int) -> None:
        n = next(counter)
        body = b'{"data": {"password": "bench-%024d"}}' % n
        async with session.put(f"{base}/v1/secrets/bench/fanout/s{n % 100:03d}", data=body, headers=headers) as r:
            if r.status not in (200, 201):
                await expect(r, 200)

    return put


async def direct(receivers: Receivers, seconds: float, clients: int) -> float:
    """Baseline D: signed POSTs from this process straight to the receivers, round robin."""
    body = json.dumps({"event_id": "evt_x", "event_type": "secret.updated", "timestamp": "2026-01-01T00:00:00Z",
                       "data": {}}).encode()
    urls = [receivers.url(n) for n in range(receivers.count)]

    async with http_session(clients) as session:
        async def post(client: int) -> None:
            timestamp = str(int(time.time()))
            signature = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
            headers = {"X-ScaiVault-Timestamp": timestamp, "X-ScaiVault-Signature": f"sha256={signature}",
                       "Content-Type": "application/json"}
            async with session.post(urls[client % len(urls)], data=body, headers=headers) as r:
                await expect(r, 200)

        latencies, _, _, elapsed = await closed_loop(post, seconds=seconds, clients=clients)
    return len(latencies) / elapsed


async def paced(op: Any, rate: float, seconds: float) -> int:
    """Open loop: start one write every 1/rate s, whatever the earlier ones are doing."""
    tasks: set[asyncio.Task[None]] = set()
    started, sent = time.monotonic(), 0
    while time.monotonic() - started < seconds:
        task = asyncio.create_task(op(sent))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
        await asyncio.sleep(max(0.0, started + sent / rate - time.monotonic()))
    await asyncio.gather(*tasks)
    return sent


async def benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    base = f"http://{HOST}:{port}"
    env = {**os.environ, "DATABASE_URL": args.db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data"),
           "BIND_ADDRESS": f"{HOST}:{port}", "LOG_LEVEL": "error", "SCAIVAULT_WORKERS": str(args.workers),
           "SCAIVAULT_RATE_LIMITS": "*=1000000000/s", "SCAIVAULT_EGRESS_ALLOW": "127.0.0.1/32"}
    receivers = Receivers(args.webhooks)
    await receivers.start()
    try:
        with serve([str(BIN / "scaivault"), "serve"], env, port, tmp / "scaivault.log"):
            cli(env, "tenants", "create", "--partner", "ptn_bench", "--tenant", "tnt_bench")
            token = cli(env, "token", "issue", "--partner", "ptn_bench", "--tenant", "tnt_bench", "--identity",
                        "sa:bench", "--scopes", "admin secrets:read secrets:write secrets:list", "--roles",
                        "tenant_admin", "--ttl", "1h")
            async with http_session(args.clients) as session:
                counter = itertools.count()
                put = writer(session, base, token, counter)
                ids = await create_webhooks(session, base, token, receivers)
                for n in range(100):  # every measured write then updates an existing secret
                    await put(n)
                await receivers.drained(100 * args.webhooks)

                # D: what the receivers take from a plain client.
                direct_rate = await direct(receivers, args.seconds, args.clients) if "D" in args.phases else None

                # F and W, in alternating slices.
                fanout = {"writes": 0, "write_seconds": 0.0, "deliveries": 0, "delivery_seconds": 0.0}
                quiet = {"writes": 0, "write_seconds": 0.0}
                for _ in range(max(1, args.rounds) if "F" in args.phases else 0):
                    before = receivers.received
                    started = time.monotonic()
                    latencies, _, _, elapsed = await closed_loop(put, seconds=args.seconds / args.rounds,
                                                                 clients=args.clients)
                    finished = await receivers.drained(before + len(latencies) * args.webhooks)
                    fanout["writes"] += len(latencies)
                    fanout["write_seconds"] += elapsed
                    fanout["deliveries"] += receivers.received - before
                    fanout["delivery_seconds"] += finished - started
                    await set_enabled(session, base, token, ids, False)
                    latencies, _, _, elapsed = await closed_loop(put, seconds=args.seconds / args.rounds,
                                                                 clients=args.clients)
                    quiet["writes"] += len(latencies)
                    quiet["write_seconds"] += elapsed
                    await set_enabled(session, base, token, ids, True)

                # L: a paced load, every delivery's latency: to every webhook, then to one.
                latency = {}
                if "L" in args.phases:
                    latency["all"] = await measure_latency(receivers, put, args.rate, args.seconds, args.webhooks)
                    await set_enabled(session, base, token, ids[1:], False)
                    latency["one"] = await measure_latency(receivers, put, args.rate, args.seconds, 1)
    finally:
        await receivers.stop()
    figures: dict[str, Any] = {"bad_signatures": receivers.bad_signatures}
    if direct_rate is not None:
        figures["direct_deliveries_per_s"] = round(direct_rate, 1)
    if fanout["writes"]:
        deliveries_per_s = fanout["deliveries"] / fanout["delivery_seconds"]
        write_rate = fanout["writes"] / fanout["write_seconds"]
        quiet_rate = quiet["writes"] / quiet["write_seconds"]
        figures |= {
            "fanout_deliveries_per_s": round(deliveries_per_s, 1),
            "fanout_events_per_s": round(deliveries_per_s / args.webhooks, 1),
            "writes_per_s_with_webhooks": round(write_rate, 1),
            "writes_per_s_webhooks_disabled": round(quiet_rate, 1),
            "writes_with_webhooks_pct": round(100 * write_rate / quiet_rate, 1),
        }
        if direct_rate:
            figures["fanout_pct_of_direct"] = round(100 * deliveries_per_s / direct_rate, 1)
    for name, webhooks in (("all", args.webhooks), ("one", 1)):
        if name in latency:
            lat = latency[name]
            figures[f"latency_{webhooks}_webhooks"] = {
                "events_per_s": args.rate, "deliveries_per_s": args.rate * webhooks, "deliveries": len(lat),
                "p50_ms": round(percentile(lat, 0.5), 1), "p99_ms": round(percentile(lat, 0.99), 1),
                "max_ms": round(max(lat, default=0.0), 1), "p99_target_ms": P99_TARGET_MS,
            }
    return figures


async def measure_latency(receivers: Receivers, put: Any, rate: float, seconds: float, webhooks: int) -> list[float]:
    """Paced writes at ``rate``/s for ``seconds``; each delivery's commit-to-receipt latency, once all arrived."""
    await asyncio.sleep(1.0)  # the webhooks' changes reach the fan-out first
    before = receivers.received
    receivers.latencies_ms = []
    receivers.measuring = True
    sent = await paced(put, rate, seconds)
    await receivers.drained(before + sent * webhooks)
    receivers.measuring = False
    return receivers.latencies_ms


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    args.database = f"scaivault_bench_fanout_{os.getpid()}"
    args.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + args.database
    await admin(f'CREATE DATABASE "{args.database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-fanout-") as tmp:
            figures = await benchmark(args, Path(tmp))
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    meta = {"at": datetime.now().astimezone().isoformat(timespec="seconds"), "seconds": args.seconds,
            "rounds": args.rounds, "clients": args.clients, "webhooks": args.webhooks, "cpus": os.cpu_count(),
            "source": source_version()}
    return {"meta": meta, "figures": figures}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time of each figure (default 10)")
    parser.add_argument("--rounds", type=int, default=4, help="alternating F/W slices (default 4)")
    parser.add_argument("--clients", type=int, default=32, help="concurrent writers in F and W (default 32)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced writes/s for L (default 200)")
    parser.add_argument("--webhooks", type=int, default=10, help="webhooks listening (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="server worker processes (default 2)")
    parser.add_argument("--phases", default="DFL", help="which of D, F (with W) and L to run (default DFL)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 1 <= args.rounds <= 50 and 1 <= args.clients <= 256
            and 0 < args.rate <= 5000 and 1 <= args.webhooks <= 100):
        parser.error("--seconds in (0, 600], --rounds in [1, 50], --clients in [1, 256], --rate in (0, 5000], "
                     "--webhooks in [1, 100]")
    results = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fanout-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["figures"], indent=2))
    print(f"\nwrote {RESULTS / 'fanout-latest.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
