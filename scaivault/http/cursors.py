"""Opaque pagination cursors: a small JSON object, base64url-encoded. Anything that does not decode to an object
is ``invalid_cursor``; each list checks the fields it put there."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from scaivault.domain.errors import InvalidCursor


def encode_cursor(state: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(state)).decode().rstrip("=")


def decode_cursor(raw: str) -> dict[str, Any]:
    try:
        state = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidCursor() from None
    if not isinstance(state, dict):
        raise InvalidCursor()
    return state
