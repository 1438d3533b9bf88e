"""The wildcard tutorial (spec tutorials/acme-wildcard-cert) played end to end against real servers: PowerDNS
(Debian's pdns-server, the DNS engineer's fixture) is both the DNS provider ScaiVault writes through and the DNS
server pebble's validation authority asks; pebble is the CA.

Step 1 creates the provider through the API (``provider_type: powerdns``, ``verify: true``); step 2 registers an
account (provider ``custom`` with pebble's directory URL: the tutorial's ``letsencrypt``/``staging`` cannot point at
a test CA, and no test-only override of the public directories exists, docs/acme.md); step 3 orders
``*.acme.example`` and ``acme.example`` by dns-01 and watches the order go pending -> processing -> valid, the
``_acme-challenge`` TXT records served by PowerDNS while the CA validates and gone after. The certificate is
readable at /v1/pki/certificates/{id} and as the secret, and chains to pebble's root (``openssl verify``).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.acme_server import Pebble, pebble_missing, start_pebble
from tests.e2e.acme_helpers import ORDERS, order, register, serving, until_ended, verify_chain
from tests.e2e.conftest import GENEROUS_RATE_LIMITS
from tests.e2e.helpers import caller_token
from tests.e2e.pki_helpers import get, pki_admin, post
from tests.integration.test_dns_powerdns import API_KEY, PowerDns, _create_zone, _txt, powerdns  # noqa: F401

pytestmark = pytest.mark.skipif(pebble_missing() is not None, reason=pebble_missing() or "")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory, powerdns: PowerDns) -> Iterator[Pebble]:  # noqa: F811
    server = start_pebble(tmp_path_factory.mktemp("pebble"), dns_server=f"127.0.0.1:{powerdns.dns_port}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """pebble and PowerDNS's API run on loopback: the operator allows it (and plain http to PowerDNS)."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32",
    )


@pytest.fixture
async def client(container: Container, pebble: Pebble) -> Any:
    async with serving(container, pebble) as client:
        yield client


async def test_wildcard_certificate_by_dns01(
    client: TestClient, container: Container, pebble: Pebble, powerdns: PowerDns,  # noqa: F811
    pool: asyncpg.Pool, tmp_path: Path,
) -> None:
    await _create_zone(powerdns, "acme.example")
    headers = pki_admin(container)  # the tutorial's token: pki:issue and pki:admin

    # Step 1: the DNS provider, verified against PowerDNS's API at creation.
    provider = await post(client, "/v1/dns/providers", headers, {
        "name": "powerdns-acme", "provider_type": "powerdns",
        "credentials": {"api_url": powerdns.api_url, "api_key": API_KEY, "server_id": "localhost"},
        "managed_zones": ["acme.example", "*.acme.example"], "verify": True,
    })
    assert provider["id"].startswith("dnsp_") and provider["is_active"] is True

    # Step 2: the account (the server makes and keeps its key).
    account = await register(client, headers, pebble, name="pebble-staging")
    assert account["status"] == "valid" and "key" not in " ".join(account)

    # Watch what PowerDNS serves at the moment each challenge is recorded as presented.
    served_while_presented: list[tuple[str, list[str]]] = []
    presented = container.acme_commands.challenge_presented

    async def and_look(order_id: str, challenge: dict[str, str]) -> None:
        served_while_presented.append((challenge["record_name"], await _txt(powerdns, challenge["record_name"])))
        await presented(order_id, challenge)

    container.acme_commands.challenge_presented = and_look  # type: ignore[method-assign]

    # Step 3: the wildcard and its apex, by dns-01 (the default), through the provider managing the zone.
    created = await order(client, headers, account["id"], "*.acme.example", alt_names=["acme.example"])
    assert created["status"] == "pending" and created["challenge_type"] == "dns-01"
    assert created["dns_provider_id"] == provider["id"]
    assert created["secret_path"] == "certificates/_wildcard_acme_example"
    seen: list[str] = []
    done = await until_ended(client, headers, created["id"], seen=seen)
    assert done["status"] == "valid", done
    assert seen[0] == "pending" and seen[-1] == "valid" and seen == sorted(
        seen, key=["pending", "processing", "valid"].index)
    # Every status the order went through, as its events recorded them.
    recorded = [row["status"] for row in await pool.fetch(
        """SELECT s.status FROM (SELECT 'pending' AS status, 0 AS n UNION ALL
               SELECT convert_from(state, 'UTF8')::jsonb->>'status', originator_version FROM scaivault_events
               WHERE originator_id = (SELECT stream_id FROM scaivault_acme_orders WHERE order_id = $1)
                 AND topic LIKE '%Stepped') s ORDER BY n""", created["id"])]
    recorded.append(done["status"])
    assert list(dict.fromkeys(recorded)) == ["pending", "processing", "valid"], recorded

    # One TXT record name for both (a wildcard is validated at its base name), each value served while presented
    # and nothing left after.
    assert {name for name, _ in served_while_presented} == {"_acme-challenge.acme.example"}
    assert len(served_while_presented) == 2 and all(values for _, values in served_while_presented)
    assert len(served_while_presented[-1][1]) == 2  # the apex's and the wildcard's values side by side
    assert await _txt(powerdns, "_acme-challenge.acme.example") == []
    assert [(c["type"], c["record_name"], c["status"]) for c in done["challenges"]] == [
        ("dns-01", "_acme-challenge.acme.example", "removed")] * 2

    # Fetch the certificate: from the PKI's list, and as the secret.
    certificate = await get(client, f"/v1/pki/certificates/{done['certificate_id']}", headers)
    assert certificate["id"] == done["certificate_id"]
    listed = await get(client, "/v1/pki/certificates", headers)
    assert done["certificate_id"] in [c["id"] for c in listed[next(k for k in listed if isinstance(listed[k], list))]]
    reader = caller_token(container, "secrets:read", identity="user:admin@acme.example", roles=("tenant_admin",))
    secret = await get(client, "/v1/secrets/certificates/_wildcard_acme_example", reader)
    assert secret["secret_type"] == "certificate" and set(secret["data"]) == {"cert_pem", "key_pem", "chain_pem"}
    leaf = x509.load_pem_x509_certificate(secret["data"]["cert_pem"].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(sans.get_values_for_type(x509.DNSName)) == {"*.acme.example", "acme.example"}
    verify_chain(tmp_path, pebble.root_pem(), secret["data"]["cert_pem"], secret["data"]["chain_pem"])
    assert (await get(client, ORDERS, headers))["orders"][0]["id"] == created["id"]
