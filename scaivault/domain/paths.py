"""Secret paths: one canonical form, checked once at the edge (spec core-concepts/secrets, "Paths").

A valid path is already canonical: the rules admit no variant spellings (no upper case, no dots, no empty or
surrounding slashes), so validating is canonicalising and every later comparison is a plain string comparison.
"""

from __future__ import annotations

import re

from scaivault.domain.errors import InvalidPath

MAX_PATH_LENGTH = 512
MAX_PATH_DEPTH = 10
# The last segment may not be one of these: they address sub-resources of a secret in the URL space.
RESERVED_LAST_SEGMENTS = frozenset({"versions", "metadata"})

_SEGMENT = re.compile(r"[a-z0-9_-]+")
_PREFIX = re.compile(r"[a-z0-9_/-]*")


def parse_path(raw: object) -> str:
    """Return ``raw`` if it is a valid secret path, else raise ``InvalidPath`` saying which rule it breaks."""
    if not isinstance(raw, str) or not raw:
        raise InvalidPath("The path is empty", path="")
    shown = raw[:MAX_PATH_LENGTH]
    if len(raw) > MAX_PATH_LENGTH:
        raise InvalidPath(f"The path is longer than {MAX_PATH_LENGTH} characters", path=shown)
    if raw.startswith("/") or raw.endswith("/"):
        raise InvalidPath("The path may not start or end with '/'", path=shown)
    segments = raw.split("/")
    if len(segments) > MAX_PATH_DEPTH:
        raise InvalidPath(f"The path is deeper than {MAX_PATH_DEPTH} levels", path=shown)
    for segment in segments:
        if not segment:
            raise InvalidPath("The path has an empty segment ('//')", path=shown)
        if not _SEGMENT.fullmatch(segment):
            raise InvalidPath("Paths may contain only a-z, 0-9, '-', '_' and '/'", path=shown)
    if segments[-1] in RESERVED_LAST_SEGMENTS:
        raise InvalidPath(
            f"'{segments[-1]}' is reserved as the last segment: it addresses a secret's {segments[-1]}", path=shown
        )
    return raw


def parse_prefix(raw: object) -> str:
    """A listing prefix: any leading part of a path (it may end inside a segment or with '/')."""
    if raw is None or raw == "":
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_PATH_LENGTH or not _PREFIX.fullmatch(raw):
        raise InvalidPath("The prefix may contain only a-z, 0-9, '-', '_' and '/'", prefix=str(raw)[:MAX_PATH_LENGTH])
    if raw.startswith("/") or "//" in raw:
        raise InvalidPath("The prefix may not start with '/' or contain '//'", prefix=raw)
    return raw
