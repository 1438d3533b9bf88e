"""What policy evaluation costs a read: authenticated GETs of ~100 secrets by a caller bound to 50 policies of 20
rules each, against the same reads by a tenant admin (a role: no policy is evaluated), in one run, measured in
alternating slices on one server (bench.run's driver, servers and operations).

    P0  reads by a tenant admin, no policies evaluated          requests/s, p50/p99
    P   reads by a service account bound to 50 x 20 rules       requests/s, p50/p99   -> cost % of P0 (target <= 10%)
    C   the first read after a policy change (cache dropped: the 1,000 rules are matched afresh), median latency

    python -m bench.policies [--seconds 10] [--rounds 4] [--warmup 2] [--clients 32] [--policies 50] [--rules 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.run import (
    ADMIN_URL,
    BIN,
    HOST,
    RESULTS,
    Load,
    add_load_options,
    admin,
    cli,
    expect,
    free_port,
    http_session,
    interleaved,
    read_urls,
    reads,
    register,
    secret_ops,
    serve,
    source_version,
)

TARGET_COST_PCT = 10.0
READER = "sa:bench-reader"
READER_GROUP = "group:bench-readers"
COLD_SAMPLES = 20


def policy_rules(policy: int, rules: int) -> list[dict[str, Any]]:
    """Rules of the kinds real policies hold (exact paths, subtrees, one-segment and leading ``**`` wildcards), on
    paths the measured reads never touch, except one rule of the last policy, which grants the reads."""
    kinds = [
        lambda j: {"path_pattern": f"services/svc{policy:02d}/env{j:02d}/**", "permissions": ["read", "list"]},
        lambda j: {"path_pattern": f"**/svc{policy:02d}-{j:02d}/ssl/*", "permissions": ["read"]},
        lambda j: {"path_pattern": f"teams/t{policy:02d}/*/config-{j:02d}", "permissions": ["read", "write"]},
        lambda j: {"path_pattern": f"bench/other/p{policy:02d}/s?{j:02d}", "permissions": ["read"],
                   "conditions": {"ip_ranges": ["10.0.0.0/8"]}},
    ]
    return [kinds[j % len(kinds)](j) for j in range(rules)]


async def create_policies(session: aiohttp.ClientSession, base: str, token: str, count: int, rules: int) -> list[str]:
    """``count`` policies of ``rules`` rules, half bound to the reader, half to its group; the last one's last rule
    grants read on the measured paths."""
    headers = {"Authorization": f"Bearer {token}"}
    ids = []
    for n in range(count):
        body_rules = policy_rules(n, rules)
        if n == count - 1:
            body_rules[-1] = {"path_pattern": "bench/read/*", "permissions": ["read"]}
        async with session.post(f"{base}/v1/policies", json={"name": f"bench-{n:02d}", "rules": body_rules},
                                headers=headers) as response:
            await expect(response, 201)
            ids.append((await response.json())["id"])
        identity_type, identity_id = ("service_account", READER) if n % 2 else ("group", READER_GROUP)
        async with session.post(f"{base}/v1/policies/{ids[-1]}/bindings", headers=headers,
                                json={"identity_type": identity_type, "identity_id": identity_id}) as response:
            await expect(response, 201)
    return ids


async def cold_reads(session: aiohttp.ClientSession, base: str, admin_token: str, reader_token: str,
                     policy_id: str) -> list[float]:
    """Latency of the first read after each of ``COLD_SAMPLES`` policy changes (each drops the cached evaluation)."""
    admin_headers = {"Authorization": f"Bearer {admin_token}"}
    url = read_urls(base)[0]
    latencies = []
    for n in range(COLD_SAMPLES):
        async with session.patch(f"{base}/v1/policies/{policy_id}", json={"description": f"change {n}"},
                                 headers=admin_headers) as response:
            await expect(response, 200)
        started = time.perf_counter()
        async with session.get(url, headers={"Authorization": f"Bearer {reader_token}"}) as response:
            await expect(response, 200)
        latencies.append(time.perf_counter() - started)
    return latencies


async def benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    port = free_port()
    env = {**os.environ, "DATABASE_URL": args.db_url, "SCAIVAULT_DATA_DIR": str(tmp / "data"),
           "BIND_ADDRESS": f"{HOST}:{port}", "LOG_LEVEL": "error", "SCAIVAULT_RATE_LIMITS": "off",
           "SCAIVAULT_WORKERS": "1"}  # one process, whose CPU is the server column
    base = f"http://{HOST}:{port}"
    with serve([str(BIN / "scaivault"), "serve"], env, port, tmp / "scaivault.log") as pid:
        admin_token = register(env)
        reader_token = cli(env, "token", "issue", "--partner", "ptn_bench", "--tenant", "tnt_bench", "--identity",
                           READER, "--groups", READER_GROUP, "--scopes", "secrets:read", "--ttl", "1h")
        async with http_session(args.clients) as session:
            admin_reads, _ = await secret_ops(session, base, admin_token)
            policy_ids = await create_policies(session, base, admin_token, args.policies, args.rules)
            plain = Load("P0 reads, admin", "req/s", admin_reads, pid)
            bound_reads = reads(session, read_urls(base), reader_token)
            bound = Load(f"P  reads, {args.policies}x{args.rules}", "req/s", bound_reads, pid)
            await interleaved(plain, bound, args)
            cold = await cold_reads(session, base, admin_token, reader_token, policy_ids[0])
    cost = 100 * (1 - bound.rate / plain.rate) if plain.rate else float("nan")
    plain_us, bound_us = plain.summary()["server_cpu_us_per_op"], bound.summary()["server_cpu_us_per_op"]
    return {
        "phases": {load.name: load.summary() for load in (plain, bound)},
        "policy_cost_pct": round(cost, 1),
        # Throughput on a busy machine wobbles; the server's own CPU time per read shows the cost more steadily.
        "server_cpu_cost_pct": round(100 * (bound_us / plain_us - 1), 1) if plain_us and bound_us else None,
        "p99_added_ms": round(bound.percentile_ms(0.99) - plain.percentile_ms(0.99), 2),
        "cold_first_read_ms": {"median": round(1000 * statistics.median(cold), 2),
                               "max": round(1000 * max(cold), 2), "samples": len(cold)},
        "target_cost_pct": TARGET_COST_PCT,
        "target_met": cost <= TARGET_COST_PCT,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    args.database = f"scaivault_bench_policies_{os.getpid()}"
    args.db_url = ADMIN_URL.rsplit("/", 1)[0] + "/" + args.database
    print(f"database {args.database}, {args.clients} clients, {args.seconds:g} s per figure in {args.rounds} "
          f"slices (+{args.warmup:g} s warm-up), {args.policies} policies x {args.rules} rules", file=sys.stderr)
    await admin(f'CREATE DATABASE "{args.database}"')
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-policies-") as tmp:
            results = await benchmark(args, Path(tmp))
    finally:
        await admin(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
    results["meta"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": args.seconds, "rounds": args.rounds,
        "warmup": args.warmup, "clients": args.clients, "policies": args.policies, "rules": args.rules,
        "cpus": os.cpu_count(), "source": source_version(),
    }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.policies", description=__doc__.split("\n\n")[0])
    add_load_options(parser, rounds=4)
    parser.add_argument("--policies", type=int, default=50, help="policies bound to the reader (default 50)")
    parser.add_argument("--rules", type=int, default=20, help="rules per policy (default 20)")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 1 <= args.rounds <= 50 and 0 <= args.warmup <= 60
            and 1 <= args.clients <= 256 and 1 <= args.policies <= 500 and 1 <= args.rules <= 100):
        parser.error("--seconds in (0, 600], --rounds in [1, 50], --warmup in [0, 60], --clients in [1, 256], "
                     "--policies in [1, 500], --rules in [1, 100]")
    results = asyncio.run(main_async(args))
    plain, bound = results["phases"].values()
    print(f"\npolicy evaluation costs {results['policy_cost_pct']:.1f}% of read throughput "
          f"({bound['rate']:.0f} vs {plain['rate']:.0f} req/s; p99 {bound['p99_ms']} vs {plain['p99_ms']} ms)  "
          f"(target <= {TARGET_COST_PCT:g}%)  {'met' if results['target_met'] else 'MISSED'}")
    print(f"server CPU per read: {bound['server_cpu_us_per_op']} vs {plain['server_cpu_us_per_op']} us "
          f"({results['server_cpu_cost_pct']:+.1f}%)")
    print(f"first read after a policy change: median {results['cold_first_read_ms']['median']} ms, "
          f"max {results['cold_first_read_ms']['max']} ms")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "policies-latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS / 'policies-latest.json'}")


if __name__ == "__main__":
    main()
