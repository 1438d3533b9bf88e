"""Duration strings such as ``30d``, ``24h``, ``90m``, ``45s`` (and ``1w``, ``7y``), as the spec uses them."""

from __future__ import annotations

import re
from datetime import timedelta

from scaivault.domain.errors import InvalidDuration

_DURATION = re.compile(r"^(\d{1,10})([smhdwy])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
# Nothing we store is meant to outlive a century; larger values are typos, not intentions.
MAX_DURATION = timedelta(days=36500)


def parse_duration(text: object) -> timedelta:
    if not isinstance(text, str):
        raise InvalidDuration(str(text))
    match = _DURATION.match(text.strip())
    if not match:
        raise InvalidDuration(text)
    amount, unit = int(match.group(1)), match.group(2)
    if amount == 0:
        raise InvalidDuration(text)
    duration = timedelta(seconds=amount * _UNIT_SECONDS[unit])
    if duration > MAX_DURATION:
        raise InvalidDuration(text)
    return duration


def format_duration(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit in ("y", "w", "d", "h", "m"):
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"
