"""The egress guard: outbound connections that an API caller can aim (export endpoints, later webhooks, ACME
validation, federation backends) may reach only publicly routable addresses.

A host is resolved first and every address it resolves to is checked: loopback, link-local, private (RFC 1918,
unique-local), site-local, carrier-grade NAT, multicast, unspecified, other special-purpose ranges and the cloud
metadata addresses are refused, unless the operator allows them in static configuration (``SCAIVAULT_EGRESS_ALLOW``:
comma-separated CIDRs).

IPv6 addresses that carry an IPv4 address come in two kinds:

- embeddings that never appear on the wire (IPv4-compatible ``::a.b.c.d``, IPv4-mapped ``::ffff:a.b.c.d``,
  IPv4-translated ``::ffff:0:a.b.c.d``) are refused whatever they embed, unless an IPv6 network in the allow list
  contains them (an IPv4 entry does not open its mapped form);
- routing embeddings (NAT64 ``64:ff9b::/96`` and the local-use ``64:ff9b:1::/48`` with the IPv4 address in the last
  32 bits, 6to4, Teredo's server and client, ISATAP interface identifiers) are checked twice: the embedded IPv4
  address against the IPv4 rules and allow entries, the IPv6 address against the IPv6 ones. So an IPv6-only host
  behind DNS64 reaches public hosts through ``64:ff9b::/96``, never ``64:ff9b::a9fe:a9fe`` (the metadata address).

Connect to the address that was checked: ``pin_url`` returns it, and ``scaivault.egress_botocore`` builds clients
that connect only there (no second DNS lookup for a rebinding resolver to answer differently) and follow no
redirect.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from yarl import URL

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
_GLOBAL_UNICAST = ipaddress.IPv6Network("2000::/3")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_IPV4_TRANSLATED = ipaddress.IPv6Network("::ffff:0:0:0/96")
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_PREFIXES = (_NAT64_WELL_KNOWN, ipaddress.IPv6Network("64:ff9b:1::/48"))
# Special-purpose blocks that are not globally reachable, named here because Python's ``is_global`` tables differ
# between patch releases (the guard's answers for these must not depend on the interpreter).
_NOT_GLOBAL_IPV6 = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215)
        "2001::/32",  # Teredo
        "2001:2::/48",  # benchmarking
        "2001:10::/28",  # ORCHID (deprecated)
        "2001:db8::/32",  # documentation
        "2002::/16",  # 6to4
        "3fff::/20",  # documentation
    )
)
_ISATAP_MARKER = 0x00005EFE  # the interface identifier's first 32 bits, with the u and g bits masked off
_ISATAP_MASK = 0xFCFFFFFF
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
RESOLVE_TIMEOUT_SECONDS = 5.0

_REFUSED_PUBLICLY = (
    "Refused to connect: the destination is not a publicly routable address; an operator may allow it with "
    "SCAIVAULT_EGRESS_ALLOW"
)
_UNRESOLVED_PUBLICLY = "Refused to connect: the destination host could not be resolved"


class EgressRefused(Exception):
    """The destination may not be reached.

    ``str()`` may name the host and address: fit for the operator's logs and for a caller who aimed the destination
    itself. ``public_message`` names neither, for a caller who may not know the destination (one read from a secret);
    ``reason`` is the kind of address refused (``"a loopback address"``), when an address was.
    """

    def __init__(
        self,
        message: str,
        *,
        host: str | None = None,
        address: str | None = None,
        reason: str | None = None,
        public_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.host = host
        self.address = address
        self.reason = reason
        self.public_message = public_message or message


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


def _embeds_ipv4_off_the_wire(address: ipaddress.IPv6Address) -> bool:
    """An IPv4 address written in an IPv6 form that no network routes (``::`` and ``::1`` are not embeddings)."""
    return (
        address.ipv4_mapped is not None
        or address in _IPV4_TRANSLATED
        or (address in _IPV4_COMPATIBLE and int(address) > 1)
    )


def _routed_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses a transition mechanism would carry traffic for ``address`` to."""
    if address.sixtofour is not None:
        return (address.sixtofour,)
    if address.teredo is not None:
        return address.teredo  # the Teredo server and the client
    last_32_bits = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return (last_32_bits,)
    if (int(address) >> 32) & _ISATAP_MASK == _ISATAP_MARKER:
        return (last_32_bits,)
    return ()


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
    if isinstance(address, ipaddress.IPv6Address):
        if address.is_site_local:
            return "a site-local address"
        if any(address in network for network in _NOT_GLOBAL_IPV6):
            return "not a publicly routable address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "not a publicly routable address"
    outside_unicast = isinstance(address, ipaddress.IPv6Address) and address not in _GLOBAL_UNICAST
    if outside_unicast and address not in _NAT64_WELL_KNOWN:
        return "not a publicly routable address"
    return None


def _listed(address: IPAddress, allow: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in allow)


