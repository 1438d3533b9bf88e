"""JSON as the API, audit exports and the CLI write it: timestamps in the API's one form, orjson underneath."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import orjson

_ZERO = timedelta(0)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 UTC with microseconds and Z, as every timestamp of the API (isoformat: several times strftime's
    speed, and responses carry many timestamps)."""
    if value.utcoffset() != _ZERO:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (frozenset, set, tuple)):
        return list(value)
    raise TypeError(type(value).__name__)


def dumps(body: Any) -> bytes:
    return orjson.dumps(body, default=_default, option=orjson.OPT_PASSTHROUGH_DATETIME)
