"""Glob matching: the spec's table, a property test against a regex reference on small inputs, and no
catastrophic backtracking on hostile patterns."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.domain.globs import InvalidGlob, glob_matches, segment_matches


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("app/db/*", "app/db/password", True),
        ("app/db/*", "app/db/user", True),
        ("app/db/*", "app/db/primary/password", False),
        ("app/**", "app/db", True),
        ("app/**", "app/db/password", True),
        ("app/**", "other/app/db", False),
        ("**/ssl/*", "app/ssl/cert", True),
        ("**/ssl/*", "service/ssl/key", True),
        ("**/ssl/*", "ssl/cert", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/?", "a/x", True),
        ("a/?", "a/xy", False),
        ("db-*", "db-main", True),
        ("db-*", "cache-main", False),
    ],
)
def test_the_spec_table(pattern: str, path: str, expected: bool) -> None:
    assert glob_matches(pattern, path) is expected


def reference(pattern: str, path: str) -> bool:
    """Written for clarity, by recursion over segments (fine on these tiny inputs)."""

    def segment_ok(glob: str, text: str) -> bool:
        regex = "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in glob)
        return bool(text) and re.fullmatch(regex, text) is not None

    def match(globs: list[str], parts: list[str], leading: bool) -> bool:
        if not globs:
            return not parts
        head, rest = globs[0], globs[1:]
        if head == "**":
            first = 1 if leading and rest else 0  # a leading **/ needs a parent segment
            return any(match(rest, parts[i:], False) for i in range(first, len(parts) + 1))
        return bool(parts) and segment_ok(head, parts[0]) and match(rest, parts[1:], False)

    return match(pattern.split("/"), path.split("/"), True)


segment = st.text(alphabet="ab", min_size=1, max_size=3)
glob_segment = st.one_of(
    st.text(alphabet="ab*?", min_size=1, max_size=3).filter(lambda s: "**" not in s), st.just("**")
)


@settings(max_examples=3000)
@given(
    st.lists(glob_segment, min_size=1, max_size=4).map("/".join),
    st.lists(segment, min_size=1, max_size=4).map("/".join),
)
def test_agrees_with_the_reference(pattern: str, path: str) -> None:
    assert glob_matches(pattern, path) == reference(pattern, path)


def test_hostile_patterns_take_linear_time() -> None:
    path = "a" * 500
    assert glob_matches("a*a*a*a*a*a*a*a*a*a*a*b", path) is False  # exponential for a backtracking regex


def dp_segment_matches(pattern: str, text: str) -> bool:
    """The character-by-character DP the greedy matcher replaced: the reference for one segment."""
    if pattern == "*":
        return bool(text)
    reachable = [True] + [False] * len(text)
    for symbol in pattern:
        if symbol == "*":
            for j in range(1, len(text) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(text), 0, -1):
                reachable[j] = reachable[j - 1] and (symbol == "?" or symbol == text[j - 1])
            reachable[0] = False
    return reachable[len(text)]


def test_segments_match_as_the_dp_did_for_every_small_pattern_and_text() -> None:
    patterns = ["".join(p) for n in range(1, 6) for p in itertools.product("ab*?", repeat=n) if "**" not in "".join(p)]
    texts = ["".join(t) for n in range(6) for t in itertools.product("ab", repeat=n)]
    for pattern in patterns:
        for text in texts:
            assert segment_matches(pattern, text) == dp_segment_matches(pattern, text), (pattern, text)


@pytest.mark.parametrize("segment", [
    "*a" * 250 + "*b", "*a?" * 166 + "*b", "a?" * 200 + "*b", "*" + "ab" * 200 + "*", "?*" * 250 + "b",
])
def test_a_hostile_segment_costs_well_under_a_millisecond(segment: str) -> None:
    """Subscriptions match 100 such globs against every event of their tenant: the DP took 10 ms each."""
    texts = ("a" * 512, "ab" * 256, "a" * 511 + "b")
    assert [segment_matches(segment, t) for t in texts] == [dp_segment_matches(segment, t) for t in texts]
    started = time.perf_counter()
    for _ in range(20):
        for text in texts:
            segment_matches(segment, text)
    assert (time.perf_counter() - started) / 60 < 0.001


@pytest.mark.parametrize("pattern", ["", "/a", "a/", "a//b", "A", "a/***", "a**/b", "a.b"])
def test_invalid_globs(pattern: str) -> None:
    with pytest.raises(InvalidGlob):
        glob_matches(pattern, "a")
