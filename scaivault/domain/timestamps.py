"""Instants as the API takes them: ISO 8601, naive meaning UTC, held in UTC.

Every timestamp a caller sends goes through here, so none can fail later: a time at the ends of the calendar
(year 1 at +14:00, year 9999 at -14:00) cannot be converted to UTC, or to a rule's time zone, without overflowing,
and is refused as invalid instead (a day's margin inside what ``datetime`` holds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EARLIEST = datetime.min.replace(tzinfo=UTC) + timedelta(days=1)
LATEST = datetime.max.replace(tzinfo=UTC) - timedelta(days=1)


def in_utc(value: datetime) -> datetime:
    """``value`` in UTC (naive means UTC); ValueError when it lies too close to the ends of the calendar."""
    try:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp out of range") from None
    if not EARLIEST <= value <= LATEST:
        raise ValueError("timestamp out of range")
    return value


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 timestamp, in UTC; ValueError when it is not one, or out of range."""
    return in_utc(datetime.fromisoformat(text))
