"""Path globs (spec core-concepts/policies-and-permissions): ``*`` matches exactly one segment, ``?`` one
character, ``**`` any number of segments including zero, except that a leading ``**/`` needs a parent segment
(``**/ssl/*`` does not match ``ssl/cert``).

Used to expand batch-metadata patterns; the policy engine works on the same canonical path form.
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
def compile_glob(pattern: str) -> re.Pattern[str]:
    if not pattern or len(pattern) > 512 or not _GLOB_CHARS.fullmatch(pattern) or "***" in pattern:
        raise InvalidGlob(pattern=pattern[:512])
    if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
        raise InvalidGlob(pattern=pattern)
    parts: list[str] = []
    segments = pattern.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]+/)+" if index == 0 else "(?:[^/]+/)*")
            continue
        if "**" in segment:
            raise InvalidGlob("'**' must be a whole segment", pattern=pattern)
        literal = "[^/]+" if segment == "*" else "[^/]*".join(
            "[^/]".join(re.escape(piece) for piece in chunk.split("?")) for chunk in segment.split("*")
        )
        parts.append(literal + ("" if last else "/"))
    return re.compile("".join(parts))


def glob_prefix(pattern: str) -> str:
    """The literal part before the first wildcard: every match starts with it."""
    return re.split(r"[*?]", pattern, maxsplit=1)[0]


def expand_pattern(pattern: str) -> tuple[str, Callable[[str], bool]]:
    regex = compile_glob(pattern)
    return glob_prefix(pattern), lambda path: regex.fullmatch(path) is not None

