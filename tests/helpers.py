"""Helpers shared by tests of every kind: waiting for a condition instead of sleeping, clocks, and a small aggregate
for the event store's tests."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import Aggregate, event

POLL_SECONDS = 0.02


async def eventually(condition: Callable[[], Any], *, timeout: float = 15.0, message: str = "") -> Any:
    """Poll ``condition`` (a function, sync or async) until it returns something truthy, and return that; fail
    after ``timeout`` seconds, with ``message`` and the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"not reached within {timeout} s: {message or condition!r} (last: {value!r})")
        await asyncio.sleep(POLL_SECONDS)


async def instant_between_steps() -> datetime:
    """A time strictly after every timestamp taken before the call and strictly before every one taken after it:
    the wall clock (microseconds, shared with PostgreSQL on this machine) is waited on until it has moved twice."""
    before = datetime.now(UTC)
    while (instant := datetime.now(UTC)) <= before:
        await asyncio.sleep(0)
    while datetime.now(UTC) <= instant:
        await asyncio.sleep(0)
    return instant


class Clock:
    """A clock the test moves by hand (``clock.now += seconds``), for code that takes a clock function."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def time(self) -> float:
        """As ``time.time``, for a module whose ``time`` is replaced by this clock."""
        return self.now


class Counter(Aggregate):
    """The smallest aggregate with state, for storing and loading events that belong to no area of ours."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0

    @event("Incremented")
    def increment(self, by: int = 1) -> None:
        self.count += by
