"""The egress guard: non-public destinations are refused after resolution, unless allowed by static configuration."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scaivault import egress
from scaivault.egress import EgressRefused, check_address, check_url, parse_allow_list, refusal_reason, resolve_and_check


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("2002:7f00:1::1", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 around 169.254.169.254
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("168.63.129.16", "metadata"),  # Azure wire server: public-looking
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("fd12:3456::1", "private"),  # unique-local
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "publicly routable"),  # carrier-grade NAT
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert reason in (refusal_reason(address) or "")
    with pytest.raises(EgressRefused) as refused:
        check_address(address)
    assert "SCAIVAULT_EGRESS_ALLOW" in str(refused.value)


@pytest.mark.parametrize("address", ["8.8.8.8", "52.216.0.1", "2606:4700::1111"])
def test_public_addresses_pass(address: str) -> None:
    assert refusal_reason(address) is None
    check_address(address)


def test_the_allow_list_opens_exactly_its_networks() -> None:
    allow = parse_allow_list("127.0.0.0/8, 10.20.0.0/16")
    check_address("127.0.0.1", allow)
    check_address("::ffff:127.0.0.1", allow)  # the mapped form of an allowed address
    check_address("10.20.3.4", allow)
    with pytest.raises(EgressRefused):
        check_address("10.21.0.1", allow)
    with pytest.raises(EgressRefused):
        check_address("169.254.169.254", allow)
    with pytest.raises(EgressRefused):
        check_address("::1", allow)  # IPv6 loopback is not in an IPv4 network


def test_parse_allow_list() -> None:
    assert parse_allow_list("") == () and parse_allow_list(None) == ()
    assert [str(n) for n in parse_allow_list(" 127.0.0.1/8 ,,::1/128")] == ["127.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError, match="not an IP network"):
        parse_allow_list("10.0.0.0/8,localhost")


async def test_hosts_are_checked_after_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    async def fake_getaddrinfo(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        answers = {"public.example": ["93.184.215.14"], "sneaky.example": ["93.184.215.14", "10.0.0.5"]}
        if host not in answers:
            raise socket.gaierror("no such host")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in answers[host]]

    loop = asyncio.get_running_loop()
    monkeypatch.setattr(loop, "getaddrinfo", fake_getaddrinfo)
    assert await resolve_and_check("public.example", 443) == ["93.184.215.14"]
    with pytest.raises(EgressRefused, match="sneaky.example resolves to 10.0.0.5, a private address"):
        await resolve_and_check("sneaky.example", 443)  # one bad address refuses the host
    with pytest.raises(EgressRefused, match="could not be resolved"):
        await resolve_and_check("nowhere.example", 443)


async def test_localhost_resolves_to_loopback_and_is_refused() -> None:
    with pytest.raises(EgressRefused, match="loopback"):
        await check_url("http://localhost:9000/")
    assert await check_url("http://localhost:9000/", parse_allow_list("127.0.0.0/8,::1/128")) != []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://8.8.8.8/", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("http://user:hunter2@8.8.8.8/", "credentials"),
        ("http:///nohost", "no host"),
        ("http://[::1]:9000/", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://8.8.8.8:99999/", "malformed"),
    ],
)
async def test_urls_are_refused_without_echoing_credentials(url: str, message: str) -> None:
    with pytest.raises(EgressRefused, match=message) as refused:
        await check_url(url)
    assert "hunter2" not in str(refused.value)


async def test_ip_literals_are_not_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(*_: object, **__: object) -> None:
        raise AssertionError("an IP literal needs no DNS")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    assert await check_url("https://8.8.8.8/") == ["8.8.8.8"]
    assert egress.RESOLVE_TIMEOUT_SECONDS > 0


def test_the_allow_list_is_static_configuration() -> None:
    from scaivault.config import ConfigurationError, Settings

    assert Settings.from_env({}).egress_allow == ""
    assert parse_allow_list(Settings.from_env({"SCAIVAULT_EGRESS_ALLOW": "127.0.0.0/8"}).egress_allow)
    with pytest.raises(ConfigurationError, match="SCAIVAULT_EGRESS_ALLOW"):
        Settings.from_env({"SCAIVAULT_EGRESS_ALLOW": "127.0.0.0/8,localhost"})
