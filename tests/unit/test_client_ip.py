"""Which address is the client's (scaivault/http/client_ip.py)."""

from __future__ import annotations

import pytest

from scaivault.egress import parse_allow_list
from scaivault.http.client_ip import forwarded_client

PROXIES = parse_allow_list("10.0.0.0/24, 2001:db8::/64")


@pytest.mark.parametrize(
    ("peer", "forwarded", "proxies", "expected"),
    [
        ("203.0.113.9", ["198.51.100.1"], PROXIES, "203.0.113.9"),  # an untrusted peer's header is ignored
        ("10.0.0.5", ["10.20.0.7"], (), "10.0.0.5"),  # no trusted proxies configured: never read
        ("10.0.0.5", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        ("10.0.0.5", ["198.51.100.1, 10.0.0.9"], PROXIES, "198.51.100.1"),  # through two proxies
        ("10.0.0.5", ["1.1.1.1, 198.51.100.1"], PROXIES, "198.51.100.1"),  # a client-written entry is skipped
        ("10.0.0.5", ["1.1.1.1", "198.51.100.1"], PROXIES, "198.51.100.1"),  # several headers: one list
        ("10.0.0.5", [], PROXIES, "10.0.0.5"),  # the proxy itself
        ("10.0.0.5", ["10.0.0.7"], PROXIES, "10.0.0.7"),  # every hop trusted: the leftmost
        ("10.0.0.5", ["198.51.100.1, junk"], PROXIES, None),  # a broken chain: unknown, which no range accepts
        ("::ffff:10.0.0.5", ["198.51.100.1"], PROXIES, "198.51.100.1"),
        ("2001:db8::1", ["2001:db8:1::5"], PROXIES, "2001:db8:1::5"),
        (None, ["198.51.100.1"], PROXIES, None),
    ],
)
def test_forwarded_client(peer: str | None, forwarded: list[str], proxies: tuple, expected: str | None) -> None:  # type: ignore[type-arg]
    assert forwarded_client(peer, forwarded, proxies) == expected
