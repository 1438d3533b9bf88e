"""The egress guard: non-public destinations are refused after resolution, unless allowed by static configuration."""

from __future__ import annotations

import asyncio
import socket

import pytest

from scaivault import egress
from scaivault.egress import (
    EgressRefused,
    PinnedTarget,
    check_address,
    parse_allow_list,
    pin_url,
    refusal_reason,
    resolve_and_check,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
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
    check_address("10.20.3.4", allow)
    with pytest.raises(EgressRefused, match="IPv4-embedding"):
        check_address("::ffff:127.0.0.1", allow)  # an IPv4 entry does not open the mapped form
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
        await pin_url("http://localhost:9000/")
    assert list((await pin_url("http://localhost:9000/", parse_allow_list("127.0.0.0/8,::1/128"))).addresses) != []


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
        await pin_url(url)
    assert "hunter2" not in str(refused.value)


async def test_ip_literals_are_not_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_dns(*_: object, **__: object) -> None:
        raise AssertionError("an IP literal needs no DNS")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_dns)
    assert list((await pin_url("https://8.8.8.8/")).addresses) == ["8.8.8.8"]


async def test_a_resolver_that_never_answers_is_a_refusal_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    async def silent(*_: object, **__: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", silent)
    monkeypatch.setattr(egress, "RESOLVE_TIMEOUT_SECONDS", 0.05)
    with pytest.raises(EgressRefused, match="could not be resolved"):
        await asyncio.wait_for(pin_url("https://exports.example.com/"), timeout=5)


def test_the_allow_list_is_static_configuration() -> None:
    from scaivault.config import ConfigurationError, Settings

    assert Settings.from_env({}).egress_allow == ""
    assert parse_allow_list(Settings.from_env({"SCAIVAULT_EGRESS_ALLOW": "127.0.0.0/8"}).egress_allow)
    with pytest.raises(ConfigurationError, match="SCAIVAULT_EGRESS_ALLOW"):
        Settings.from_env({"SCAIVAULT_EGRESS_ALLOW": "127.0.0.0/8,localhost"})


# ---- IPv4 embedded in IPv6 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::127.0.0.1",
        "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
        "::8.8.8.8",  # even a public one
        "::2",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:8.8.8.8",
        "::ffff:0:7f00:1",  # IPv4-translated (SIIT)
        "::ffff:0:8.8.8.8",
    ],
)
def test_embeddings_that_never_appear_on_the_wire_are_refused_whatever_they_embed(address: str) -> None:
    assert refusal_reason(address) == "an IPv4-embedding address"
    with pytest.raises(EgressRefused, match="IPv4-embedding"):
        check_address(address, parse_allow_list("0.0.0.0/0"))  # no IPv4 entry opens them


@pytest.mark.parametrize(
    ("address", "allowed_by"),
    [("::ffff:127.0.0.1", "::ffff:0:0/96"), ("::7f00:1", "::7f00:0/120"), ("::ffff:0:7f00:1", "::ffff:0:0:0/96")],
)
def test_an_ipv6_allow_entry_opens_the_embedding_it_names(address: str, allowed_by: str) -> None:
    check_address(address, parse_allow_list(allowed_by))
    with pytest.raises(EgressRefused):
        check_address(address, parse_allow_list("::ffff:0:0/128"))


@pytest.mark.parametrize(("address", "reason"), [("::", "unspecified"), ("::1", "loopback")])
def test_the_unspecified_and_loopback_addresses_are_not_embeddings(address: str, reason: str) -> None:
    assert reason in (refusal_reason(address) or "")


@pytest.mark.parametrize(
    ("address", "embedded", "reason"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1", "loopback"),  # NAT64, well-known prefix
        ("64:ff9b::a9fe:a9fe", "169.254.169.254", "metadata"),
        ("64:ff9b::10.1.2.3", "10.1.2.3", "private"),
        ("64:ff9b::100.64.0.1", "100.64.0.1", "publicly routable"),
        ("64:ff9b:1::7f00:1", "127.0.0.1", "loopback"),  # NAT64, local-use prefix
        ("64:ff9b:1:abcd::a9fe:a9fe", "169.254.169.254", "metadata"),
        ("2002:a9fe:a9fe::1", "169.254.169.254", "metadata"),  # 6to4
        ("2002:0a00:0001::1", "10.0.0.1", "private"),
        ("2001:0:808:808::80ff:fffe", "127.0.0.1", "loopback"),  # Teredo: the client (obfuscated)
        ("2001:0:7f00:1::f7f7:f7f7", "127.0.0.1", "loopback"),  # Teredo: the server
        ("2001:4860:1::5efe:7f00:1", "127.0.0.1", "loopback"),  # ISATAP, private IPv4 form
        ("2001:4860:1::200:5efe:a9fe:a9fe", "169.254.169.254", "metadata"),  # ISATAP, u bit set
        ("2001:4860:1::300:5efe:a00:1", "10.0.0.1", "private"),  # ISATAP, u and g bits set
    ],
)
def test_routing_embeddings_are_checked_as_the_ipv4_address_they_reach(
    address: str, embedded: str, reason: str
) -> None:
    refusal = refusal_reason(address) or ""
    assert embedded in refusal and reason in refusal
    # opening the IPv6 side (local-use NAT64, 6to4 and Teredo are not public themselves) leaves the IPv4 check
    with pytest.raises(EgressRefused, match=embedded):
        check_address(address, parse_allow_list("64:ff9b:1::/48,2002::/16,2001::/32"))


