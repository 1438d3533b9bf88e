"""The rotation and expiry scheduler: an APScheduler interval job inside the server that scans the schedule read
model for secrets whose next step may be due and runs each step as a command (``RotationCommands.step``), and as
well the other areas' scheduled steps (``also``: the PKI's CRL re-signing, certificate renewals and expiry notices).

The schedule only says *when to look*; whether a step is still needed is decided by the Secret aggregate under its
stream lock, so any number of schedulers on one database give each step exactly once. The first scan runs at start:
steps missed while no server ran are caught up then (docs/rotation.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from commands.rotation import RotationCommands

log = logging.getLogger(__name__)
SCAN_BATCH = 200


Scan = Callable[..., Awaitable[int]]  # ``run_due(limit=...)``: steps taken, fewer than ``limit`` when done


class RotationScheduler:
    def __init__(self, commands: RotationCommands, *, interval_seconds: float, also: Sequence[Scan] = ()) -> None:
        self._scans: list[Scan] = [commands.run_due, *also]
        self._interval = interval_seconds
        self._scanning: asyncio.Task[object] | None = None

    async def scan(self) -> int:
        """Take every step due now, batch after batch; returns how many secrets changed."""
        changed = 0
        for run_due in self._scans:
            while True:
                batch = await run_due(limit=SCAN_BATCH)
                changed += batch
                if batch < SCAN_BATCH:
                    break
        return changed

    async def run(self) -> None:
        """Scan now and then every interval until cancelled (one scan at a time; missed runs coalesce)."""
        scheduler = AsyncIOScheduler(timezone=UTC)
        scheduler.add_job(
            self._scan_logged, IntervalTrigger(seconds=self._interval), next_run_time=datetime.now(UTC),
            max_instances=1, coalesce=True, misfire_grace_time=None, id="rotation-scan",
        )
        scheduler.start()
        try:
            await asyncio.Event().wait()
        finally:
            scheduler.shutdown(wait=False)
            # APScheduler does not cancel a running coroutine job: a scan must not outlive the server's pool.
            scanning = self._scanning
            if scanning is not None and not scanning.done():
                scanning.cancel()
                await asyncio.gather(scanning, return_exceptions=True)

    async def _scan_logged(self) -> None:
        self._scanning = asyncio.current_task()
        try:
            changed = await self.scan()
        except Exception as exc:  # noqa: BLE001 - a failed scan is retried at the next interval; the job must live
            log.warning("rotation scan failed: %s", type(exc).__name__)
            return
        if changed:
            log.info("rotation and expiry steps taken", extra={"count": changed})