def _refusal(address: IPAddress, allow: tuple[IPNetwork, ...]) -> str | None:
    if isinstance(address, ipaddress.IPv6Address):
        if _embeds_ipv4_off_the_wire(address):
            return None if _listed(address, allow) else "an IPv4-embedding address"
        for embedded in _routed_ipv4(address):
            reason = _reason(embedded)
            if reason is not None and not _listed(embedded, allow):
                return f"an address embedding {embedded}, {reason}"
    reason = _reason(address)
    if reason is not None and not _listed(address, allow):
        return reason
    return None


def refusal_reason(address: IPAddress | str) -> str | None:
    """Why ``address`` may not be reached (ignoring any allow list), or None when it is publicly routable."""
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    return _refusal(address, ())


def check_address(address: IPAddress | str, allow: Iterable[IPNetwork] = (), *, host: str | None = None) -> None:
    """Raise ``EgressRefused`` unless ``address`` is publicly routable or allowed (see the module's docstring)."""
    address = ipaddress.ip_address(address) if isinstance(address, str) else address
    reason = _refusal(address, tuple(allow))
    if reason is None:
        return
    named = f"{host} resolves to {address}" if host and host != str(address) else f"{address}"
    raise EgressRefused(
        f"Refused to connect: {named}, {reason}; an operator may allow it with SCAIVAULT_EGRESS_ALLOW",
        host=host,
        address=str(address),
        reason=reason,
        public_message=_REFUSED_PUBLICLY,
    )


async def resolve_and_check(host: str, port: int, allow: Iterable[IPNetwork] = ()) -> list[str]:
    """Resolve ``host`` and check every address; return them, the resolver's preferred first. Refuses a host that
    does not resolve, and refuses the whole host when any one of its addresses is refused."""
    allow = tuple(allow)
    host = host.strip("[]")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        check_address(literal, allow, host=host)
        return [str(literal)]
    unresolved = EgressRefused(
        f"Refused to connect: the host {host[:253]} could not be resolved",
        host=host,
        public_message=_UNRESOLVED_PUBLICLY,
    )
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), timeout=RESOLVE_TIMEOUT_SECONDS
        )
    except (TimeoutError, OSError, UnicodeError):
        raise unresolved from None
    addresses = list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))
    if not addresses:
        raise unresolved
    for address in addresses:
        check_address(address, allow, host=host)
    return addresses


def client_host(url: str) -> str:
    """The host of ``url`` as aiohttp connects to it: yarl's canonical form (IDNA folds full-width digits and
    ideographic full stops, so ``https://１２７.０.０.１/`` names 127.0.0.1), without brackets. An address check must
    look at this form, not at ``urlsplit``'s. Raises ``ValueError`` for a URL yarl cannot parse."""
    try:
        return (URL(url).raw_host or "").strip("[]")
    except UnicodeError as exc:
        raise ValueError(str(exc)) from None


def normalize_host(host: str) -> str:
    """A URL's host as the guard compares it: no IPv6 brackets, no trailing dot, lower case."""
    return host.strip("[]").rstrip(".").lower()


@dataclass(frozen=True)
class PinnedTarget:
    """A checked destination: connect to ``address`` (or another of ``addresses``, all checked), speaking to ``host``
    (the TLS server name and the ``Host`` header) on ``port``."""

    scheme: str
    host: str
    port: int
    address: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        """The ``Host`` header a client sends when it connects by name (what SigV4 signs)."""
        bracketed = f"[{self.host}]" if ":" in self.host else self.host
        return bracketed if _DEFAULT_PORTS.get(self.scheme) == self.port else f"{bracketed}:{self.port}"

    def is_origin_of(self, url: str) -> bool:
        """Whether ``url`` has this target's scheme, host and port."""
        try:
            parts = urlsplit(url)
            port = parts.port or _DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        return (
            parts.scheme == self.scheme
            and normalize_host(parts.hostname or "") == self.host
            and port == self.port
        )

    def refuse_other(self, url_or_host: str) -> EgressRefused:
        """The refusal for a request aimed elsewhere than this target (a redirect, another host or port)."""
        return EgressRefused(
            f"Refused to connect: {url_or_host[:300]} is not the checked destination {self.host_header}",
            public_message="Refused to connect: only the checked destination may be reached",
        )


async def pin_url(
    url: str, allow: Iterable[IPNetwork] = (), *, schemes: tuple[str, ...] = ("https", "http")
) -> PinnedTarget:
    """Check the host of a URL (see ``resolve_and_check``) and return what to connect to. A URL of another scheme,
    with credentials, without a host, or without a port where its scheme has no default is refused."""
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
    port = port or _DEFAULT_PORTS.get(parts.scheme)
    if port is None:
        raise EgressRefused("Refused to connect: the URL has no port")
    host = normalize_host(parts.hostname)
    addresses = await resolve_and_check(host, port, allow)
    return PinnedTarget(parts.scheme, host, port, addresses[0], tuple(addresses))