@pytest.mark.parametrize(
    ("address", "ipv6_allow", "ipv4_allow"),
    [
        ("64:ff9b::7f00:1", "", "127.0.0.0/8"),  # the well-known NAT64 prefix is public itself
        ("64:ff9b:1::a00:1", "64:ff9b:1::/48", "10.0.0.0/8"),
        ("2002:a00:1::1", "2002::/16", "10.0.0.0/8"),
        ("2001:4860:1::5efe:a00:1", "", "10.0.0.0/8"),
    ],
)
def test_each_side_of_a_routing_embedding_is_opened_by_its_own_family(
    address: str, ipv6_allow: str, ipv4_allow: str
) -> None:
    check_address(address, parse_allow_list(f"{ipv6_allow},{ipv4_allow}"))
    with pytest.raises(EgressRefused):
        check_address(address, parse_allow_list(ipv6_allow))
    if ipv6_allow:
        with pytest.raises(EgressRefused):
            check_address(address, parse_allow_list(ipv4_allow))


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "64:ff9b::8.8.4.4", "2001:4860:1::200:5efe:808:808"])
def test_routing_embeddings_of_public_addresses_pass(address: str) -> None:
    assert refusal_reason(address) is None  # an IPv6-only host behind DNS64 reaches public IPv4 hosts


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("64:ff9b:1::808:808", "publicly routable"),  # local-use NAT64: the operator's own translator
        ("2002:808:808::1", "publicly routable"),  # 6to4
        ("2001:0:808:808::f7f7:f7f7", "publicly routable"),  # Teredo
        ("fec0::1", "site-local"),
        ("2001:db8::1", "publicly routable"),
        ("3fff::1", "publicly routable"),  # documentation
        ("5f00::1", "publicly routable"),  # SRv6 SIDs: outside global unicast
        ("4000::1", "publicly routable"),  # unassigned, outside 2000::/3
        ("100::1", "private"),  # discard-only
    ],
)
def test_special_purpose_ipv6_ranges_are_refused(address: str, reason: str) -> None:
    assert reason in (refusal_reason(address) or "")


# ---- messages -----------------------------------------------------------------------------------------------------


def test_a_refusal_names_the_destination_for_logs_and_nothing_in_its_public_message() -> None:
    with pytest.raises(EgressRefused) as refused:
        check_address("10.9.8.7", host="s3.internal.example")
    assert "s3.internal.example" in str(refused.value) and "10.9.8.7" in str(refused.value)
    public = refused.value.public_message
    assert "s3.internal" not in public and "10.9.8.7" not in public and "not a publicly routable" in public
    assert refused.value.reason == "a private address"
    assert EgressRefused("Refused to connect: the URL is malformed").public_message.endswith("malformed")


async def test_an_unresolvable_host_is_not_named_in_the_public_message(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_such_host(*_: object, **__: object) -> None:
        raise socket.gaierror("no such host")

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_host)
    with pytest.raises(EgressRefused) as refused:
        await pin_url("https://minio.corp.example/")
    assert "minio.corp.example" in str(refused.value)
    assert "minio" not in refused.value.public_message and "resolved" in refused.value.public_message


# ---- pinning ------------------------------------------------------------------------------------------------------


async def test_pin_url_returns_the_first_checked_address(monkeypatch: pytest.MonkeyPatch) -> None:
    async def two_addresses(host: str, port: int, **_: object) -> list[tuple[object, ...]]:
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1111", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port)),
        ]

    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", two_addresses)
    target = await pin_url("https://S3.Example.COM./bucket?x=1")
    addresses = ("2606:4700::1111", "93.184.215.14")
    assert target == PinnedTarget("https", "s3.example.com", 443, addresses[0], addresses)
    assert target.host_header == "s3.example.com"
    assert list((await pin_url("https://s3.example.com/")).addresses) == ["2606:4700::1111", "93.184.215.14"]


@pytest.mark.parametrize(
    ("url", "host_header"),
    [("http://8.8.8.8:9000/x", "8.8.8.8:9000"), ("https://[2606:4700::1111]/", "[2606:4700::1111]")],
)
async def test_pin_url_takes_ip_literals_as_they_are(url: str, host_header: str) -> None:
    target = await pin_url(url)
    assert target.address == target.host and target.host_header == host_header


def test_a_target_recognises_only_its_own_origin() -> None:
    target = PinnedTarget("https", "s3.example.com", 443, "93.184.215.14", ("93.184.215.14",))
    assert target.is_origin_of("https://s3.example.com/bucket/key?uploads")
    assert target.is_origin_of("https://S3.example.com.:443/")
    for other in (
        "http://s3.example.com/",  # another scheme
        "https://s3.example.com:8443/",  # another port
        "https://bucket.s3.example.com/",  # a virtual-hosted bucket
        "https://93.184.215.14/",  # the address itself is another origin
        "https://s3.example.com:99999/",
    ):
        assert not target.is_origin_of(other), other
