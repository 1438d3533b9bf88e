"""Running background tasks: keeping one alive through its failures, and stopping them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

log = logging.getLogger(__name__)

RESTART_FIRST_DELAY_SECONDS = 1.0
RESTART_MAX_DELAY_SECONDS = 60.0


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


async def run_supervised(
    name: str,
    work: Callable[[], Coroutine[Any, Any, None]],
    *,
    first_delay: float = RESTART_FIRST_DELAY_SECONDS,
    max_delay: float = RESTART_MAX_DELAY_SECONDS,
) -> None:
    """Run ``work`` until this task is cancelled, starting it again whenever it raises or returns.

    Restarts wait ``first_delay`` seconds, doubling after each failure up to ``max_delay``, so work that fails at
    once (its database is down) does not spin; a run that lasted ``max_delay`` or longer counts as healthy, and the
    next failure waits ``first_delay`` again. Only the exception's type is logged: its message may carry a value
    (a DSN, a token) that must never reach a log."""
    loop = asyncio.get_running_loop()
    delay = first_delay
    while True:
        started = loop.time()
        try:
            await work()
        except Exception as exc:  # noqa: BLE001 - a background job must outlive its failures
            outcome = type(exc).__name__
        else:
            outcome = "returned"
        if loop.time() - started >= max_delay:
            delay = first_delay
        log.warning(
            "background job stopped; restarting it",
            extra={"job": name, "outcome": outcome, "restart_in_seconds": delay},
        )
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay)
