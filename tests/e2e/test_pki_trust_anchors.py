"""Trust anchors over HTTP (spec core-concepts/pki, "Trust anchors"; docs/pki.md): external CAs' certificates a
tenant's stack should trust, kept with what they say of themselves, and served as a PEM bundle (with the tenant's
internal roots on request) that ``openssl verify`` uses as its CA file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from scaivault.bootstrap import Container
from tests.e2e.conftest import OTHER_TENANT, TENANT
from tests.e2e.helpers import caller_token
from tests.e2e.pki_helpers import (
    PKI_SCOPES,
    create_ca,
    error_of,
    event_count,
    fields_of,
    get,
    make_csr,
    make_key,
    openssl,
    pki_admin,
    post,
    write,
)

ANCHORS = "/v1/pki/trust-anchors"
NOW = datetime.now(UTC).replace(microsecond=0)


def external_ca(common_name: str, *, ca: bool = True, not_before: datetime | None = None,
                not_after: datetime | None = None, basic_constraints: bool = True) -> tuple[Any, x509.Certificate]:
    """A self-signed certificate made outside ScaiVault, as a partner's CA would be."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Partner Corp"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before or NOW - timedelta(days=1))
               .not_valid_after(not_after or NOW + timedelta(days=3650)))
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
            key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False,
        ), critical=True)
    return key, builder.sign(key, hashes.SHA256())


