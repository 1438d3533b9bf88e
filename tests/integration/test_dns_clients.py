"""Each hosted provider's client against a stand-in of its API on loopback (tests/dns_standins.py): zones listed,
TXT values added beside the ones already there and removed one by one (idempotently), refused credentials and the
egress guard turned into ``DnsProviderError`` with no credential in it."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scaivault.dns.factory import open_client
from scaivault.dns.port import DnsProviderError, DnsRecords, ZoneNotFound
from tests.dns_standins import (
    AZURE_CLIENT_SECRET,
    CLOUDFLARE_TOKEN,
    DIGITALOCEAN_TOKEN,
    SCAIDNS_KEY,
    StandIn,
    client_settings,
    google_service_account,
    google_settings,
    standing_in,
)

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
ZONES = ["acme.example", "dev.acme.example", "other.example"]
KINDS = ["cloudflare", "digitalocean", "scaidns", "azure", "google"]
SECRETS = {
    "cloudflare": CLOUDFLARE_TOKEN, "digitalocean": DIGITALOCEAN_TOKEN, "scaidns": SCAIDNS_KEY,
    "azure": AZURE_CLIENT_SECRET,
}
_GOOGLE = google_service_account()


def settings_of(standin: StandIn, **overrides: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if standin.kind == "google":
        account = _GOOGLE[0] if not overrides else google_service_account()[0]  # another key: not the registered one
        return google_settings(standin, account)
    return client_settings(standin, **overrides)


@pytest.fixture(params=KINDS)
async def standin(request: pytest.FixtureRequest) -> AsyncIterator[StandIn]:
    async with standing_in(request.param, list(ZONES), google_key=_GOOGLE[1]) as standin:
        yield standin


@pytest.fixture
async def client(standin: StandIn) -> AsyncIterator[DnsRecords]:
    credentials, config = settings_of(standin)
    client = open_client(standin.kind, credentials, config, allow=LOOPBACK)
    try:
        yield client
    finally:
        await client.aclose()


async def test_lists_zones(client: DnsRecords) -> None:
    assert sorted(await client.list_zones()) == sorted(ZONES)


async def test_adds_and_removes_values_one_by_one(client: DnsRecords, standin: StandIn) -> None:
    name = "_acme-challenge.acme.example"
    standin.add(name, "kept-by-someone-else")
    await client.set_txt(name, "token-apex", ttl=60)
    await client.set_txt(name + ".", "token-wildcard")  # the wildcard's challenge: the same name, a second value
    await client.set_txt(name, "token-apex")  # again: nothing changes
    assert sorted(standin.values(name)) == ["kept-by-someone-else", "token-apex", "token-wildcard"]

    await client.remove_txt(name, "token-apex")
    assert sorted(standin.values(name)) == ["kept-by-someone-else", "token-wildcard"]
    await client.remove_txt(name, "token-apex")  # idempotent
    await client.remove_txt(name, "token-wildcard")
    await client.remove_txt(name, "kept-by-someone-else")
    assert standin.values(name) == []
    await client.remove_txt(name, "never-there")


async def test_the_most_specific_zone_takes_the_record(client: DnsRecords, standin: StandIn) -> None:
    await client.set_txt("_acme-challenge.api.dev.acme.example", "v")
    assert standin.values("_acme-challenge.api.dev.acme.example") == ["v"]
    assert standin.zone_of("_acme-challenge.api.dev.acme.example") == "dev.acme.example"
    with pytest.raises(ZoneNotFound):
        await client.set_txt("_acme-challenge.elsewhere.example", "v")


async def test_refused_credentials_are_an_error_without_the_credential(standin: StandIn) -> None:
    wrong = {"cloudflare": {"api_token": "wrong-token"}, "digitalocean": {"api_token": "wrong-token"},
             "scaidns": {"api_key": "sdk_wrong"}, "azure": {"client_secret": "wrong-secret"},
             "google": {"other": "key"}}[standin.kind]
    credentials, config = settings_of(standin, **wrong)
    client = open_client(standin.kind, credentials, config, allow=LOOPBACK)
    try:
        with pytest.raises(DnsProviderError) as raised:
            await client.list_zones()
    finally:
        await client.aclose()
    message = str(raised.value)
    assert raised.value.status in (400, 401, 403), message
    for value in (*wrong.values(), *(v for v in credentials.values() if isinstance(v, str) and len(v) > 12)):
        assert value not in message


async def test_the_egress_guard_refuses_loopback_unless_allowed(standin: StandIn) -> None:
    credentials, config = settings_of(standin)
    client = open_client(standin.kind, credentials, config)  # no allow list: loopback is refused
    try:
        with pytest.raises(DnsProviderError, match="Refused to connect"):
            await client.list_zones()
    finally:
        await client.aclose()
    assert standin.requests == []
