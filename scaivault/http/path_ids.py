"""Ids a request's path names (``/v1/webhooks/{webhook_id}``, ...), as every router reads them."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from scaivault.domain.errors import ScaiVaultError
from scaivault.http.keys import ACCESS

SHOWN_LENGTH = 64  # of a value no id can be, in the error and the access record


def path_id(
    request: web.Request, name: str, not_found: Callable[..., ScaiVaultError], *, key: str | None = None,
    max_length: int | None = None,
) -> str:
    """The id in the path's ``{name}``, noted on the request's access record under ``key`` (default ``name``).

    A value no id can be answers exactly like a missing id (``not_found``, its detail under ``key``): one holding a
    NUL (PostgreSQL cannot store it, so no id does), or longer than ``max_length``."""
    key = key or name
    value = request.match_info[name]
    if "\x00" in value or (max_length is not None and len(value) > max_length):
        raise not_found(**{key: value.replace("\x00", "")[:SHOWN_LENGTH]})
    request[ACCESS].extra[key] = value if max_length is not None else value[:SHOWN_LENGTH]
    return value
