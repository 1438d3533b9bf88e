"""What one access record costs, stage by stage, in CPU microseconds (this process and PostgreSQL), so the cost of
auditing reads can be taken apart without HTTP in the way:

    record       the group commit: N records handed to ``AccessRecorder.record`` by 32 concurrent "requests"
    audit_log    the audit-log projection applying those N events (hash chain, COPY), as a runner does
    event_index  the event-index projection passing over them (PostgreSQL filters access records out for it)

CPU time, unlike throughput, hardly depends on what else the machine is doing, which is why this is the figure to
watch while working on the audit path. Runs in its own database, dropped at the end.

    python -m bench.audit_cost [--records 20000] [--clients 32]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg

from bench.history import Cpu
from bench.run import ADMIN_URL
from projections.runner import ProjectionRunner, tracked_position
from scaivault.audit.access_records import AccessRecord
from scaivault.bootstrap import build_container, catch_up_projections
from scaivault.config import Settings
from scaivault.ids import new_id

CLIENTS = 32
HOT_SECRETS = [uuid4() for _ in range(100)]  # each record read one of these (its last_accessed_at is refreshed)


def access_record(n: int) -> AccessRecord:
    return AccessRecord(
        recorded_at=datetime.now(UTC), request_id=new_id("req"), method="GET", route="/v1/secrets/{path}",
        action="read", source_ip="127.0.0.1", user_agent="bench", partner_id="ptn_bench", tenant_id="tnt_bench",
        identity_id="sa:bench", identity_type="service_account", secret_path=f"bench/read/s{n % 100:03d}",
        status=200, accessed_streams=[HOT_SECRETS[n % len(HOT_SECRETS)]],
    )


def per_record(cores: dict[str, float], seconds: float, records: int) -> dict[str, float]:
    return {"python_us": round(1e6 * cores["bench"] * seconds / records, 1),
            "postgres_us": round(1e6 * cores["postgres"] * seconds / records, 1)}


async def measure(records: int, admin_url: str, clients: int = CLIENTS) -> dict[str, Any]:
    database = f"scaivault_bench_audit_cost_{int(time.time())}"
    db_url = admin_url.rsplit("/", 1)[0] + "/" + database
    admin = await asyncpg.connect(admin_url)
    await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    result: dict[str, Any] = {"records": records}
    try:
        with tempfile.TemporaryDirectory(prefix="scaivault-bench-audit-") as tmp:
            settings = Settings(database_url=db_url, data_dir=Path(tmp) / "data", log_level="error",
                                run_projections=False)
            container = await build_container(settings)
            try:
                async with container.running_background():
                    await container.tenancy_commands.register_tenant("ptn_bench", "tnt_bench")
                    counter = iter(range(records))

                    async def client() -> None:
                        for n in counter:
                            await container.access_recorder.record(access_record(n))

                    cpu, started = Cpu(database), time.perf_counter()
                    await asyncio.gather(*(client() for _ in range(clients)))
                    seconds = time.perf_counter() - started
                    rate = {"records_per_s": round(records / seconds)}
                    result["record"] = per_record(cpu.cores(), seconds, records) | rate
                    head = await container.store.max_notification_id(container.pool)
                    for projection in catch_up_projections(container.keyring):
                        runner = ProjectionRunner(container.database_url, container.store, container.repository.mapper,
                                                  [projection])
                        cpu, started = Cpu(database), time.perf_counter()
                        await runner.start()
                        try:
                            while await tracked_position(container.pool, projection.name) < head:
                                await asyncio.sleep(0.01)
                        finally:
                            await runner.stop()
                        seconds = time.perf_counter() - started
                        result[projection.name] = per_record(cpu.cores(), seconds, records)
            finally:
                await container.close()
    finally:
        admin = await asyncpg.connect(admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=CLIENTS,
                        help="concurrent requests handing records over (default 32; fewer means smaller batches)")
    args = parser.parse_args()
    result = asyncio.run(measure(args.records, ADMIN_URL, args.clients))
    print(f"{'stage':<13}{'python us':>11}{'postgres us':>13}   per access record ({result['records']:,} records)")
    for stage in ("record", "audit_log", "event_index"):
        print(f"{stage:<13}{result[stage]['python_us']:>11}{result[stage]['postgres_us']:>13}")
    print(f"group commit: {result['record']['records_per_s']:,} records/s", file=sys.stderr)


if __name__ == "__main__":
    main()
