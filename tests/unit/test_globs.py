"""Glob matching: the spec's table, a property test against a regex reference on small inputs, and no
catastrophic backtracking on hostile patterns."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scaivault.domain.globs import InvalidGlob, glob_matches


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


@pytest.mark.parametrize("pattern", ["", "/a", "a/", "a//b", "A", "a/***", "a**/b", "a.b"])
def test_invalid_globs(pattern: str) -> None:
    with pytest.raises(InvalidGlob):
        glob_matches(pattern, "a")
