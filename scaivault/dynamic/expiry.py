"""The lease expiry worker: revokes leases when they expire, and retries revocations a target refused, with backoff.

Every serving process of every server runs one. Due leases are claimed with ``FOR UPDATE SKIP LOCKED`` in the
transaction that records their revocation (``commands/dynamic.py: revoke_due``), so servers share the work and a
lease is revoked once: a server that dies mid-batch rolls back and its leases are claimed again (revocation on every
target is idempotent). The queue is the read model, so expiry survives restarts: nothing is scheduled in memory.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from commands.dynamic import DynamicCommands
from scaivault.clock import utcnow

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
BATCH = 100


class LeaseExpiryWorker:
    def __init__(self, commands: DynamicCommands, *, idle_seconds: float = IDLE_SECONDS, batch: int = BATCH) -> None:
        self._commands = commands
        self._idle = idle_seconds
        self._batch = batch
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            revoked, failed = await self.step()
            if revoked + failed >= self._batch:
                continue
            await self._sleep(await self._commands.next_due())

    async def step(self) -> tuple[int, int]:
        """One batch: (revoked, failed)."""
        revoked, failed = await self._commands.revoke_due(limit=self._batch)
        if revoked or failed:
            log.info("expired leases revoked", extra={"revoked": revoked, "failed": failed})
        return revoked, failed

    async def _sleep(self, next_due: datetime | None) -> None:
        """Until the next lease is due, at most ``idle_seconds`` (a lease granted meanwhile by another server may be
        due sooner), or until woken."""
        wait = self._idle
        if next_due is not None:
            wait = min(wait, max(0.0, (next_due - utcnow()).total_seconds()))
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), timeout=max(wait, 0.05))
        except TimeoutError:
            pass
