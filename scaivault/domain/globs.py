"""Path globs (spec core-concepts/policies-and-permissions): ``*`` matches exactly one segment (or, inside a
segment, any run of characters), ``?`` one character, ``**`` any number of segments including zero, except that a
leading ``**/`` needs a parent segment (``**/ssl/*`` does not match ``ssl/cert``).

Matching is done segment by segment with dynamic programming, never with a backtracking regular expression: a
pattern such as ``a*a*a*a*b`` costs O(pattern x path), not exponential time (a caller-supplied pattern must not be
able to freeze the server).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache

from scaivault.domain.errors import ScaiVaultError

_GLOB_CHARS = re.compile(r"[a-z0-9_/*?-]+")


class InvalidGlob(ScaiVaultError):
    code = "invalid_glob"
    default_message = "The path pattern is not a valid glob"


@lru_cache(maxsize=4096)
def parse_glob(pattern: str) -> tuple[str, ...]:
    if not pattern or len(pattern) > 512 or not _GLOB_CHARS.fullmatch(pattern) or "***" in pattern:
        raise InvalidGlob(pattern=pattern[:512])
    if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
        raise InvalidGlob(pattern=pattern)
    segments = tuple(pattern.split("/"))
    if any("**" in segment and segment != "**" for segment in segments):
        raise InvalidGlob("'**' must be a whole segment", pattern=pattern)
    return segments


def segment_matches(pattern: str, text: str) -> bool:
    """``*`` any run, ``?`` one character; linear-space DP over (pattern, text)."""
    if pattern == "*":
        return bool(text)
    reachable = [True] + [False] * len(text)  # reachable[j]: pattern so far matches text[:j]
    for symbol in pattern:
        if symbol == "*":
            for j in range(1, len(text) + 1):
                reachable[j] = reachable[j] or reachable[j - 1]
        else:
            for j in range(len(text), 0, -1):
                reachable[j] = reachable[j - 1] and (symbol == "?" or symbol == text[j - 1])
            reachable[0] = False
    return reachable[len(text)]


def glob_matches(pattern: str, path: str) -> bool:
    segments = parse_glob(pattern)
    parts = path.split("/")
    # reachable[j]: the pattern segments so far match parts[:j]
    reachable = [True] + [False] * len(parts)
    for index, segment in enumerate(segments):
        if segment == "**":
            if index == 0 and len(segments) > 1:  # a leading **/ needs at least one parent segment
                reachable = [False] + [any(reachable[:j]) for j in range(1, len(parts) + 1)]
            else:
                running = False
                for j in range(len(parts) + 1):
                    running = running or reachable[j]
                    reachable[j] = running
        else:
            reachable = [False] + [reachable[j - 1] and segment_matches(segment, parts[j - 1])
                                   for j in range(1, len(parts) + 1)]
    return reachable[len(parts)]


def glob_prefix(pattern: str) -> str:
    """The literal part before the first wildcard: every match starts with it. A ``**`` segment may match zero
    segments, so the '/' before it is not part of every match (``app/**`` matches ``app``)."""
    literal = re.split(r"[*?]", pattern, maxsplit=1)[0]
    if literal.endswith("/") and pattern[len(literal):].startswith("**"):
        literal = literal[:-1]
    return literal


def expand_pattern(pattern: str) -> tuple[str, Callable[[str], bool]]:
    parse_glob(pattern)
    return glob_prefix(pattern), lambda path: glob_matches(pattern, path)
