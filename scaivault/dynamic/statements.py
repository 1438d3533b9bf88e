"""Rendering a role's statements for the database backends.

Substitution is textual, because DDL (``CREATE ROLE``, ``CREATE USER``) takes no bind parameters on any of the
targets. What keeps it safe is the alphabet of the substituted values: ``check_substitutable`` refuses anything that
could close a quoted identifier or literal, even though ``scaivault/domain/dynamic.py`` already generates values in
those sets (a second check here means a bug there cannot become an injection).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from scaivault.dynamic.port import TargetRefused

SubstitutableKind = Literal["username", "password", "expiration"]

# Rendering revoke and renew statements, which never have a password to put in, still checks every value.
UNUSED_PASSWORD = "unused"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_ALPHABETS: dict[str, re.Pattern[str]] = {
    "username": re.compile(r"[A-Za-z0-9_]+"),
    "password": re.compile(r"[A-Za-z0-9_]+"),
    "expiration": re.compile(r"[0-9 :+-]+"),
}


def check_substitutable(value: str, kind: SubstitutableKind) -> None:
    """Refuse a value that could break out of the quotes it is substituted into. The message never repeats the
    value: a password is one of them."""
    alphabet = _ALPHABETS.get(kind)
    if alphabet is None:
        raise ValueError(f"unknown kind of substituted value: {kind!r}")
    if not alphabet.fullmatch(value):
        allowed = "[0-9 :+-]" if kind == "expiration" else "[A-Za-z0-9_]"
        raise ValueError(f"the {kind} may contain only {allowed} characters and may not be empty")


def format_expiration(expires_at: datetime) -> str:
    """The form every target's ``VALID UNTIL`` / comparison accepts: UTC, second precision, explicit offset."""
    if expires_at.tzinfo is None:
        raise ValueError("the expiration must be timezone-aware")
    return expires_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S+00")


def render(statement: str, *, username: str, password: str, expiration: str) -> str:
    """Substitute ``{{name}}``/``{{username}}`` (the same value), ``{{password}}`` and ``{{expiration}}``. An unknown
    placeholder raises ``ValueError`` naming it, rather than reaching the target as literal text."""
    check_substitutable(username, "username")
    check_substitutable(password, "password")
    check_substitutable(expiration, "expiration")
    values = {"name": username, "username": username, "password": password, "expiration": expiration}

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1).strip()
        if key not in values:
            raise ValueError(f"unknown placeholder {{{{{match.group(1)[:40]}}}}} in a statement")
        return values[key]

    return _PLACEHOLDER.sub(substitute, statement)


def split_mysql(text: str) -> list[str]:
    """Split on ``;`` outside quotes and comments: MariaDB/MySQL run one statement per query unless the client
    enables multi-statements, which we keep off (it would let one failing statement hide behind another)."""
    pieces: list[str] = []
    current: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "'\"`":
            end = _closing_quote(text, i)
            current.append(text[i:end])
            i = end
            continue
        if char == "#" or (text.startswith("--", i) and (i + 2 == n or text[i + 2].isspace())):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if text.startswith("/*", i):
            close = text.find("*/", i + 2)
            i = n if close < 0 else close + 2
            current.append(" ")
            continue
        if char == ";":
            pieces.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def _closing_quote(text: str, start: int) -> int:
    """The index just past the quoted run opening at ``start`` (backslash escapes and doubled quotes inside)."""
    quote = text[start]
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == "\\" and quote != "`":
            i += 2
            continue
        if char == quote:
            if i + 1 < len(text) and text[i + 1] == quote:
                i += 2
                continue
            return i + 1
        i += 1
    return len(text)


def scrub(text: str, *secrets: str, limit: int = 500) -> str:
    """A target's error text made safe to show: a driver or server may echo the statement, and with it a password.
    Also URL-quoted forms, since a driver may echo a connection URL."""
    for secret in secrets:
        if not secret:
            continue
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text[:limit]


def render_statements(statements: Sequence[str], kind: str, values: Mapping[str, str]) -> list[str]:
    """All of a role's statements of one kind rendered before any runs: a bad placeholder in the third must not
    leave the first two applied. ``TargetRefused`` names the position."""
    rendered = []
    for index, statement in enumerate(statements, start=1):
        try:
            rendered.append(
                render(
                    statement,
                    username=values["username"],
                    password=values["password"],
                    expiration=values["expiration"],
                )
            )
        except ValueError as exc:
            raise TargetRefused(f"statement {index} of {kind} cannot be rendered: {exc}") from None
    return rendered
