"""Prefixed, time-ordered identifiers (``req_``, ``dk_``, ``pat_``, ``tok_``, ...)."""

from __future__ import annotations

import os
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    """``prefix`` + 26 Crockford base32 characters: 48 bits of milliseconds then 80 random bits (the ULID layout),
    so ids sort by creation time and index well."""
    return prefix + ulid_text((int(time.time() * 1000) & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big"))


def ulid_text(value: int) -> str:
    """A 128-bit value as 26 Crockford base32 digits, most significant first (the first is at most 7)."""
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))


def new_request_id() -> str:
    """A request's id (``req_``): what the API answers in ``X-Request-ID`` and access records carry."""
    return new_id("req_")
