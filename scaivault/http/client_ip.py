"""The client's IP address, for policy ``ip_ranges`` conditions and access records.

By default the TCP peer is the client and ``X-Forwarded-For`` is ignored: anyone can write that header. Behind
reverse proxies, ``SCAIVAULT_TRUSTED_PROXIES`` lists their networks; only when the peer is one of them is the header
read, from the right (each proxy appends the address it saw): the first address that is not a trusted proxy is the
client. A malformed entry reached that way means the chain cannot be trusted: the address is unknown (None), which
no ``ip_ranges`` condition accepts.
"""

from __future__ import annotations

from aiohttp import web

from scaivault.domain.policies import IPAddress, IPNetwork, parse_ip


def _is_trusted(address: IPAddress, proxies: tuple[IPNetwork, ...]) -> bool:
    return any(address.version == network.version and address in network for network in proxies)


def forwarded_client(peer: str | None, forwarded_for: list[str], proxies: tuple[IPNetwork, ...]) -> str | None:
    peer_address = parse_ip(peer)
    if peer_address is None or not proxies or not _is_trusted(peer_address, proxies):
        return str(peer_address) if peer_address is not None else None
    hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
    client = peer_address
    for hop in reversed(hops):
        address = parse_ip(hop)
        if address is None:
            return None
        client = address
        if not _is_trusted(address, proxies):
            break
    return str(client)


def client_ip(request: web.Request, trusted_proxies: tuple[IPNetwork, ...]) -> str | None:
    return forwarded_client(request.remote, request.headers.getall("X-Forwarded-For", []), trusted_proxies)
