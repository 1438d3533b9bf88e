"""Path rules (spec core-concepts/secrets): every valid path is canonical; every rule break is invalid_path."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.domain.errors import InvalidPath
from scaivault.domain.paths import MAX_PATH_DEPTH, MAX_PATH_LENGTH, parse_path, parse_prefix

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20).filter(
    lambda s: s not in ("versions", "metadata")
)
valid_path = st.lists(segment, min_size=1, max_size=MAX_PATH_DEPTH).map("/".join).filter(
    lambda p: len(p) <= MAX_PATH_LENGTH
)


@given(valid_path)
def test_valid_paths_are_accepted_unchanged(path: str) -> None:
    assert parse_path(path) == path


@given(valid_path, st.sampled_from(["A", ".", " ", "é", "%", "\\", ":", "\x00", "*"]), st.data())
def test_a_character_outside_the_charset_is_rejected(path: str, bad: str, data: st.DataObject) -> None:
    position = data.draw(st.integers(min_value=0, max_value=len(path)))
    with pytest.raises(InvalidPath):
        parse_path(path[:position] + bad + path[position:])


@given(valid_path)
def test_surrounding_slashes_and_empty_segments_are_rejected(path: str) -> None:
    for variant in ("/" + path, path + "/", path.replace("/", "//", 1) if "/" in path else path + "//x"):
        with pytest.raises(InvalidPath):
            parse_path(variant)


def test_depth_and_length_limits() -> None:
    assert parse_path("/".join(["a"] * MAX_PATH_DEPTH))
    with pytest.raises(InvalidPath, match="deeper"):
        parse_path("/".join(["a"] * (MAX_PATH_DEPTH + 1)))
    assert parse_path("a" * MAX_PATH_LENGTH)
    with pytest.raises(InvalidPath, match="longer"):
        parse_path("a" * (MAX_PATH_LENGTH + 1))


@pytest.mark.parametrize("path", ["app/versions", "app/metadata", "versions", "a/b/metadata"])
def test_reserved_last_segments_are_rejected_with_the_reason(path: str) -> None:
    with pytest.raises(InvalidPath, match="reserved"):
        parse_path(path)


def test_reserved_words_are_fine_elsewhere() -> None:
    assert parse_path("versions/app") == "versions/app"
    assert parse_path("metadata/versions-x") == "metadata/versions-x"


@pytest.mark.parametrize("raw", [None, "", 3, ["a"]])
def test_non_strings_and_empty_are_rejected(raw: object) -> None:
    with pytest.raises(InvalidPath):
        parse_path(raw)


def test_prefixes() -> None:
    assert parse_prefix(None) == ""
    assert parse_prefix("environments/prod") == "environments/prod"
    assert parse_prefix("environments/") == "environments/"
    for bad in ("/x", "a//b", "A", "a.b"):
        with pytest.raises(InvalidPath):
            parse_prefix(bad)
