"""Stopping background tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, timeout: float = 10.0) -> bool:
    """Cancel the tasks and wait (at most ``timeout`` seconds) until they have finished; True if they all did.

    Their own outcomes are dropped, but a cancellation of the caller itself still propagates (suppressing
    CancelledError around ``await task`` would swallow it). A task stuck where cancellation cannot reach (a
    database call whose server never answers) is left behind rather than hanging shutdown for ever."""
    pending = [task for task in tasks if not task.done()]
    for task in pending:
        task.cancel()
    if not pending:
        return True
    done, stuck = await asyncio.wait(pending, timeout=timeout)
    for task in done:
        if not task.cancelled():
            task.exception()  # retrieved, so it is not reported as never retrieved
    if stuck:
        log.warning("background tasks did not stop in time", extra={"tasks": sorted(t.get_name() for t in stuck)})
    return not stuck
