"""The wall clock, as every layer but the domain reads it (the domain takes the time as ``at``): one function, so
that services can take a ``clock`` parameter defaulting to it and tests can pass their own."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
