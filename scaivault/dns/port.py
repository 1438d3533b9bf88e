"""The port every DNS provider client implements, and the one error they raise.

Names are given and returned without the trailing dot, in lower case. ``set_txt`` adds a value to the name's TXT
record set and keeps the values already there (the apex and the wildcard of a certificate are validated with two
values at the same ``_acme-challenge`` name); ``remove_txt`` removes that value only, and does nothing when it is not
there (cleanup after a failed order must be safe to repeat).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from typing import Protocol


class DnsRecords(Protocol):
    async def list_zones(self) -> list[str]:
        """The zones the credentials can see (names without the trailing dot)."""
        ...

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        ...

    async def remove_txt(self, fqdn: str, value: str) -> None:
        ...

    async def aclose(self) -> None:
        ...


class DnsProviderError(Exception):
    """The provider could not do what was asked. ``str()`` is fit for the tenant who configured the provider: it
    names what failed and the provider's status or error code, never a credential, and never where a host name
    resolved (the operator's log gets that). ``status``: the provider's HTTP status, when it answered."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ZoneNotFound(DnsProviderError):
    """No zone the credentials can see contains the name."""


def fqdn_of(name: str) -> str:
    return name.strip().rstrip(".").lower()


def zone_containing(zones: list[str], fqdn: str) -> str:
    """The longest zone of ``zones`` that ``fqdn`` is in (a delegated child zone wins over its parent)."""
    name = fqdn_of(fqdn)
    matches = [z for z in (fqdn_of(z) for z in zones) if name == z or name.endswith("." + z)]
    if not matches:
        raise ZoneNotFound(f"no zone the credentials can see contains {name[:253]}")
    return max(matches, key=len)


def quoted(value: str) -> str:
    """A TXT value in zone-file presentation (what PowerDNS, Route 53 and Cloud DNS take): in double quotes, with
    quotes and backslashes escaped. ACME values are base64url, which needs no escaping."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquoted(text: str) -> str:
    """The value of a TXT record in presentation form (one or more quoted strings, joined), or ``text`` itself."""
    text = text.strip()
    if not text.startswith('"'):
        return text
    parts: list[str] = []
    current: list[str] = []
    inside = escaped = False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif char == "\\" and inside:
            escaped = True
        elif char == '"':
            if inside:
                parts.append("".join(current))
                current = []
            inside = not inside
        elif inside:
            current.append(char)
    return "".join(parts)


class WholeRecordSetRecords(ABC):
    """Providers whose API writes a name's whole TXT record set (Azure DNS, Google Cloud DNS, Route 53): adding or
    removing one value reads the set and writes it back changed, so a client's changes take turns (``_lock``, which
    the provider's ``__init__`` creates) and each ``_change`` retries when the set moved under it."""

    _lock: asyncio.Lock

    @abstractmethod
    async def _change(self, fqdn: str, value: str, ttl: int | None, adding: bool) -> None: ...

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        async with self._lock:
            await self._change(fqdn, value, ttl, adding=True)

    async def remove_txt(self, fqdn: str, value: str) -> None:
        async with self._lock:
            await self._change(fqdn, value, None, adding=False)
