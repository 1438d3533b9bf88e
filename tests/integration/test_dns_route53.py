"""The Route 53 client against moto's Route 53 in server mode on loopback (a real HTTP endpoint, reached through the
egress guard's pinned botocore sender): zones listed, TXT values merged by UPSERT, removed one by one, the record set
deleted with its last value."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import AsyncIterator, Iterator
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from scaivault.dns.factory import open_client
from scaivault.dns.port import DnsProviderError, DnsRecords
from tests.e2e.helpers import free_port

LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
KEYS = {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"}


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _admin(endpoint: str) -> Any:
    return boto3.client("route53", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=KEYS["access_key_id"], aws_secret_access_key=KEYS["secret_access_key"])


@pytest.fixture
async def zone_id(moto_endpoint: str) -> str:
    admin = _admin(moto_endpoint)
    zones = {z["Name"]: z["Id"] for z in admin.list_hosted_zones()["HostedZones"]}
    if "acme.example." in zones:
        return zones["acme.example."]
    created = admin.create_hosted_zone(Name="acme.example", CallerReference="acme-1")
    admin.create_hosted_zone(Name="internal.example", CallerReference="private-1",
                             HostedZoneConfig={"PrivateZone": True, "Comment": "private"},
                             VPC={"VPCRegion": "us-east-1", "VPCId": "vpc-12345678"})
    return str(created["HostedZone"]["Id"])


@pytest.fixture
async def client(moto_endpoint: str, zone_id: str) -> AsyncIterator[DnsRecords]:
    client = open_client("route53", {**KEYS, "region": "us-east-1"}, {"endpoint_url": moto_endpoint}, allow=LOOPBACK)
    try:
        yield client
    finally:
        await client.aclose()


def _values(endpoint: str, zone_id: str, name: str) -> list[str]:
    sets = _admin(endpoint).list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    return sorted(r["Value"] for s in sets if s["Type"] == "TXT" and s["Name"] == name + "."
                  for r in s["ResourceRecords"])


async def test_lists_public_zones(client: DnsRecords) -> None:
    assert await client.list_zones() == ["acme.example"]


async def test_values_are_merged_and_removed_one_by_one(client: DnsRecords, moto_endpoint: str, zone_id: str) -> None:
    name = "_acme-challenge.acme.example"
    await client.set_txt(name, "apex", ttl=60)
    await client.set_txt(name, "wildcard")
    await client.set_txt(name, "apex")
    values = await asyncio.to_thread(_values, moto_endpoint, zone_id, name)
    assert values == ['"apex"', '"wildcard"']
    await client.remove_txt(name, "apex")
    assert await asyncio.to_thread(_values, moto_endpoint, zone_id, name) == ['"wildcard"']
    await client.remove_txt(name, "apex")
    await client.remove_txt(name, "wildcard")
    assert await asyncio.to_thread(_values, moto_endpoint, zone_id, name) == []


async def test_the_egress_guard_applies(moto_endpoint: str) -> None:
    client = open_client("route53", KEYS, {"endpoint_url": moto_endpoint})  # loopback not allowed
    try:
        with pytest.raises(DnsProviderError, match="Refused to connect"):
            await client.list_zones()
    finally:
        await client.aclose()


def test_without_keys_the_servers_own_role_is_not_lent() -> None:
    with pytest.raises(DnsProviderError, match="does not lend"):
        open_client("route53", {"region": "us-east-1"}, {})
