"""The egress guard: outbound connections that an API caller can aim (export endpoints, later webhooks, ACME
validation, federation backends) may reach only publicly routable addresses.

A host is resolved first and every address it resolves to is checked: loopback, link-local, private (RFC 1918,
unique-local), carrier-grade NAT, multicast, unspecified, other non-global ranges and the cloud metadata addresses are
refused, unless the operator allows them in static configuration (``SCAIVAULT_EGRESS_ALLOW``: comma-separated CIDRs).
IPv4 addresses embedded in IPv6 ones (IPv4-mapped, 6to4, Teredo, NAT64) are checked as the IPv4 address too, so
``::ffff:127.0.0.1`` is loopback.

The caller should connect to one of the addresses returned, or accept that a resolver answering differently a moment
later (DNS rebinding) is a residual risk.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance-metadata and platform endpoints of the big clouds. Most are link-local or private anyway; Azure's wire
# server and Oracle's are in public-looking ranges, so they are named here.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure wire server
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
RESOLVE_TIMEOUT_SECONDS = 5.0


class EgressRefused(Exception):
    """The destination may not be reached. ``str()`` is safe to show to the caller who aimed it."""

    def __init__(self, message: str, *, host: str | None = None, address: str | None = None) -> None:
        super().__init__(message)
        self.host = host
        self.address = address


def parse_allow_list(value: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """``"10.0.0.0/8, 127.0.0.1"`` -> networks. Raises ``ValueError`` naming the first entry that is not a CIDR."""
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    networks = []
    for item in (entry.strip() for entry in items):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise ValueError(f"{item[:64]!r} is not an IP network in CIDR form (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]  # the client's address
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _reason(address: IPAddress) -> str | None:
    if address in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a publicly routable address"
    return None


def refusal_reason(address: IPAddress | str) -> str | None:
    """Why ``address`` may not be reached (ignoring any allow list), or None when it is publicly routable."""
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        reason = _reason(embedded)
        if reason is not None:
            return reason
    return _reason(address)


def _allowed(address: IPAddress, allow: Iterable[IPNetwork]) -> bool:
    candidates = [address]
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        candidates.append(embedded)
    return any(
        candidate in network for candidate in candidates for network in allow if candidate.version == network.version
    )


def check_address(address: IPAddress | str, allow: Iterable[IPNetwork] = (), *, host: str | None = None) -> None:
    """Raise ``EgressRefused`` unless ``address`` is publicly routable or inside an allowed network."""
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    allow = tuple(allow)
    reason = refusal_reason(address)
    if reason is None or _allowed(address, allow):
        return
    named = f"{host} resolves to {address}" if host and host != str(address) else f"{address}"
    raise EgressRefused(
        f"Refused to connect: {named}, {reason}; an operator may allow it with SCAIVAULT_EGRESS_ALLOW",
        host=host,
        address=str(address),
    )


async def resolve_and_check(host: str, port: int, allow: Iterable[IPNetwork] = ()) -> list[str]:
    """Resolve ``host`` and check every address; return them (connect to one of these). Refuses a host that does
    not resolve, and refuses the whole host when any one of its addresses is refused."""
    allow = tuple(allow)
    host = host.strip("[]")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow, host=host)
        return [str(literal)]
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT_SECONDS
        )
    except (OSError, asyncio.TimeoutError, UnicodeError):
        raise EgressRefused(f"Refused to connect: the host {host[:253]} could not be resolved", host=host) from None
    addresses = list(dict.fromkeys(info[4][0].split("%", 1)[0] for info in infos))
    if not addresses:
        raise EgressRefused(f"Refused to connect: the host {host[:253]} could not be resolved", host=host)
    for address in addresses:
        check_address(address, allow, host=host)
    return addresses


async def check_url(
    url: str, allow: Iterable[IPNetwork] = (), *, schemes: tuple[str, ...] = ("https", "http")
) -> list[str]:
    """Check the host of an http(s) URL (see ``resolve_and_check``); a URL of another scheme, with credentials or
    without a host is refused."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise EgressRefused("Refused to connect: the URL is malformed") from None
    if parts.scheme not in schemes:
        raise EgressRefused(f"Refused to connect: the URL scheme must be one of {', '.join(schemes)}")
    if parts.username is not None or parts.password is not None:
        raise EgressRefused("Refused to connect: the URL may not contain credentials")
    if not parts.hostname:
        raise EgressRefused("Refused to connect: the URL has no host")
    default_port = 443 if parts.scheme == "https" else 80
    return await resolve_and_check(parts.hostname, port or default_port, allow)
