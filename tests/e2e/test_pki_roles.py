"""PKI roles over HTTP: their settings, and what a holder of ``pki:issue`` can and cannot get certified under one.

Each refusal is an attempt a workload holding a narrow grant might make to get more; the issued certificates are read
back with ``cryptography`` and ``openssl x509 -text``, which is what a relying party trusts, not our answer."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scaivault.bootstrap import Container
from scaivault.domain.durations import format_duration, parse_duration
from scaivault.domain.pki_roles import DEFAULTS
from tests.e2e.pki_helpers import (
    build_hierarchy,
    create_ca,
    create_role,
    error_of,
    event_count,
    fields_of,
    get,
    make_csr,
    make_key,
    openssl,
    pki_admin,
    pki_issuer,
    post,
    write,
)


async def intermediate(client: TestClient, headers: dict[str, str], validity_days: int = 365) -> dict[str, Any]:
    root = await create_ca(client, headers, "root", key_type="ec", key_size=256)
    return await create_ca(client, headers, "issuer", ca_type="intermediate", parent_ca_id=root["id"],
                           key_type="ec", key_size=256, validity_days=validity_days)


def names_in(pem: str) -> tuple[list[str], list[str], list[str]]:
    certificate = x509.load_pem_x509_certificate(pem.encode())
    sans = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return ([a.value for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)],  # type: ignore[misc]
            sans.get_values_for_type(x509.DNSName), [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)])


# ---- settings -------------------------------------------------------------------------------------------------------

async def test_role_lifecycle(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    ca = await intermediate(client, headers)
    created = await create_role(client, headers, "svc-mtls", ca["id"], allowed_domains=["*.svc.cluster.local"])
    for key, default in DEFAULTS.items():
        if key in ("ttl", "max_ttl"):
            assert parse_duration(created[key]) == parse_duration(default), key
        elif key not in ("allowed_domains", "key_bits"):
            assert created[key] == default, key
    assert created["key_bits"] == 256 and created["name"] == "svc-mtls" and created["ca_id"] == ca["id"]
    assert await get(client, "/v1/pki/roles/svc-mtls", headers) == created

    response = await client.patch("/v1/pki/roles/svc-mtls", headers=headers,
                                  json={"max_ttl": "24h", "allow_wildcard_certificates": True})
    patched = await response.json()
    assert response.status == 200, patched
    assert parse_duration(patched["max_ttl"]) == timedelta(hours=24) and patched["allow_wildcard_certificates"]
    assert patched["allowed_domains"] == ["*.svc.cluster.local"]

    before = await event_count(container)
    renamed = await client.patch("/v1/pki/roles/svc-mtls", headers=headers, json={"name": "other"})
    await error_of(renamed, 400, "invalid_request")
    await error_of(await client.get("/v1/pki/roles/other", headers=headers), 404, "role_not_found")
    again = await client.post("/v1/pki/roles", headers=headers,
                              json={"name": "svc-mtls", "ca_id": ca["id"], "allowed_domains": ["x.example"]})
    await error_of(again, 409, "role_exists")
    await error_of(await client.patch("/v1/pki/roles/nope", headers=headers, json={"ttl": "1h"}), 404,
                   "role_not_found")
    await error_of(await client.delete("/v1/pki/roles/nope", headers=headers), 404, "role_not_found")
    unknown_ca = await client.post("/v1/pki/roles", headers=headers,
                                   json={"name": "r2", "ca_id": "ca_nope", "allowed_domains": ["x.example"]})
    await error_of(unknown_ca, 404, "ca_not_found")
    moved = await client.patch("/v1/pki/roles/svc-mtls", headers=headers, json={"ca_id": "ca_nope"})
    await error_of(moved, 404, "ca_not_found")
    assert await event_count(container) == before

    for n in range(3):
        await create_role(client, headers, f"extra-{n}", ca["id"], allowed_domains=["x.example"])
    first = await get(client, "/v1/pki/roles?limit=2", headers)
    assert [r["name"] for r in first["roles"]] == ["extra-0", "extra-1"] and first["has_more"] is True
    rest = await get(client, f"/v1/pki/roles?limit=2&cursor={first['cursor']}", headers)
    assert [r["name"] for r in rest["roles"]] == ["extra-2", "svc-mtls"] and rest["has_more"] is False

    deleted = await client.delete("/v1/pki/roles/svc-mtls", headers=headers)
    assert deleted.status == 204
    await error_of(await client.get("/v1/pki/roles/svc-mtls", headers=headers), 404, "role_not_found")
    await error_of(await client.post("/v1/pki/issue/svc-mtls", headers=headers,
                                     json={"common_name": "a.svc.cluster.local"}), 404, "role_not_found")
    # the name is free again
    await create_role(client, headers, "svc-mtls", ca["id"], allowed_domains=["*.svc.cluster.local"])


BAD_SETTINGS: list[tuple[dict[str, Any], str]] = [
    ({"allowed_domains": "example.com"}, "allowed_domains"),
    ({"allowed_domains": [""]}, "allowed_domains"),
    ({"allowed_domains": ["a*.example.com"]}, "allowed_domains"),
    ({"allowed_domains": ["example.com."]}, "allowed_domains"),
    ({"allowed_domains": ["exa mple.com"]}, "allowed_domains"),
    ({"allowed_domains": ["ex\u0430mple.com"]}, "allowed_domains"),
    ({"allowed_domains": ["*.com"]}, "allowed_domains"),
    ({"allowed_domains": [f"d{n}.example" for n in range(257)]}, "allowed_domains"),
    ({"allowed_domains": [], "allow_ip_sans": False}, "allowed_domains"),
    ({"allow_subdomains": "yes"}, "allow_subdomains"),
    ({"allow_ip_sans": 1}, "allow_ip_sans"),
    ({"store_private_keys": None}, "store_private_keys"),
    ({"allowed_ip_ranges": ["10.0.0.0/33"]}, "allowed_ip_ranges"),
    ({"allowed_ip_ranges": ["not-a-network"]}, "allowed_ip_ranges"),
    ({"key_type": "dsa"}, "key_type"),
    ({"key_type": "rsa", "key_bits": 1024}, "key_bits"),
    ({"key_type": "ec", "key_bits": 521}, "key_bits"),
    ({"key_type": "any", "key_bits": 2048}, "key_bits"),
    ({"key_bits": True}, "key_bits"),
    ({"ttl": "forever"}, "ttl"),
    ({"ttl": "0s"}, "ttl"),
    ({"ttl": "100h", "max_ttl": "10h"}, "ttl"),
    ({"max_ttl": "3651d"}, "max_ttl"),
    ({"max_ttl": 3600}, "max_ttl"),
    ({"key_usage": ["key_cert_sign"]}, "key_usage"),
    ({"ext_key_usage": ["any"]}, "ext_key_usage"),
    ({"renew_before": "720h"}, "renew_before"),
    ({"description": "x" * 1025}, "description"),
    ({"description": 5}, "description"),
]


async def test_every_setting_is_validated(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    ca = await intermediate(client, headers)
    await create_role(client, headers, "base", ca["id"], allowed_domains=["ok.example"])
    before = await event_count(container)
    for change, field in BAD_SETTINGS:
        body = {"name": "bad", "ca_id": ca["id"], "allowed_domains": ["ok.example"], **change}
        error = await error_of(await client.post("/v1/pki/roles", json=body, headers=headers), 422,
                               "validation_error")
        assert any(f.split("[")[0] == field for f in fields_of(error)), (change, error)
        patched = await client.patch("/v1/pki/roles/base", json=change, headers=headers)
        error = await error_of(patched, 422, "validation_error")
        assert any(f.split("[")[0] == field for f in fields_of(error)), (change, error)
    for name in ("", "bad name", "-lead", "x" * 129, "a/b", 5):
        error = await error_of(await client.post("/v1/pki/roles", headers=headers, json={
            "name": name, "ca_id": ca["id"], "allowed_domains": ["ok.example"]}), 422, "validation_error")
        assert fields_of(error) == ["name"], (name, error)
    missing_ca = await client.post("/v1/pki/roles", headers=headers, json={"name": "r", "allowed_domains": ["a.b"]})
    assert fields_of(await error_of(missing_ca, 422, "validation_error")) == ["ca_id"]
    unknown = await client.post("/v1/pki/roles", headers=headers, json={
        "name": "r", "ca_id": ca["id"], "allowed_domains": ["a.example"], "allow_everything": True})
    assert fields_of(await error_of(unknown, 422, "validation_error")) == ["allow_everything"]
    typed = await client.patch("/v1/pki/roles/base", headers=headers, json={"ca_id": 5})
    assert fields_of(await error_of(typed, 422, "validation_error")) == ["ca_id"]
    assert await event_count(container) == before
    assert (await get(client, "/v1/pki/roles/base", headers))["max_ttl"] == format_duration(
        parse_duration(DEFAULTS["max_ttl"]))


# ---- names ----------------------------------------------------------------------------------------------------------

async def refused(client: TestClient, headers: dict[str, str], role: str, body: dict[str, Any],
                  field: str | None = None) -> None:
    response = await client.post(f"/v1/pki/issue/{role}", json=body, headers=headers)
    document = await response.json()
    assert response.status in (400, 422), (body, document)
    assert "certificate" not in document and "private_key" not in document
    if field is not None:
        assert response.status == 422 and field in fields_of(document["error"]), (body, document)


async def test_a_wildcard_domain_role_allows_exactly_its_children(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin)
    await create_role(client, admin, "svc", ca["id"], allowed_domains=["*.svc.cluster.local"], allow_subdomains=True)
    issuer = pki_issuer(container)
    before = await event_count(container)
    for cn in ("evil.com", "svc.cluster.local.evil.com", "a.billing.svc.cluster.local", "svc.cluster.local",
               "*.svc.cluster.local", "*.cluster.local", "billing.svc.cluster.local.", "billing.svc.cluster.lo\u0441al",
               "\u212aelvin.svc.cluster.local", "bill ing.svc.cluster.local", " billing.svc.cluster.local",
               "billing.svc.cluster.local\u0000.evil.com", "localhost", "10.0.0.1", "xn--bcher-kva.svc.cluster.local."):
        await refused(client, issuer, "svc", {"common_name": cn})
    for alt in ("evil.com", "*.cluster.local", "b.svc.cluster.local..", "B\u0130LLING.svc.cluster.local"):
        await refused(client, issuer, "svc", {"common_name": "ok.svc.cluster.local", "alt_names": [alt]},
                      field="alt_names[0]")
    await refused(client, issuer, "svc", {"common_name": "ok.svc.cluster.local", "ip_sans": ["10.0.0.1"]},
                  field="ip_sans[0]")
    await refused(client, issuer, "svc", {"alt_names": ["ok.svc.cluster.local"]}, field="common_name")  # require_cn
    assert await event_count(container) == before

    issued = await post(client, "/v1/pki/issue/svc", issuer, {
        "common_name": "billing.svc.cluster.local", "alt_names": ["REPORTING.svc.cluster.local"]}, status=200)
    cns, dns, ips = names_in(issued["certificate"])
    assert cns == ["billing.svc.cluster.local"] and ips == []
    assert sorted(dns) == ["billing.svc.cluster.local", "reporting.svc.cluster.local"]

    # wildcards: only once the role allows them, and only for what the pattern covers
    await refused(client, issuer, "svc", {"common_name": "*.svc.cluster.local"}, field="common_name")
    patched = await client.patch("/v1/pki/roles/svc", json={"allow_wildcard_certificates": True}, headers=admin)
    assert patched.status == 200
    wildcard = await post(client, "/v1/pki/issue/svc", issuer, {"common_name": "*.svc.cluster.local"}, status=200)
    assert names_in(wildcard["certificate"])[1] == ["*.svc.cluster.local"]
    for cn in ("*.cluster.local", "*.local", "*.*.svc.cluster.local", "a*.svc.cluster.local"):
        await refused(client, issuer, "svc", {"common_name": cn}, field="common_name")


async def test_a_plain_domain_role_subdomains_bare_names_and_addresses(
    client: TestClient, container: Container
) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin)
    await create_role(client, admin, "web", ca["id"], allowed_domains=["example.com"])
    issuer = pki_issuer(container)
    await post(client, "/v1/pki/issue/web", issuer, {"common_name": "example.com"}, status=200)
    await refused(client, issuer, "web", {"common_name": "www.example.com"}, field="common_name")
    await refused(client, issuer, "web", {"common_name": "wwwexample.com"}, field="common_name")
    await client.patch("/v1/pki/roles/web", json={"allow_subdomains": True}, headers=admin)
    await post(client, "/v1/pki/issue/web", issuer, {"common_name": "a.b.www.example.com"}, status=200)
    await client.patch("/v1/pki/roles/web", json={"allow_bare_domains": False}, headers=admin)
    await refused(client, issuer, "web", {"common_name": "example.com"}, field="common_name")
    await refused(client, issuer, "web", {"common_name": "localhost"}, field="common_name")
    await client.patch("/v1/pki/roles/web", json={"allow_localhost": True}, headers=admin)
    await post(client, "/v1/pki/issue/web", issuer, {"common_name": "localhost"}, status=200)

    await refused(client, issuer, "web", {"common_name": "a.example.com", "ip_sans": ["10.1.2.3"]},
                  field="ip_sans[0]")
    await client.patch("/v1/pki/roles/web", json={"allow_ip_sans": True, "allowed_ip_ranges": ["10.0.0.0/8"]},
                       headers=admin)
    issued = await post(client, "/v1/pki/issue/web", issuer,
                        {"common_name": "a.example.com", "ip_sans": ["10.1.2.3"]}, status=200)
    assert names_in(issued["certificate"])[2] == ["10.1.2.3"]
    for address in ("192.168.1.1", "::1", "10.0.0.1%eth0", "010.1.2.3", "not-an-ip"):
        await refused(client, issuer, "web", {"common_name": "a.example.com", "ip_sans": [address]},
                      field="ip_sans[0]")
    await refused(client, issuer, "web", {"common_name": "a.example.com", "alt_names": ["10.1.2.3"]},
                  field="alt_names[0]")


async def test_lifetimes(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin, validity_days=2)
    await create_role(client, admin, "short", ca["id"], allowed_domains=["t.example"], max_ttl="24h", ttl="1h")
    await create_role(client, admin, "long", ca["id"], allowed_domains=["t.example"], max_ttl="720h")
    issuer = pki_issuer(container)
    default = await post(client, "/v1/pki/issue/short", issuer, {"common_name": "t.example"}, status=200)
    certificate = x509.load_pem_x509_certificate(default["certificate"].encode())
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert 3600 <= lifetime.total_seconds() <= 3600 + 61  # the role's ttl, valid from a minute back
    await refused(client, issuer, "short", {"common_name": "t.example", "ttl": "25h"}, field="ttl")
    await refused(client, issuer, "short", {"common_name": "t.example", "ttl": "-1h"}, field="ttl")
    await refused(client, issuer, "short", {"common_name": "t.example", "ttl": "soon"}, field="ttl")
    await refused(client, issuer, "long", {"common_name": "t.example", "ttl": "72h"}, field="ttl")  # beyond the CA
    one_second = await post(client, "/v1/pki/issue/short", issuer, {"common_name": "t.example", "ttl": "1s"},
                            status=200)
    assert one_second["not_after"] > one_second["not_before"]


# ---- signing CSRs ---------------------------------------------------------------------------------------------------

async def test_the_role_decides_the_key(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin)
    await create_role(client, admin, "p256", ca["id"], allowed_domains=["k.example"], key_type="ec", key_bits=256)
    await create_role(client, admin, "rsa3072", ca["id"], allowed_domains=["k.example"], key_type="rsa",
                      key_bits=3072)
    issuer = pki_issuer(container)
    before = await event_count(container)
    for role, kind in (("p256", "ec384"), ("p256", "ed25519"), ("p256", "rsa2048"), ("rsa3072", "rsa2048"),
                       ("rsa3072", "ec256")):
        response = await client.post(f"/v1/pki/sign/{role}", headers=issuer,
                                     json={"csr_pem": make_csr(make_key(kind), "k.example")})
        assert fields_of(await error_of(response, 422, "validation_error")) == ["csr_pem"], (role, kind)
    weak = await client.post("/v1/pki/sign/rsa3072", headers=issuer,
                             json={"csr_pem": make_csr(make_key("rsa1024"), "k.example")})
    await error_of(weak, 400, "invalid_csr")  # below what any role may allow: not a key we certify at all
    assert await event_count(container) == before
    await post(client, "/v1/pki/sign/p256", issuer, {"csr_pem": make_csr(make_key("ec256"), "k.example")}, status=200)
    bigger = await post(client, "/v1/pki/sign/rsa3072", issuer,
                        {"csr_pem": make_csr(make_key("rsa4096"), "k.example")}, status=200)
    assert x509.load_pem_x509_certificate(bigger["certificate"].encode()).public_key().key_size == 4096  # type: ignore[union-attr]
    issued = await post(client, "/v1/pki/issue/rsa3072", issuer, {"common_name": "k.example"}, status=200)
    assert issued["private_key_type"] == "rsa"
    key = serialization.load_pem_private_key(issued["private_key"].encode(), None)
    assert key.key_size == 3072  # type: ignore[union-attr]


async def test_a_csr_gets_nothing_the_role_does_not_give(client: TestClient, container: Container,
                                                         tmp_path: Path) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin)
    await create_role(client, admin, "svc", ca["id"], allowed_domains=["*.svc.cluster.local"])
    issuer = pki_issuer(container)
    greedy = make_csr(
        make_key(), "evil.com", dns_names=("evil.com", "a.svc.cluster.local"),
        extensions=(
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING, ExtendedKeyUsageOID.OCSP_SIGNING]), False),
            (x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                           encipher_only=False, decipher_only=False), True),
        ),
    )
    # the CSR's own names are checked like any request
    response = await client.post("/v1/pki/sign/svc", json={"csr_pem": greedy}, headers=issuer)
    assert "common_name" in fields_of(await error_of(response, 422, "validation_error"))
    # names in the body replace the CSR's; nothing else of the CSR is taken
    signed = await post(client, "/v1/pki/sign/svc", issuer,
                        {"csr_pem": greedy, "common_name": "a.svc.cluster.local"}, status=200)
    certificate = x509.load_pem_x509_certificate(signed["certificate"].encode())
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    usages = list(certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert set(usages) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    key_usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert key_usage.key_cert_sign is False and key_usage.crl_sign is False
    assert names_in(signed["certificate"]) == (["a.svc.cluster.local"], ["a.svc.cluster.local"], [])
    write(tmp_path, "signed.pem", signed["certificate"])
    text = openssl("x509", "-in", "signed.pem", "-noout", "-text", cwd=tmp_path).stdout
    assert "CA:FALSE" in text and "CA:TRUE" not in text
    assert "Code Signing" not in text and "OCSP Signing" not in text and "Certificate Sign" not in text
    assert "evil.com" not in text and "DNS:a.svc.cluster.local" in text
    assert "private_key" not in signed

    uri = make_csr(make_key(), "b.svc.cluster.local",
                   general_names=(x509.UniformResourceIdentifier("spiffe://evil/x"),))
    mail = make_csr(make_key(), "b.svc.cluster.local", general_names=(x509.RFC822Name("a@evil.com"),))
    for csr in (uri, mail):
        response = await client.post("/v1/pki/sign/svc", json={"csr_pem": csr}, headers=issuer)
        assert fields_of(await error_of(response, 422, "validation_error")) == ["csr_pem"]
    from_csr = await post(client, "/v1/pki/sign/svc", issuer,
                          {"csr_pem": make_csr(make_key(), "c.svc.cluster.local", dns_names=("d.svc.cluster.local",))},
                          status=200)
    assert sorted(names_in(from_csr["certificate"])[1]) == ["c.svc.cluster.local", "d.svc.cluster.local"]


@pytest.mark.parametrize("damage", ["signature", "garbage", "empty", "certificate", "truncated"])
async def test_unusable_csrs(client: TestClient, container: Container, damage: str) -> None:
    admin = pki_admin(container)
    ca = await intermediate(client, admin)
    await create_role(client, admin, "svc", ca["id"], allowed_domains=["*.svc.cluster.local"])
    good = make_csr(make_key(), "a.svc.cluster.local")
    if damage == "signature":
        der = bytearray(x509.load_pem_x509_csr(good.encode()).public_bytes(serialization.Encoding.DER))
        der[-3] ^= 0x01  # inside the signature value
        csr_pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    elif damage == "garbage":
        csr_pem = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    elif damage == "empty":
        csr_pem = ""
    elif damage == "certificate":
        csr_pem = ca["id"]
    else:
        csr_pem = good[: len(good) // 2]
    before = await event_count(container)
    response = await client.post("/v1/pki/sign/svc", json={"csr_pem": csr_pem}, headers=pki_issuer(container))
    await error_of(response, 400, "invalid_csr")
    assert await event_count(container) == before


async def test_a_certificate_naming_nothing_is_refused_not_a_500(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    _, intermediate = await build_hierarchy(client, headers)
    await create_role(client, headers, "no-cn", intermediate["id"], allowed_domains=["*.svc.cluster.local"],
                      require_cn=False)
    response = await client.post("/v1/pki/issue/no-cn", json={}, headers=headers)
    assert fields_of(await error_of(response, 422, "validation_error")) == ["alt_names"]