def leaf_of(issuer_key: Any, issuer: x509.Certificate, dns_name: str) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]))
            .issuer_name(issuer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(dns_name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(issuer_key, hashes.SHA256()))


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def reader(container: Container) -> dict[str, str]:
    """A workload that issues certificates and fetches the bundle to trust others'."""
    return caller_token(container, "pki:issue", identity="sa:gateway")


async def add(client: TestClient, headers: dict[str, str], name: str, certificate: x509.Certificate, *,
              status: int = 201, **fields: Any) -> dict[str, Any]:
    return await post(client, ANCHORS, headers, {"name": name, "certificate_pem": pem(certificate), **fields},
                      status=status)


async def bundle(client: TestClient, headers: dict[str, str], query: str = "") -> str:
    response = await client.get(f"{ANCHORS}/bundle{query}", headers=headers)
    assert response.status == 200, await response.text()
    assert response.content_type == "application/x-pem-file"
    return await response.text()


async def test_an_external_ca_becomes_trusted_through_the_bundle(
    client: TestClient, container: Container, tmp_path: Path,
) -> None:
    admin = pki_admin(container)
    partner_key, partner_root = external_ca("Partner Root CA")
    response = await client.post(ANCHORS, json={
        "name": "partner-root", "certificate_pem": pem(partner_root), "description": "Partner Corp's root, 2026",
    }, headers=admin)
    anchor = await response.json()
    assert response.status == 201, anchor
    assert response.headers["Location"] == f"{ANCHORS}/{anchor['id']}"
    assert anchor["id"].startswith("ta_") and anchor["name"] == "partner-root"
    assert anchor["description"] == "Partner Corp's root, 2026" and anchor["status"] == "valid"
    assert anchor["subject"] == "CN=Partner Root CA,O=Partner Corp" == anchor["issuer"]
    assert anchor["created_by"] == "user:admin@acme.example"
    write(tmp_path, "anchor.pem", anchor["certificate_pem"])
    fingerprint = openssl("x509", "-in", "anchor.pem", "-noout", "-fingerprint", "-sha256", cwd=tmp_path).stdout
    assert fingerprint.split("=", 1)[1].strip().replace(":", "").lower() == anchor["fingerprint_sha256"]
    serial = openssl("x509", "-in", "anchor.pem", "-noout", "-serial", cwd=tmp_path).stdout
    assert int(serial.split("=", 1)[1], 16) == int(anchor["serial_number"].replace(":", ""), 16)
    assert datetime.fromisoformat(anchor["not_after"].replace("Z", "+00:00")) == partner_root.not_valid_after_utc

    assert await get(client, f"{ANCHORS}/{anchor['id']}", reader(container)) == anchor
    listed = await get(client, ANCHORS, reader(container))
    assert listed["trust_anchors"] == [anchor] and listed["has_more"] is False

    # A client given the bundle as its CA file trusts what the partner's CA signed, and nothing else.
    write(tmp_path, "bundle.pem", await bundle(client, reader(container)))
    write(tmp_path, "partner-leaf.pem", pem(leaf_of(partner_key, partner_root, "api.partner.example")))
    stranger_key, stranger_root = external_ca("Stranger CA")
    write(tmp_path, "stranger-leaf.pem", pem(leaf_of(stranger_key, stranger_root, "api.stranger.example")))
    trusted = openssl("verify", "-CAfile", "bundle.pem", "partner-leaf.pem", cwd=tmp_path)
    assert trusted.returncode == 0 and "partner-leaf.pem: OK" in trusted.stdout, trusted.stdout + trusted.stderr
    untrusted = openssl("verify", "-CAfile", "bundle.pem", "stranger-leaf.pem", cwd=tmp_path)
    assert untrusted.returncode != 0

    deleted = await client.delete(f"{ANCHORS}/{anchor['id']}", headers=admin)
    assert deleted.status == 204 and await deleted.read() == b""
    await error_of(await client.get(f"{ANCHORS}/{anchor['id']}", headers=admin), 404, "trust_anchor_not_found")
    await error_of(await client.delete(f"{ANCHORS}/{anchor['id']}", headers=admin), 404, "trust_anchor_not_found")
    assert await bundle(client, admin) == ""
    # Deleted, its name and certificate may be trusted again.
    again = await add(client, admin, "partner-root", partner_root)
    assert again["id"] != anchor["id"] and again["fingerprint_sha256"] == anchor["fingerprint_sha256"]


async def test_names_and_certificates_are_unique_per_tenant(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    _, first = external_ca("First CA")
    _, second = external_ca("Second CA")
    await add(client, admin, "partner", first)
    before = await event_count(container)
    same_name = await client.post(ANCHORS, json={"name": " partner ", "certificate_pem": pem(second)}, headers=admin)
    await error_of(same_name, 409, "trust_anchor_exists")
    same_certificate = await client.post(ANCHORS, json={"name": "alias", "certificate_pem": pem(first)},
                                         headers=admin)
    error = await error_of(same_certificate, 409, "trust_anchor_exists")
    assert error["details"]["fingerprint_sha256"] == first.fingerprint(hashes.SHA256()).hex()
    assert await event_count(container) == before
    # Another tenant has a trust store of its own.
    other = pki_admin(container, tenant=OTHER_TENANT)
    await add(client, other, "partner", first)


async def test_only_one_ca_certificate_is_an_anchor_and_refusals_append_nothing(
    client: TestClient, container: Container,
) -> None:
    admin = pki_admin(container)
    _, ca = external_ca("Partner Root CA")
    _, leaf = external_ca("not-a-ca.example", ca=False)
    _, v1_like = external_ca("No Constraints", ca=False, basic_constraints=False)
    csr = make_csr(make_key(), "x.example")
    before = await event_count(container)
    cases: list[tuple[Any, int, str]] = [
        ({"name": "leaf", "certificate_pem": pem(leaf)}, 400, "invalid_certificate"),
        ({"name": "bare", "certificate_pem": pem(v1_like)}, 400, "invalid_certificate"),
        ({"name": "two", "certificate_pem": pem(ca) + pem(leaf)}, 400, "invalid_certificate"),
        ({"name": "csr", "certificate_pem": csr}, 400, "invalid_certificate"),
        ({"name": "junk", "certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"}, 400,
         "invalid_certificate"),
        ({"name": "text", "certificate_pem": "hello"}, 400, "invalid_certificate"),
        ({"name": "empty", "certificate_pem": ""}, 400, "invalid_certificate"),
        ({"name": "", "certificate_pem": pem(ca)}, 422, "validation_error"),
        ({"name": "a\nb", "certificate_pem": pem(ca)}, 422, "validation_error"),
        ({"name": "x" * 129, "certificate_pem": pem(ca)}, 422, "validation_error"),
        ({"certificate_pem": pem(ca)}, 422, "validation_error"),
        ({"name": "no-cert"}, 422, "validation_error"),
        ({"name": "n", "certificate_pem": pem(ca), "description": "d" * 1025}, 422, "validation_error"),
        ({"name": "n", "certificate_pem": pem(ca), "trusted_for": "all"}, 422, "validation_error"),
        ({"name": 5, "certificate_pem": pem(ca)}, 422, "validation_error"),
        ({"name": "big", "certificate_pem": "A" * 70_000}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        error = await error_of(await client.post(ANCHORS, json=body, headers=admin), status, code)
        if code == "invalid_certificate":
            assert "certificate_pem" in error["message"]
    leaf_error = await error_of(await client.post(ANCHORS, json=cases[0][0], headers=admin), 400,
                                "invalid_certificate")
    assert "not a CA certificate" in leaf_error["message"]
    description_error = await error_of(await client.post(ANCHORS, json=cases[12][0], headers=admin), 422,
                                       "validation_error")
    assert fields_of(description_error) == ["description"]
    assert await event_count(container) == before
    assert (await get(client, ANCHORS, admin))["trust_anchors"] == []


async def test_the_bundle_leaves_out_expired_anchors_unless_asked_and_adds_internal_roots_on_request(
    client: TestClient, container: Container,
) -> None:
    admin = pki_admin(container)
    _, current = external_ca("Current CA")
    _, expired = external_ca("Expired CA", not_before=NOW - timedelta(days=400), not_after=NOW - timedelta(days=1))
    _, future = external_ca("Future CA", not_before=NOW + timedelta(days=10))
    current_anchor = await add(client, admin, "current", current)
    expired_anchor = await add(client, admin, "expired", expired)
    future_anchor = await add(client, admin, "future", future)
    assert (current_anchor["status"], expired_anchor["status"], future_anchor["status"]) == (
        "valid", "expired", "not_yet_valid")

    assert await bundle(client, admin) == pem(current) + pem(future)
    assert await bundle(client, admin, "?include_expired=false") == pem(current) + pem(future)
    assert await bundle(client, admin, "?include_expired=true") == pem(current) + pem(expired) + pem(future)

    root = await create_ca(client, admin, "acme-root", key_type="ec", key_size=256)
    intermediate = await create_ca(client, admin, "acme-inter", ca_type="intermediate", parent_ca_id=root["id"],
                                   key_type="ec", key_size=256, validity_days=365)
    retired = await create_ca(client, admin, "retired-root", key_type="ec", key_size=256)
    root_pem = (await get(client, f"/v1/pki/ca/{root['id']}/certificate", admin))["certificate_pem"]
    retired_pem = (await get(client, f"/v1/pki/ca/{retired['id']}/certificate", admin))["certificate_pem"]
    inter_pem = (await get(client, f"/v1/pki/ca/{intermediate['id']}/certificate", admin))["certificate_pem"]
    with_internal = await bundle(client, admin, "?include_internal=true")
    assert with_internal.startswith(pem(current) + pem(future))
    assert root_pem in with_internal and retired_pem in with_internal and inter_pem not in with_internal
    revoked = await client.post(f"/v1/pki/ca/{retired['id']}/revoke", json={"reason": "retired"}, headers=admin)
    assert revoked.status == 200, await revoked.json()
    with_internal = await bundle(client, reader(container), "?include_internal=true&include_expired=1")
    assert with_internal == pem(current) + pem(expired) + pem(future) + root_pem
    assert root_pem not in await bundle(client, admin)

    for query in ("?include_internal=maybe", "?include_expired=2"):
        await error_of(await client.get(f"{ANCHORS}/bundle{query}", headers=admin), 400, "invalid_request")


async def test_who_may_read_and_change_trust_anchors(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    _, ca = external_ca("Partner Root CA")
    anchor = await add(client, admin, "partner-root", ca)
    before = await event_count(container)
    # pki:issue reads (a workload fetches the bundle), never changes.
    issuer = reader(container)
    assert (await get(client, ANCHORS, issuer))["trust_anchors"][0]["id"] == anchor["id"]
    await error_of(await client.post(ANCHORS, json={"name": "x", "certificate_pem": pem(ca)}, headers=issuer), 403,
                   "insufficient_scope")
    await error_of(await client.delete(f"{ANCHORS}/{anchor['id']}", headers=issuer), 403, "insufficient_scope")
    # pki:admin without an admin role for the tenant reads, but changes nothing.
    auditor = caller_token(container, "pki:admin", identity="user:auditor@acme.example")
    assert (await get(client, f"{ANCHORS}/{anchor['id']}", auditor))["name"] == "partner-root"
    _, other_ca = external_ca("Other CA")
    await error_of(await client.post(ANCHORS, json={"name": "y", "certificate_pem": pem(other_ca)}, headers=auditor),
                   403, "access_denied")
    await error_of(await client.delete(f"{ANCHORS}/{anchor['id']}", headers=auditor), 403, "access_denied")
    # No pki scope: nothing at all.
    nobody = caller_token(container, "secrets:read", identity="sa:nobody")
    for method, path in (("GET", ANCHORS), ("GET", f"{ANCHORS}/bundle"), ("GET", f"{ANCHORS}/{anchor['id']}"),
                         ("POST", ANCHORS), ("DELETE", f"{ANCHORS}/{anchor['id']}")):
        await error_of(await client.request(method, path, json={}, headers=nobody), 403, "insufficient_scope")
    # Another tenant's administrator sees none of them: its answers are those of a missing id.
    stranger = caller_token(container, *PKI_SCOPES, identity="user:eve@acme.example", tenant=OTHER_TENANT,
                            roles=("tenant_admin",))
    assert (await get(client, ANCHORS, stranger))["trust_anchors"] == []
    assert await bundle(client, stranger, "?include_internal=true&include_expired=true") == ""
    for method in ("GET", "DELETE"):
        theirs = await error_of(await client.request(method, f"{ANCHORS}/{anchor['id']}", headers=stranger), 404,
                                "trust_anchor_not_found")
        unknown = await error_of(await client.request(method, f"{ANCHORS}/ta_missing", headers=stranger), 404,
                                 "trust_anchor_not_found")
        assert theirs["message"] == unknown["message"]
    assert await event_count(container) == before
    # The tenant's own path works as the token's tenant does.
    assert len((await get(client, f"/v1/t/{TENANT}/pki/trust-anchors", admin))["trust_anchors"]) == 1


async def test_listing_pages_by_creation(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    ids = [(await add(client, admin, f"ca-{n}", external_ca(f"CA {n}")[1]))["id"] for n in range(3)]
    page = await get(client, f"{ANCHORS}?limit=2", admin)
    assert [a["id"] for a in page["trust_anchors"]] == ids[:2] and page["has_more"] is True
    rest = await get(client, f"{ANCHORS}?limit=2&cursor={page['cursor']}", admin)
    assert [a["id"] for a in rest["trust_anchors"]] == ids[2:] and rest["cursor"] is None
    await error_of(await client.get(f"{ANCHORS}?cursor=bogus", headers=admin), 400, "invalid_cursor")


async def test_bad_input_never_gets_a_500(client: TestClient, container: Container) -> None:
    admin = pki_admin(container)
    before = await event_count(container)
    bodies: list[Any] = [None, "", "[]", "null", "{", "{}", '{"name": "\\u0000", "certificate_pem": "x"}',
                         '{"name": "a", "certificate_pem": "\\ud800"}', '{"name": "a", "certificate_pem": 1e999}',
                         '{"name": "a", "certificate_pem": "-----BEGIN CERTIFICATE-----\\n"}',
                         '{"name": ' + "[" * 40 + "]" * 40 + "}"]
    for body in bodies:
        response = await client.post(ANCHORS, data=body, headers={**admin, "Content-Type": "application/json"})
        assert 400 <= response.status < 500, (body, response.status, await response.text())
    for odd in ("x" * 65, "ta_%00", "%F0%9F%92%A9", "..%2F.."):
        for method in ("GET", "DELETE"):
            response = await client.request(method, f"{ANCHORS}/{odd}", headers=admin)
            assert response.status == 404, (odd, await response.text())
    for query in ("limit=-1", "limit=x", "cursor=%00", "cursor=" + "A" * 5000):
        response = await client.get(f"{ANCHORS}?{query}", headers=admin)
        assert response.status == 400, (query, await response.text())
    assert await event_count(container) == before
