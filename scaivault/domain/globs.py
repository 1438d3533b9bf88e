"""Path globs (spec core-concepts/policies-and-permissions): ``*`` matches exactly one segment (or, inside a
segment, any run of characters), ``?`` one character, ``**`` any number of segments including zero, except that a
leading ``**/`` needs a parent segment (``**/ssl/*`` does not match ``ssl/cert``).

Matching is done segment by segment with dynamic programming, never with a backtracking regular expression: a
pattern such as ``a*a*a*a*b`` costs O(pattern x path), not exponential time (a caller-supplied pattern must not be
able to freeze the server). Within a segment, the literal runs between ``*`` are found greedily, leftmost first, by
``str.find`` (or a regex without quantifiers when they hold ``?``): greedy is exact for ``*``-separated runs, and it
keeps the matching near-linear at C speed. Subscriptions (anyone holding ``subscriptions:write``) match up to 100
globs of 512 characters against every event of their tenant in the fan-out: a character-by-character DP made that a
second of the server's CPU per event and subscription.
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


def _fits_at(run: str, text: str, start: int) -> bool:
    """Whether ``run`` (literal characters and ``?``) matches ``text`` at ``start`` (the caller checked the room)."""
    return all(c == "?" or c == t for c, t in zip(run, text[start : start + len(run)], strict=True))


@lru_cache(maxsize=4096)
def _run_regex(run: str) -> re.Pattern[str]:
    return re.compile("".join("." if c == "?" else re.escape(c) for c in run), re.DOTALL)


def segment_matches(pattern: str, text: str) -> bool:
    """``*`` any run, ``?`` one character. The runs between stars: the first at the start, the last at the end, the
    others each at its leftmost place after the one before (taking the leftmost never loses a match)."""
    if pattern == "*":
        return bool(text)
    if "*" not in pattern:
        return len(pattern) == len(text) and _fits_at(pattern, text, 0)
    first, *middle, last = pattern.split("*")
    end = len(text) - len(last)
    if len(first) > end or not _fits_at(first, text, 0) or not _fits_at(last, text, end):
        return False
    position = len(first)
    for run in middle:
        if not run:
            continue
        if "?" in run:
            found = _run_regex(run).search(text, position, end)
            if found is None:
                return False
            position = found.end()
        else:
            index = text.find(run, position, end)
            if index < 0:
                return False
            position = index + len(run)
    return True


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
