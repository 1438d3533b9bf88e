"""The PowerDNS client against a real PowerDNS Authoritative server (Debian's pdns-server with the gsqlite3 backend),
started here as a process of its own on loopback: a TXT value set through the client is served by the server (asked
with dnspython, over UDP, at the server's own port) and removed again."""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import dns.asyncquery
import dns.message
import dns.rdatatype
import pytest

from scaivault.dns.factory import open_client
from scaivault.dns.port import DnsProviderError, DnsRecords
from tests.e2e.helpers import free_port

PDNS_SERVER = shutil.which("pdns_server") or ("/usr/sbin/pdns_server" if Path("/usr/sbin/pdns_server").exists()
                                               else None)
SCHEMAS = (
    Path("/usr/share/doc/pdns-backend-sqlite3/schema.sqlite3.sql"),
    Path("/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql"),
)
API_KEY = "pdns-api-key-0123456789abcdef"
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)


@dataclass(frozen=True)
class PowerDns:
    api_url: str
    dns_port: int


def _schema() -> Path | None:
    return next((path for path in SCHEMAS if path.exists()), None)


@pytest.fixture(scope="module")
def powerdns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PowerDns]:
    if PDNS_SERVER is None:
        pytest.skip("pdns_server is not installed (apt-get install pdns-server pdns-backend-sqlite3; make system-deps)")
    schema = _schema()
    if schema is None:
        pytest.skip("the gsqlite3 schema of pdns-backend-sqlite3 is not installed")
    home = tmp_path_factory.mktemp("pdns")
    database = home / "pdns.sqlite3"
    with sqlite3.connect(database) as db:
        db.executescript(schema.read_text())
    api_port, dns_port = free_port(), free_port()
    (home / "pdns.conf").write_text("\n".join([
        "launch=gsqlite3", f"gsqlite3-database={database}", "api=yes", f"api-key={API_KEY}", "webserver=yes",
        "webserver-address=127.0.0.1", f"webserver-port={api_port}", "webserver-allow-from=127.0.0.1/32",
        "local-address=127.0.0.1", f"local-port={dns_port}", f"socket-dir={home}", "guardian=no", "daemon=no",
        "disable-syslog=yes", "write-pid=no", "security-poll-suffix=", "loglevel=4", "",
    ]))
    log = (home / "pdns.log").open("w")
    process = subprocess.Popen([PDNS_SERVER, f"--config-dir={home}"], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_api(f"http://127.0.0.1:{api_port}", process, home / "pdns.log")
        yield PowerDns(f"http://127.0.0.1:{api_port}", dns_port)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


def _wait_for_api(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pdns_server exited: {log.read_text()[-2000:]}")
        try:
            request = urllib.request.Request(f"{url}/api/v1/servers/localhost", headers={"X-API-Key": API_KEY})
            with urllib.request.urlopen(request, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    pytest.fail("pdns_server's API did not come up")


async def _create_zone(server: PowerDns, zone: str) -> None:
    async with aiohttp.ClientSession(headers={"X-API-Key": API_KEY}) as session:
        async with session.get(f"{server.api_url}/api/v1/servers/localhost/zones/{zone}.") as response:
            if response.status == 200:
                return
        async with session.post(f"{server.api_url}/api/v1/servers/localhost/zones", json={
            "name": f"{zone}.", "kind": "Native", "nameservers": [f"ns1.{zone}."],
        }) as response:
            assert response.status == 201, await response.text()


async def _txt(server: PowerDns, name: str) -> list[str]:
    """What the server answers for ``name``'s TXT records, asked over DNS."""
    query = dns.message.make_query(name + ".", dns.rdatatype.TXT)
    answer = await dns.asyncquery.udp(query, "127.0.0.1", port=server.dns_port, timeout=3)
    return sorted(b"".join(rdata.strings).decode() for rrset in answer.answer for rdata in rrset
                  if rrset.rdtype == dns.rdatatype.TXT)


@pytest.fixture
async def client(powerdns: PowerDns) -> AsyncIterator[DnsRecords]:
    await _create_zone(powerdns, "acme.example")
    await _create_zone(powerdns, "dev.acme.example")
    client = open_client("powerdns", {"api_url": powerdns.api_url, "api_key": API_KEY, "server_id": "localhost"}, {},
                         allow=LOOPBACK)
    try:
        yield client
    finally:
        await client.aclose()


async def test_lists_zones(client: DnsRecords) -> None:
    assert {"acme.example", "dev.acme.example"} <= set(await client.list_zones())


async def test_a_txt_record_set_through_the_api_resolves_and_is_removed(client: DnsRecords, powerdns: PowerDns) -> None:
    name = "_acme-challenge.acme.example"
    await client.set_txt(name, "apex-token-Zm9vYmFy", ttl=60)
    await client.set_txt(name, "wildcard-token-YmF6")
    await client.set_txt(name, "apex-token-Zm9vYmFy")  # already there
    assert await _txt(powerdns, name) == ["apex-token-Zm9vYmFy", "wildcard-token-YmF6"]

    await client.remove_txt(name, "apex-token-Zm9vYmFy")
    assert await _txt(powerdns, name) == ["wildcard-token-YmF6"]
    await client.remove_txt(name, "apex-token-Zm9vYmFy")  # idempotent
    await client.remove_txt(name, "wildcard-token-YmF6")
    assert await _txt(powerdns, name) == []


async def test_the_child_zone_gets_its_names(client: DnsRecords, powerdns: PowerDns) -> None:
    name = "_acme-challenge.api.dev.acme.example"
    await client.set_txt(name, "child")
    assert await _txt(powerdns, name) == ["child"]
    await client.remove_txt(name, "child")
    assert await _txt(powerdns, name) == []


async def test_concurrent_values_for_one_name_are_all_kept(client: DnsRecords, powerdns: PowerDns) -> None:
    name = "_acme-challenge.www.acme.example"
    await asyncio.gather(*(client.set_txt(name, f"value-{i}") for i in range(5)))
    assert await _txt(powerdns, name) == [f"value-{i}" for i in range(5)]
    await asyncio.gather(*(client.remove_txt(name, f"value-{i}") for i in range(5)))
    assert await _txt(powerdns, name) == []


async def test_a_wrong_api_key_is_refused(powerdns: PowerDns) -> None:
    client = open_client("powerdns", {"api_url": powerdns.api_url, "api_key": "wrong-key-123456"}, {}, allow=LOOPBACK)
    try:
        with pytest.raises(DnsProviderError) as raised:
            await client.list_zones()
    finally:
        await client.aclose()
    assert raised.value.status == 401 and "wrong-key-123456" not in str(raised.value)
