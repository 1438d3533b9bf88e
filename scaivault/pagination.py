"""Cursor pagination, one way for every list: a page of items, and an opaque cursor naming where the next starts.

A cursor is a small JSON object (a pydantic model of the list's own), base64url-encoded; anything that does not
decode to exactly that model is 400 ``invalid_cursor``, and so is one whose fields do not hold the values the listing
expects (``expected``: the parameters a cursor is bound to, e.g. a policy list's ``scope``), which makes a cursor
of one listing useless for another. A cursor whose position must not be readable (the listing of secrets names paths
the caller may not see) is sealed with AES-GCM under a key of the server's, bound to the listing it came from.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from scaivault.crypto.aead import DecryptionFailed, open_sealed, seal
from scaivault.domain.errors import InvalidCursor

T = TypeVar("T")
R = TypeVar("R")
State = TypeVar("State", bound="CursorState")


class CursorState(BaseModel):
    """Where a list resumes. Each list declares its fields; a cursor of another list (other fields) is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    cursor: str | None

    @property
    def has_more(self) -> bool:
        return self.cursor is not None

    def document(self, name: str, shown: Callable[[T], Any]) -> dict[str, Any]:
        """The page as a listing answers it: ``{name: [shown(item), ...], "cursor", "has_more"}``."""
        return {name: [shown(item) for item in self.items], "cursor": self.cursor, "has_more": self.has_more}


def invalid_cursor() -> InvalidCursor:
    return InvalidCursor(
        "The cursor is malformed, expired or from another listing; start again without it", parameter="cursor"
    )


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _b64decode(raw: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise invalid_cursor() from None


def _state(raw: bytes, model: type[State], expected: Mapping[str, object] | None) -> State:
    try:
        state = model.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError, ValueError, TypeError):
        raise invalid_cursor() from None
    if expected is not None and any(getattr(state, name) != value for name, value in expected.items()):
        raise invalid_cursor()
    return state


def encode_cursor(state: CursorState) -> str:
    return _b64encode(orjson.dumps(state.model_dump(mode="json")))


def decode_cursor(
    raw: str | None, model: type[State], *, expected: Mapping[str, object] | None = None
) -> State | None:
    """The state a cursor carries (None without a cursor); ``InvalidCursor`` for anything else, or when a field
    named in ``expected`` holds another value (the cursor comes from a listing with other parameters)."""
    if raw is None:
        return None
    return _state(_b64decode(raw), model, expected)


class SealedCursors:
    """Cursors whose state is encrypted and bound (AEAD associated data) to the listing they belong to."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encode(self, state: CursorState, bound_to: bytes) -> str:
        return _b64encode(seal(self._key, orjson.dumps(state.model_dump(mode="json")), bound_to))

    def decode(
        self, raw: str | None, model: type[State], bound_to: bytes, *, expected: Mapping[str, object] | None = None
    ) -> State | None:
        """As ``decode_cursor``, for a cursor sealed with the same ``bound_to``."""
        if raw is None:
            return None
        try:
            plain = open_sealed(self._key, _b64decode(raw), bound_to)
        except (DecryptionFailed, ValueError):
            raise invalid_cursor() from None
        return _state(plain, model, expected)


def page_of(rows: Sequence[R], limit: int, cursor_after: Callable[[R], str]) -> Page[R]:
    """A page from up to ``limit + 1`` rows fetched in list order: the extra row only says that more follow, and
    the cursor resumes after the page's last row."""
    items = list(rows[:limit])
    return Page(items, cursor_after(items[-1]) if len(rows) > limit else None)
