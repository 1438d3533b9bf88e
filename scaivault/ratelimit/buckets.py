"""Token buckets: what one charge asks for, what it is told, and the in-process store.

A bucket holds at most ``capacity`` tokens and refills continuously at ``rate`` tokens per second. A charge takes
``cost`` tokens from its bucket if the bucket holds at least ``need`` (usually need == cost == 1). Several charges
in one call are all-or-nothing. ``need`` 0 lets a charge drive the bucket below zero (a debt later requests wait
out): the batch read's returned-secrets charge, which happens after the work is done.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple

from scaivault.ratelimit.categories import Limit


# Named tuples rather than frozen dataclasses: several are made per request, and a frozen dataclass costs a few
# times as much to build.
class Charge(NamedTuple):
    key: str
    category: str
    limit: Limit
    cost: float = 1.0
    need: float = 1.0


class Outcome(NamedTuple):
    """One charge's result: the bucket's level after it (before it, when refused) and when it is full again."""

    charge: Charge
    level: float
    allowed: bool

    @property
    def seconds_until_full(self) -> float:
        return max(self.charge.limit.capacity - self.level, 0.0) / self.charge.limit.rate

    @property
    def retry_after(self) -> int:
        """Whole seconds until the bucket holds what the charge needs (at least 1)."""
        return max(1, math.ceil((self.charge.need - self.level) / self.charge.limit.rate))


class LocalBuckets:
    """Buckets in this process's memory. Every operation is synchronous, so on one event loop each is atomic.

    Buckets that have refilled are dropped by a sweep once a minute: a full bucket and a missing one mean the same,
    so memory stays proportional to the identities active within the last window.

    ``shared_by``: the processes that each keep such buckets for the same clients (the workers of ``serve
    --workers N``, among which the kernel spreads connections): every bucket here holds 1/N of its limit
    (``Limit.shared``), and the outcomes report that share, so the workers together allow the limit."""

    SWEEP_SECONDS = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, shared_by: int = 1) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float, float]] = {}  # key -> (level, at, full_at)
        self._next_sweep = clock() + self.SWEEP_SECONDS
        self._shared_by = shared_by
        self._shares: dict[Limit, Limit] = {}

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, charges: Sequence[Charge]) -> list[Outcome]:
        if self._shared_by != 1:
            charges = [charge._replace(limit=self._share(charge.limit)) for charge in charges]
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        buckets = self._buckets
        levels = []
        allowed = True
        for charge in charges:
            limit = charge.limit
            stored = buckets.get(charge.key)
            if stored is None:
                level = limit.capacity
            else:
                level = min(limit.capacity, stored[0] + (now - stored[1]) * limit.rate)
            allowed = allowed and level >= charge.need
            levels.append(level)
        if not allowed:
            return [Outcome(charge, level, False) for charge, level in zip(charges, levels, strict=True)]
        outcomes = []
        for charge, level in zip(charges, levels, strict=True):
            if charge.cost > 0:
                level -= charge.cost
                limit = charge.limit
                buckets[charge.key] = (level, now, now + (limit.capacity - level) / limit.rate)
            outcomes.append(Outcome(charge, level, True))
        return outcomes

    def _share(self, limit: Limit) -> Limit:
        share = self._shares.get(limit)
        if share is None:
            share = self._shares[limit] = limit.shared(self._shared_by)
        return share

    def _sweep(self, now: float) -> None:
        self._buckets = {key: state for key, state in self._buckets.items() if state[2] > now}
        self._next_sweep = now + self.SWEEP_SECONDS
