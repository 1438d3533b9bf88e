"""Cursors: a cursor resumes only the listing it came from (its fields bound to the listing's parameters)."""

from __future__ import annotations

import os
from typing import Literal

import pytest

from projections.secrets.reader import ListCursor
from scaivault.domain.errors import InvalidCursor
from scaivault.pagination import CursorState, SealedCursors, decode_cursor, encode_cursor, page_of


class ScopedCursor(CursorState):
    scope: Literal["tenant", "partner"] | None
    after: str


def test_a_cursor_resumes_only_a_listing_with_the_parameters_it_was_made_for() -> None:
    state = ScopedCursor(scope="tenant", after="pol_1")
    cursor = encode_cursor(state)
    assert decode_cursor(cursor, ScopedCursor, expected={"scope": "tenant"}) == state
    for other in ({"scope": "partner"}, {"scope": None}):
        with pytest.raises(InvalidCursor):
            decode_cursor(cursor, ScopedCursor, expected=other)
    assert decode_cursor(None, ScopedCursor, expected={"scope": "partner"}) is None


def test_a_sealed_cursor_is_bound_to_its_listing_twice_over() -> None:
    cursors = SealedCursors(os.urandom(32))
    sealed = cursors.encode(ListCursor(v=3, prefix="app/", after="app/db"), b"tnt_a|app/")
    assert cursors.decode(sealed, ListCursor, b"tnt_a|app/", expected={"prefix": "app/"}) is not None
    with pytest.raises(InvalidCursor):
        cursors.decode(sealed, ListCursor, b"tnt_b|app/", expected={"prefix": "app/"})
    with pytest.raises(InvalidCursor):
        cursors.decode(sealed, ListCursor, b"tnt_a|app/", expected={"prefix": "ap"})
    outside = cursors.encode(ListCursor.model_construct(v=3, prefix="app/", after="other/x"), b"tnt_a|app/")
    with pytest.raises(InvalidCursor):  # a listing resumes only under its own prefix
        cursors.decode(outside, ListCursor, b"tnt_a|app/")


def test_a_page_says_whether_more_follow() -> None:
    full = page_of([1, 2, 3], 2, str)
    assert full.document("items", lambda n: n * 10) == {"items": [10, 20], "cursor": "2", "has_more": True}
    assert page_of([1], 2, str).document("items", lambda n: n) == {"items": [1], "cursor": None, "has_more": False}
