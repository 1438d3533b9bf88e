"""The rotation and expiry scheduler on the real database: two schedulers (each its own container and pool, as two
servers) scanning at the same moments over many due secrets take each step exactly once; a scheduler that was down
catches up without sending stale warnings; expiry notices fire once per threshold. Time is a clock the test moves."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from commands.actor import Actor
from commands.rotation import PolicyOwner, RotationCommands
from commands.secrets import WriteSecret
from projections.maintenance.rebuild import ReadModel, Rebuilder
from projections.rotation.lookup import PostgresRotationLookup
from projections.rotation.projection import RotationProjection
from projections.secret_policies.lookup import PostgresSecretPolicyLookup
from projections.secrets.projection import SecretsProjection
from scaivault.auth.secret_permissions import AuthorizedSecretPermissions
from scaivault.bootstrap import Container, build_container
from scaivault.clock import utcnow
from scaivault.config import Settings
from scaivault.domain.secrets import SecretAddress
from scaivault.rotation.scheduler import RotationScheduler

OWNER = PolicyOwner(tenant_id="tnt_a", partner_id="ptn_a")
OPERATOR = Actor(identity_id="user:ops@x.example", request_id=None)
SECRETS_PER_POLICY = 12


@dataclass
class MovableClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


def address(path: str) -> SecretAddress:
    return SecretAddress(owner="tnt_a", partner_id="ptn_a", tenant_id="tnt_a", path=path)


@dataclass
class Server:
    container: Container
    commands: RotationCommands
    scheduler: RotationScheduler


@pytest.fixture
async def servers(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[tuple[Server, Server,
                                                                                                 MovableClock]]:
    clock = MovableClock(utcnow())
    made: list[Server] = []
    try:
        for _ in range(2):
            container = await build_container(Settings(database_url=database_url, data_dir=tmp_path / "data"))
            commands = RotationCommands(
                container.runner, container.keyring, PostgresRotationLookup(), PostgresSecretPolicyLookup(),
                AuthorizedSecretPermissions(container.authorizer), clock=clock,
            )
            made.append(Server(container, commands, RotationScheduler(commands, interval_seconds=1)))
        await made[0].container.tenancy_commands.register_tenant("ptn_a", "tnt_a")
        yield made[0], made[1], clock
    finally:
        for server in made:
            await server.container.close()


async def write(server: Server, path: str, **fields: object) -> None:
    await server.container.secret_commands.write(
        WriteSecret(address=address(path), data={"password": "initial", "user": "app"}, **fields),  # type: ignore[arg-type]
        OPERATOR,
    )


async def event_counts(pool: asyncpg.Pool) -> dict[tuple[str, str], int]:
    """(path, event class) -> how many the log holds."""
    rows = await pool.fetch(
        """SELECT s.path, substring(e.topic from '[^.]+$') AS kind, count(*) AS n
           FROM scaivault_events e JOIN scaivault_secret_schedules s ON s.stream_id = e.originator_id
           GROUP BY 1, 2"""
    )
    return {(row["path"], row["kind"]): row["n"] for row in rows}


async def scan_together(a: Server, b: Server) -> None:
    await asyncio.gather(a.scheduler.scan(), b.scheduler.scan())


async def test_two_schedulers_take_every_step_exactly_once(
    pool: asyncpg.Pool, servers: tuple[Server, Server, MovableClock]
) -> None:
    a, b, clock = servers
    base = clock.now
    await a.commands.create(OWNER, {"name": "auto", "interval": "10d", "grace_period": "1d", "warn_before": "2d,1d",
                                    "auto_generate": True}, OPERATOR)
    await a.commands.create(OWNER, {"name": "manual", "interval": "10d", "grace_period": "1d",
                                    "warn_before": "2d,1d"}, OPERATOR)
    for n in range(SECRETS_PER_POLICY):
        await write(a, f"auto/s{n}", rotation_policy_id="rot_auto")
        await write(b, f"manual/s{n}", rotation_policy_id="rot_manual")
    for offset in (timedelta(days=8, hours=1), timedelta(days=9, hours=1), timedelta(days=10, hours=1),
                   timedelta(days=11, hours=2)):
        clock.now = base + offset
        await scan_together(a, b)
        await scan_together(a, b)  # a second round at the same moment finds nothing left to do
    counts = await event_counts(pool)
    for n in range(SECRETS_PER_POLICY):
        auto, manual = f"auto/s{n}", f"manual/s{n}"
        assert counts.get((auto, "RotationDue")) == 2, auto  # 2d and 1d
        assert counts.get((auto, "Rotated")) == 1 and counts.get((auto, "VersionWritten")) == 2
        assert (auto, "RotationOverdue") not in counts
        assert counts.get((manual, "RotationDue")) == 3, manual  # 2d, 1d, due_now
        assert counts.get((manual, "RotationOverdue")) == 1 and (manual, "Rotated") not in counts
    async with pool.acquire() as conn:
        assert await PostgresRotationLookup().due_schedules(conn, clock.now, 100) == []
        history = await conn.fetch("SELECT path, status FROM scaivault_rotation_history ORDER BY path")
    assert sorted((row["path"], row["status"]) for row in history) == sorted(
        [(f"auto/s{n}", "success") for n in range(SECRETS_PER_POLICY)]
        + [(f"manual/s{n}", "pending") for n in range(SECRETS_PER_POLICY)]
    )
    # The read models built live equal those a replay of the log builds (the schedules mirror the aggregate).
    rebuilder = Rebuilder(a.container.database_url, a.container.store, a.container.repository.mapper)
    for projection in (RotationProjection(), SecretsProjection()):
        report = await rebuilder.verify(ReadModel(projection, inline=True))
        assert report["identical"], report


async def test_a_scheduler_back_after_downtime_catches_up_without_stale_warnings(
    pool: asyncpg.Pool, servers: tuple[Server, Server, MovableClock]
) -> None:
    a, b, clock = servers
    base = clock.now
    await a.commands.create(OWNER, {"name": "auto", "interval": "10d", "warn_before": "2d,1d",
                                    "auto_generate": True}, OPERATOR)
    for n in range(5):
        await write(a, f"late/s{n}", rotation_policy_id="rot_auto")
    clock.now = base + timedelta(days=25)  # two and a half cycles missed
    await scan_together(a, b)
    counts = await event_counts(pool)
    for n in range(5):
        path = f"late/s{n}"
        assert counts.get((path, "Rotated")) == 1 and (path, "RotationDue") not in counts, path
    # The new cycle counts from the rotation itself: its warnings come at +8d and +9d after it.
    clock.now = base + timedelta(days=25 + 8, hours=1)
    await scan_together(a, b)
    counts = await event_counts(pool)
    assert all(counts.get((f"late/s{n}", "RotationDue")) == 1 for n in range(5))


async def test_expiry_notices_fire_once_per_threshold_across_schedulers(
    pool: asyncpg.Pool, servers: tuple[Server, Server, MovableClock]
) -> None:
    a, b, clock = servers
    base = clock.now
    for n in range(6):
        await write(a, f"exp/s{n}", expires_in=timedelta(days=10))
    await write(a, "exp/custom", expires_in=timedelta(days=10), metadata={"notify_before": ["3d"]})
    for offset in (timedelta(days=1), timedelta(days=3, hours=1), timedelta(days=9, hours=1), timedelta(days=11)):
        clock.now = base + offset
        await scan_together(a, b)
    counts = await event_counts(pool)
    for n in range(6):
        assert counts.get((f"exp/s{n}", "ExpiryWarned")) == 3 and counts.get((f"exp/s{n}", "Expired")) == 1
    assert counts.get(("exp/custom", "ExpiryWarned")) == 1 and counts.get(("exp/custom", "Expired")) == 1
    rows = await pool.fetch(
        """SELECT e.state FROM scaivault_events e JOIN scaivault_secret_schedules s ON s.stream_id = e.originator_id
           WHERE s.path = 'exp/s0' AND e.topic LIKE '%ExpiryWarned' ORDER BY e.originator_version"""
    )
    # Written with 10 days to go, the 30d threshold is already reached at the first scan; then 7d, then 1d.
    assert [threshold for row in rows for threshold in ("30d", "7d", "1d")
            if f'"threshold":"{threshold}"'.encode() in bytes(row["state"])] == ["30d", "7d", "1d"]
