"""The internal CAs over HTTP (spec reference/pki, "Certificate Authorities"): every key type, the spec's defaults,
chains checked by ``openssl verify`` as a relying party would, externally signed intermediates, and the refusals."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scaivault.bootstrap import Container
from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT
from tests.e2e.helpers import caller_token, caught_up
from tests.e2e.pki_helpers import (
    PKI_SCOPES,
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
    post,
    write,
)


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def issue(client: TestClient, headers: dict[str, str], role: str, common_name: str,
                **fields: Any) -> dict[str, Any]:
    return await post(client, f"/v1/pki/issue/{role}", headers, {"common_name": common_name, **fields}, status=200)


def verify_chain(tmp_path: Path, root_pem: str, intermediates: list[str], leaf_pem: str) -> None:
    write(tmp_path, "root.pem", root_pem)
    write(tmp_path, "untrusted.pem", "".join(intermediates))
    write(tmp_path, "leaf.pem", leaf_pem)
    args = ["verify", "-CAfile", "root.pem"]
    if intermediates:
        args += ["-untrusted", "untrusted.pem"]
    verified = openssl(*args, "leaf.pem", cwd=tmp_path)
    assert verified.returncode == 0 and "leaf.pem: OK" in verified.stdout, verified.stdout + verified.stderr


@pytest.mark.parametrize(("key_type", "key_size", "public_type", "bits"), [
    ("rsa", 2048, rsa.RSAPublicKey, 2048),
    ("rsa", 4096, rsa.RSAPublicKey, 4096),
    ("ec", 256, ec.EllipticCurvePublicKey, 256),
    ("ec", 384, ec.EllipticCurvePublicKey, 384),
    ("ed25519", None, ed25519.Ed25519PublicKey, None),
])
async def test_each_key_type_makes_a_hierarchy_openssl_accepts(
    client: TestClient, container: Container, tmp_path: Path, key_type: str, key_size: int | None,
    public_type: type, bits: int | None,
) -> None:
    headers = pki_admin(container)
    shape: dict[str, Any] = {"key_type": key_type, **({"key_size": key_size} if key_size else {})}
    root = await create_ca(client, headers, "root", **shape)
    intermediate = await create_ca(client, headers, "inter", ca_type="intermediate", parent_ca_id=root["id"], **shape)
    assert root["key_type"] == intermediate["key_type"] == key_type
    for ca in (root, intermediate):
        pem = (await get(client, f"/v1/pki/ca/{ca['id']}/certificate", headers))["certificate_pem"]
        public_key = x509.load_pem_x509_certificate(pem.encode()).public_key()
        assert isinstance(public_key, public_type)
        if bits is not None:
            assert isinstance(public_key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
            assert public_key.key_size == bits
    await create_role(client, headers, "web", intermediate["id"], allowed_domains=["example.com"],
                      allow_subdomains=True, key_type="any")
    leaf = await issue(client, headers, "web", "www.example.com")
    root_pem = (await get(client, f"/v1/pki/ca/{root['id']}/certificate", headers))["certificate_pem"]
    assert leaf["ca_chain"][-1] == root_pem
    verify_chain(tmp_path, root_pem, leaf["ca_chain"][:1], leaf["certificate"])


async def test_the_spec_defaults(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    root = await create_ca(client, headers, "defaults-root")
    assert (root["key_type"], root["key_size"], root["ca_type"]) == ("rsa", 2048, "root")
    assert when(root["valid_until"]) - when(root["valid_from"]) == timedelta(days=3650)
    assert root["is_active"] is True and root["status"] == "active" and root["certificates_issued"] == 0
    assert root["id"].startswith("ca_") and root["parent_ca_id"] is None
    intermediate = await create_ca(client, headers, "defaults-inter", ca_type="intermediate", parent_ca_id=root["id"])
    assert when(intermediate["valid_until"]) - when(intermediate["valid_from"]) == timedelta(days=1825)
    assert intermediate["parent_ca_id"] == root["id"]
    certificate = x509.load_pem_x509_certificate(
        (await get(client, f"/v1/pki/ca/{intermediate['id']}/certificate", headers))["certificate_pem"].encode()
    )
    assert certificate.not_valid_after_utc == when(intermediate["valid_until"])
    assert certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True


async def test_an_intermediate_under_an_intermediate(client: TestClient, container: Container,
                                                     tmp_path: Path) -> None:
    headers = pki_admin(container)
    root = await create_ca(client, headers, "r", key_type="ec", key_size=256)
    first = await create_ca(client, headers, "i1", ca_type="intermediate", parent_ca_id=root["id"], key_type="ec",
                            key_size=256)
    second = await create_ca(client, headers, "i2", ca_type="intermediate", parent_ca_id=first["id"],
                             key_type="ec", key_size=256, validity_days=365)
    await create_role(client, headers, "deep", second["id"], allowed_domains=["deep.example"])
    leaf = await issue(client, headers, "deep", "deep.example")
    assert len(leaf["ca_chain"]) == 3
    verify_chain(tmp_path, leaf["ca_chain"][2], leaf["ca_chain"][:2], leaf["certificate"])
    # the CA's own document: its chain above it
    document = await get(client, f"/v1/pki/ca/{second['id']}/certificate", headers)
    assert document["ca_chain"] == leaf["ca_chain"][1:]


def openssl_root(tmp_path: Path, name: str = "ext-root") -> None:
    made = openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}", "-days", "3650",
                   "-addext", "basicConstraints=critical,CA:TRUE",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=tmp_path)
    assert made.returncode == 0, made.stderr


def openssl_sign(tmp_path: Path, csr_pem: str, out: str, *, ca: bool = True, root: str = "ext-root") -> str:
    write(tmp_path, f"{out}.csr", csr_pem)
    write(tmp_path, f"{out}.ext", "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
          if ca else "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n")
    signed = openssl("x509", "-req", "-in", f"{out}.csr", "-CA", f"{root}.pem", "-CAkey", f"{root}.key",
                     "-CAcreateserial", "-days", "1000", "-extfile", f"{out}.ext", "-out", f"{out}.pem", cwd=tmp_path)
    assert signed.returncode == 0, signed.stderr
    return (tmp_path / f"{out}.pem").read_text()


async def test_an_externally_signed_intermediate(client: TestClient, container: Container, tmp_path: Path) -> None:
    headers = pki_admin(container)
    pending = await create_ca(client, headers, "ext", ca_type="intermediate", signed_externally=True,
                              key_type="ec", key_size=256)
    assert pending["status"] == "pending_signature" and pending["is_active"] is False
    assert pending["valid_from"] is None and "csr_pem" in pending
    csr = await get(client, f"/v1/pki/ca/{pending['id']}/csr", headers)
    assert csr["csr_pem"] == pending["csr_pem"]
    # nothing is issued under a CA that has no certificate yet
    await create_role(client, headers, "ext-role", pending["id"], allowed_domains=["ext.example"],
                      allow_subdomains=True)
    await error_of(await client.post("/v1/pki/issue/ext-role", json={"common_name": "a.ext.example"},
                                     headers=headers), 409, "ca_not_active")

    openssl_root(tmp_path)
    certificate_pem = openssl_sign(tmp_path, csr["csr_pem"], "inter")
    root_pem = (tmp_path / "ext-root.pem").read_text()
    imported = await post(client, f"/v1/pki/ca/{pending['id']}/signed-certificate", headers,
                          {"certificate_pem": certificate_pem, "chain_pem": root_pem}, status=200)
    assert imported["status"] == "active" and imported["is_active"] is True and "csr_pem" not in imported
    assert imported["valid_until"] is not None
    await error_of(await client.get(f"/v1/pki/ca/{pending['id']}/csr", headers=headers), 400, "invalid_request")

    leaf = await issue(client, headers, "ext-role", "svc.ext.example")
    assert len(leaf["ca_chain"]) == 2
    assert x509.load_pem_x509_certificate(leaf["ca_chain"][0].encode()) == x509.load_pem_x509_certificate(
        certificate_pem.encode())
    assert leaf["ca_chain"][1].strip() == root_pem.strip()
    verify_chain(tmp_path, root_pem, [certificate_pem], leaf["certificate"])
    # a second import is refused: the CA is no longer waiting for one
    again = await client.post(f"/v1/pki/ca/{pending['id']}/signed-certificate", headers=headers,
                              json={"certificate_pem": certificate_pem, "chain_pem": root_pem})
    await error_of(again, 409, "ca_not_active")


async def test_imports_that_do_not_fit_change_nothing(client: TestClient, container: Container,
                                                      tmp_path: Path) -> None:
    headers = pki_admin(container)
    pending = await create_ca(client, headers, "ext", ca_type="intermediate", signed_externally=True,
                              key_type="ec", key_size=256)
    openssl_root(tmp_path)
    openssl_root(tmp_path, "stranger")
    root_pem = (tmp_path / "ext-root.pem").read_text()
    other_key_csr = openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                            "-keyout", "other.key", "-subj", "/CN=other", cwd=tmp_path)
    assert other_key_csr.returncode == 0, other_key_csr.stderr
    attempts = {
        "another key": (openssl_sign(tmp_path, other_key_csr.stdout, "other"), root_pem),
        "not a CA": (openssl_sign(tmp_path, pending["csr_pem"], "leafish", ca=False), root_pem),
        "chain does not link": (openssl_sign(tmp_path, pending["csr_pem"], "good"),
                                (tmp_path / "stranger.pem").read_text()),
        "no chain": (openssl_sign(tmp_path, pending["csr_pem"], "good2"), None),
        "garbage": ("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n", root_pem),
    }
    before = await event_count(container)
    for label, (certificate_pem, chain_pem) in attempts.items():
        body = {"certificate_pem": certificate_pem, **({"chain_pem": chain_pem} if chain_pem else {})}
        response = await client.post(f"/v1/pki/ca/{pending['id']}/signed-certificate", json=body, headers=headers)
        error = await error_of(response, 400, "invalid_certificate")
        assert "PRIVATE" not in str(error), label
    assert await event_count(container) == before
    still = await get(client, f"/v1/pki/ca/{pending['id']}", headers)
    assert still["status"] == "pending_signature" and "csr_pem" in still


async def test_refusals_when_creating_cas(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    root = await create_ca(client, headers, "root", key_type="ec", key_size=256, validity_days=30)
    before = await event_count(container)
    duplicate = await client.post("/v1/pki/ca", headers=headers,
                                  json={"name": "root", "common_name": "Again", "ca_type": "root"})
    await error_of(duplicate, 409, "ca_exists")
    outliving = await client.post("/v1/pki/ca", headers=headers, json={
        "name": "long", "common_name": "Long", "ca_type": "intermediate", "parent_ca_id": root["id"],
        "key_type": "ec", "validity_days": 31,
    })
    assert "validity_days" in fields_of(await error_of(outliving, 422, "validation_error"))
    orphan = await client.post("/v1/pki/ca", headers=headers, json={
        "name": "orphan", "common_name": "Orphan", "ca_type": "intermediate", "parent_ca_id": "ca_nope",
    })
    await error_of(orphan, 404, "ca_not_found")
    invalid: list[tuple[dict[str, Any], str]] = [
        ({"ca_type": "leaf"}, "ca_type"),
        ({"key_type": "dsa"}, "key_type"),
        ({"key_type": "rsa", "key_size": 1024}, "key_size"),
        ({"key_type": "ec", "key_size": 521}, "key_size"),
        ({"validity_days": 0}, "validity_days"),
        ({"validity_days": 36501}, "validity_days"),
        ({"ca_type": "intermediate"}, "parent_ca_id"),
        ({"parent_ca_id": root["id"]}, "parent_ca_id"),
        ({"common_name": ""}, "common_name"),
        ({"common_name": "C" * 65}, "common_name"),  # the most X.520 allows in a CN
        ({"common_name": "C" * 65, "ca_type": "intermediate", "parent_ca_id": root["id"]}, "common_name"),
        ({"common_name": "C" * 65, "ca_type": "intermediate", "signed_externally": True}, "common_name"),
        ({"name": "x\u0000y"}, "name"),
    ]
    for change, field in invalid:
        body = {"name": "bad", "common_name": "Bad", "ca_type": "root", "key_type": "ec", **change}
        response = await client.post("/v1/pki/ca", json=body, headers=headers)
        body_of = await response.json()
        assert response.status in (400, 422), (change, body_of)
        if response.status == 422:
            assert any(f.startswith(field) for f in fields_of(body_of["error"])), (change, body_of)
    for wrong_type in ({"validity_days": "10"}, {"key_size": 256.0}, {"signed_externally": "yes"}, {"extra": 1}):
        response = await client.post("/v1/pki/ca", headers=headers, json={
            "name": "typed", "common_name": "T", "ca_type": "root", **wrong_type})
        assert response.status in (400, 422), (wrong_type, await response.text())
    assert await event_count(container) == before


async def test_listing_and_reading_cas(client: TestClient, container: Container, tmp_path: Path) -> None:
    headers = pki_admin(container)
    made = [await create_ca(client, headers, f"ca-{n}", key_type="ec", key_size=256) for n in range(5)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await get(client, f"/v1/pki/ca{query}", headers)
        pages += 1
        seen += [ca["id"] for ca in page["certificate_authorities"]]
        assert len(page["certificate_authorities"]) <= 2
        cursor = page["cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
    assert pages == 3 and sorted(seen) == sorted(ca["id"] for ca in made) and len(set(seen)) == 5
    await error_of(await client.get("/v1/pki/ca?cursor=garbage", headers=headers), 400, "invalid_cursor")

    one = await get(client, f"/v1/pki/ca/{made[0]['id']}", headers)
    assert one == made[0]
    await error_of(await client.get("/v1/pki/ca/ca_missing", headers=headers), 404, "ca_not_found")

    url = f"/v1/pki/ca/{made[0]['id']}/certificate"
    as_json = await get(client, url, {})
    pem = as_json["certificate_pem"]
    assert pem.startswith("-----BEGIN CERTIFICATE-----") and as_json["ca_chain"] == []
    as_pem = await client.get(url, headers={"Accept": "application/x-pem-file"})
    assert as_pem.status == 200 and as_pem.content_type == "application/x-pem-file"
    assert await as_pem.text() == pem
    as_der = await client.get(url, headers={"Accept": "application/pkix-cert"})
    assert as_der.status == 200 and as_der.content_type == "application/pkix-cert"
    der = await as_der.read()
    assert x509.load_der_x509_certificate(der) == x509.load_pem_x509_certificate(pem.encode())
    aia = await client.get(f"{url}/der")
    assert aia.status == 200 and await aia.read() == der
    write(tmp_path, "ca.der", der)
    text = openssl("x509", "-inform", "DER", "-in", "ca.der", "-noout", "-subject", cwd=tmp_path)
    assert text.returncode == 0 and "ca-0 CA" in text.stdout
    await error_of(await client.get("/v1/pki/ca/ca_missing/certificate"), 404, "ca_not_found")


# ---- issuing, keys, certificates ------------------------------------------------------------------------------------

async def occurrences(container: Container, needles: list[str]) -> list[str]:
    """Every table (and column) of the database whose rows hold any of ``needles``: as text, or as the hex that
    bytea columns (event payloads, sealed keys, CRLs) show in a row's text form."""
    spellings = [*needles, *(needle.encode().hex() for needle in needles)]
    tables = [r["table_name"] for r in await container.pool.fetch(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
    )]
    found = []
    for table in tables:
        for spelling in spellings:
            if await container.pool.fetchval(
                f'SELECT 1 FROM "{table}" t WHERE strpos(lower(t::text), lower($1)) > 0 LIMIT 1', spelling
            ):
                found.append(table)
    return found


def key_needles(private_key_pem: str) -> list[str]:
    """Pieces of the key a leak would show: a PEM line from its middle and raw bytes of its DER (both are the key,
    not the PKCS#8 header every key shares)."""
    lines = [line for line in private_key_pem.splitlines() if not line.startswith("-----")]
    der = serialization.load_pem_private_key(private_key_pem.encode(), None).private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return [lines[len(lines) // 2][8:40], der[-24:].hex()]


@pytest.mark.parametrize("store", [False, True])
async def test_the_private_key_is_given_once_and_never_kept_in_the_clear(
    client: TestClient, container: Container, store: bool
) -> None:
    headers = pki_admin(container)
    ca = await create_ca(client, headers, "root", key_type="ec", key_size=256)
    await create_role(client, headers, "svc", ca["id"], allowed_domains=["*.svc.cluster.local"],
                      store_private_keys=store, key_type="rsa", key_bits=2048)
    issued = await issue(client, headers, "svc", "billing.svc.cluster.local")
    key = serialization.load_pem_private_key(issued["private_key"].encode(), None)
    certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        certificate.public_key().public_bytes(serialization.Encoding.DER, spki)
    assert issued["private_key_type"] == "rsa" and issued["serial_number"].count(":") >= 8
    assert int(issued["serial_number"].replace(":", ""), 16) == certificate.serial_number

    document = await get(client, f"/v1/pki/certificates/{issued['id']}", headers)
    assert document["private_key_stored"] is store and "private_key" not in document
    assert document["certificate"] == issued["certificate"]
    assert await occurrences(container, key_needles(issued["private_key"])) == []
    # the search finds what is there: the certificate itself is in the events and the read model
    certificate_line = issued["certificate"].splitlines()[5]
    assert {"scaivault_events", "scaivault_pki_certificates"} <= set(await occurrences(container, [certificate_line]))
    # nor is any CA key anywhere in the clear, nor in any answer
    listed = await client.get("/v1/pki/certificates?include_revoked=true", headers=headers)
    assert "PRIVATE KEY" not in await listed.text()
    assert "PRIVATE KEY" not in await (await client.get(f"/v1/pki/ca/{ca['id']}", headers=headers)).text()


async def test_listing_certificates(client: TestClient, container: Container) -> None:
    headers = pki_admin(container)
    first = await create_ca(client, headers, "first", key_type="ec", key_size=256)
    second = await create_ca(client, headers, "second", key_type="ec", key_size=256)
    await create_role(client, headers, "a", first["id"], allowed_domains=["a.example"], max_ttl="720h")
    await create_role(client, headers, "b", second["id"], allowed_domains=["b.example"], max_ttl="720h")
    soon = await issue(client, headers, "a", "a.example", ttl="1h")
    later = [await issue(client, headers, "a", "a.example", ttl="700h") for _ in range(3)]
    other = await issue(client, headers, "b", "b.example", ttl="2h")
    gone = await issue(client, headers, "a", "a.example", ttl="1h")
    await post(client, f"/v1/pki/certificates/{gone['id']}/revoke", headers, {"reason": "superseded"}, status=200)

    def ids(page: dict[str, Any]) -> list[str]:
        return [c["id"] for c in page["certificates"]]

    everything = await get(client, "/v1/pki/certificates", headers)
    assert sorted(ids(everything)) == sorted([soon["id"], *(c["id"] for c in later), other["id"]])
    assert {c["status"] for c in everything["certificates"]} == {"valid"}
    with_revoked = await get(client, "/v1/pki/certificates?include_revoked=true", headers)
    assert gone["id"] in ids(with_revoked) and len(ids(with_revoked)) == 6
    by_ca = await get(client, f"/v1/pki/certificates?ca_id={second['id']}", headers)
    assert ids(by_ca) == [other["id"]]
    expiring = await get(client, "/v1/pki/certificates?expiring_within=3h", headers)
    assert ids(expiring) == [soon["id"], other["id"]]  # the soonest first; the revoked one is not expiring
    expiring_here = await get(client, f"/v1/pki/certificates?expiring_within=3h&ca_id={first['id']}", headers)
    assert ids(expiring_here) == [soon["id"]]

    seen: list[str] = []
    page = await get(client, f"/v1/pki/certificates?ca_id={first['id']}&limit=2", headers)
    while True:
        seen += ids(page)
        if not page["has_more"]:
            break
        cursor = page["cursor"]
        other_filter = await client.get(f"/v1/pki/certificates?ca_id={second['id']}&limit=2&cursor={cursor}",
                                        headers=headers)
        await error_of(other_filter, 400, "invalid_cursor")
        revoked_too = await client.get(
            f"/v1/pki/certificates?ca_id={first['id']}&limit=2&include_revoked=true&cursor={cursor}", headers=headers)
        await error_of(revoked_too, 400, "invalid_cursor")
        page = await get(client, f"/v1/pki/certificates?ca_id={first['id']}&limit=2&cursor={cursor}", headers)
    assert sorted(seen) == sorted([soon["id"], *(c["id"] for c in later)])
    for bad in ("limit=0", "limit=1001", "limit=x", "expiring_within=forever", "include_revoked=maybe",
                "cursor=%00", "ca_id=" + "c" * 65):
        response = await client.get(f"/v1/pki/certificates?{bad}", headers=headers)
        assert response.status == 400, (bad, await response.text())

    one = await get(client, f"/v1/pki/certificates/{soon['id']}", headers)
    assert one["common_name"] == "a.example" and one["ca_id"] == first["id"] and one["role"] == "a"
    assert one["alt_names"] == ["a.example"] and one["source"] == "issue" and one["serial_number"] == \
        soon["serial_number"]
    pem = await client.get(f"/v1/pki/certificates/{soon['id']}/pem", headers=headers)
    assert pem.status == 200 and pem.content_type == "application/x-pem-file"
    assert await pem.text() == soon["certificate"]
    await error_of(await client.get("/v1/pki/certificates/cert_nope", headers=headers), 404, "certificate_not_found")
    await error_of(await client.get("/v1/pki/certificates/cert_nope/pem", headers=headers), 404,
                   "certificate_not_found")
    assert (await get(client, f"/v1/pki/ca/{first['id']}", headers))["certificates_issued"] == 5
    assert (await get(client, f"/v1/pki/ca/{second['id']}", headers))["certificates_issued"] == 1


# ---- scopes and tenancy ---------------------------------------------------------------------------------------------

ROUTES: list[tuple[str, str, str]] = [
    # method, path ({ca}, {role}, {cert} filled in), what it needs: "admin", "issue" or "either"
    ("GET", "/v1/pki/ca", "either"),
    ("POST", "/v1/pki/ca", "admin"),
    ("GET", "/v1/pki/ca/{ca}", "either"),
    ("GET", "/v1/pki/ca/{pending}/csr", "admin"),
    ("POST", "/v1/pki/ca/{pending}/signed-certificate", "admin"),
    ("POST", "/v1/pki/ca/{ca}/revoke", "admin"),
    ("POST", "/v1/pki/ca/{ca}/crl", "admin"),
    ("GET", "/v1/pki/roles", "either"),
    ("POST", "/v1/pki/roles", "admin"),
    ("GET", "/v1/pki/roles/{role}", "either"),
    ("PATCH", "/v1/pki/roles/{role}", "admin"),
    ("DELETE", "/v1/pki/roles/{role}", "admin"),
    ("POST", "/v1/pki/issue/{role}", "issue"),
    ("POST", "/v1/pki/sign/{role}", "issue"),
    ("GET", "/v1/pki/certificates", "either"),
    ("GET", "/v1/pki/certificates/{cert}", "either"),
    ("GET", "/v1/pki/certificates/{cert}/pem", "either"),
    ("POST", "/v1/pki/certificates/{cert}/revoke", "admin"),
]


async def fixtures(client: TestClient, container: Container) -> dict[str, str]:
    headers = pki_admin(container)
    ca = await create_ca(client, headers, "root", key_type="ec", key_size=256)
    pending = await create_ca(client, headers, "pending", ca_type="intermediate", signed_externally=True,
                              key_type="ec", key_size=256)
    await create_role(client, headers, "svc", ca["id"], allowed_domains=["*.svc.cluster.local"])
    cert = await issue(client, headers, "svc", "a.svc.cluster.local")
    ca_pem = (await get(client, f"/v1/pki/ca/{ca['id']}/certificate", {}))["certificate_pem"]
    return {"ca": ca["id"], "pending": pending["id"], "role": "svc", "cert": cert["id"], "ca_pem": ca_pem,
            "csr": make_csr(make_key(), "d.svc.cluster.local")}


def valid_body(path: str, ids: dict[str, str]) -> dict[str, Any]:
    """A body the route would accept, so what answers is the authorization, not the validation."""
    if path.endswith("/signed-certificate"):
        return {"certificate_pem": ids["ca_pem"]}
    if path == "/v1/pki/ca":
        return {"name": "another", "common_name": "Another", "ca_type": "root", "key_type": "ec"}
    if path == "/v1/pki/roles":
        return {"name": "another", "ca_id": ids["ca"], "allowed_domains": ["x.example"]}
    if path.startswith("/v1/pki/roles/"):
        return {"ttl": "1h"}
    if path.startswith("/v1/pki/issue/"):
        return {"common_name": "c.svc.cluster.local"}
    if path.startswith("/v1/pki/sign/"):
        return {"csr_pem": ids["csr"]}
    return {}


async def call(client: TestClient, method: str, path: str, ids: dict[str, str], headers: dict[str, str]) -> Any:
    return await client.request(method, path.format(**ids), json=valid_body(path, ids), headers=headers)


async def test_each_route_needs_its_scope(client: TestClient, container: Container) -> None:
    ids = await fixtures(client, container)
    before = await event_count(container)
    no_pki = caller_token(container, "secrets:read", "secrets:write", identity="user:admin@acme.example",
                          roles=("tenant_admin",))
    only_issue = caller_token(container, "pki:issue", identity="user:admin@acme.example", roles=("tenant_admin",))
    only_admin = caller_token(container, "pki:admin", identity="user:admin@acme.example", roles=("tenant_admin",))
    for method, path, needs in ROUTES:
        await error_of(await call(client, method, path, ids, no_pki), 403, "insufficient_scope")
        await error_of(await call(client, method, path, ids, {}), 401, "authentication_required")
        if needs == "admin":
            await error_of(await call(client, method, path, ids, only_issue), 403, "insufficient_scope")
        if needs == "issue":
            await error_of(await call(client, method, path, ids, only_admin), 403, "insufficient_scope")
    # the scope is not enough to manage (reading is): that takes the tenant's admin role too
    workload = caller_token(container, *PKI_SCOPES, identity="sa:robot")
    for method, path, needs in ROUTES:
        if needs == "admin" and method != "GET":
            await error_of(await call(client, method, path, ids, workload), 403, "access_denied")
    assert await event_count(container) == before
    # what a holder of pki:issue and no role can do: issue and read
    issued = await issue(client, workload, "svc", "b.svc.cluster.local")
    assert (await get(client, f"/v1/pki/certificates/{issued['id']}", workload))["status"] == "valid"
    assert (await get(client, "/v1/pki/roles/svc", workload))["name"] == "svc"


async def test_public_routes_need_no_token(client: TestClient, container: Container, tmp_path: Path) -> None:
    ids = await fixtures(client, container)
    for path in (f"/v1/pki/ca/{ids['ca']}/certificate", f"/v1/pki/ca/{ids['ca']}/certificate/der",
                 f"/v1/pki/ca/{ids['ca']}/crl", f"/v1/pki/ca/{ids['ca']}/crl/2026-w01"):
        response = await client.get(path)
        assert response.status == 200, (path, await response.text())
    ocsp = await client.post(f"/v1/pki/ca/{ids['ca']}/ocsp", data=b"x",
                             headers={"Content-Type": "application/ocsp-request"})
    assert ocsp.status == 200 and ocsp.content_type == "application/ocsp-response"
    # a CA waiting for its certificate has none to publish
    await error_of(await client.get(f"/v1/pki/ca/{ids['pending']}/certificate"), 404, "ca_not_found")


async def test_another_tenants_pki_is_missing(client: TestClient, container: Container) -> None:
    ids = await fixtures(client, container)
    stranger = pki_admin(container, tenant=OTHER_TENANT)
    foreign = pki_admin(container, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    before = await event_count(container)
    missing = {**ids, "ca": "ca_01nothinghere0000000000000", "pending": "ca_01nothinghere0000000000001",
               "role": "nope", "cert": "cert_01nothinghere00000000000"}
    for headers in (stranger, foreign):
        assert (await get(client, "/v1/pki/ca", headers))["certificate_authorities"] == []
        assert (await get(client, "/v1/pki/roles", headers))["roles"] == []
        assert (await get(client, "/v1/pki/certificates?include_revoked=true", headers))["certificates"] == []
        for method, path, _ in ROUTES:
            if "{" not in path:
                continue
            theirs = await call(client, method, path, ids, headers)
            absent = await call(client, method, path, missing, headers)
            theirs_body, absent_body = await theirs.json(), await absent.json()
            assert theirs.status == absent.status == 404, (method, path, theirs_body)
            assert theirs_body["error"]["code"] == absent_body["error"]["code"], (method, path)
            assert theirs_body["error"]["message"] == absent_body["error"]["message"], (method, path)
        # naming another tenant's CA as a parent or a role's CA: as unknown as a missing one
        await error_of(await client.post("/v1/pki/roles", headers=headers, json={
            "name": "steal", "ca_id": ids["ca"], "allowed_domains": ["x.example"]}), 404, "ca_not_found")
        await error_of(await client.post("/v1/pki/ca", headers=headers, json={
            "name": "steal", "common_name": "S", "ca_type": "intermediate", "parent_ca_id": ids["ca"]}), 404,
            "ca_not_found")
    assert await event_count(container) == before
    # the same role name in another tenant is that tenant's own role
    theirs = await create_ca(client, stranger, "root", key_type="ec", key_size=256)
    await create_role(client, stranger, "svc", theirs["id"], allowed_domains=["*.svc.cluster.local"])
    mine = await issue(client, stranger, "svc", "a.svc.cluster.local")
    assert mine["ca_chain"][-1] != (await get(client, f"/v1/pki/ca/{ids['ca']}/certificate", {}))["certificate_pem"]


# ---- bad input ------------------------------------------------------------------------------------------------------

async def test_bad_input_gets_the_envelope_and_appends_nothing(client: TestClient, container: Container) -> None:
    ids = await fixtures(client, container)
    headers = pki_admin(container)
    before = await event_count(container)
    posts = ["/v1/pki/ca", f"/v1/pki/ca/{ids['pending']}/signed-certificate", f"/v1/pki/ca/{ids['ca']}/revoke",
             "/v1/pki/roles", "/v1/pki/issue/svc", "/v1/pki/sign/svc", f"/v1/pki/certificates/{ids['cert']}/revoke"]
    for path in posts:
        for raw, status, code in (
            (b"{not json", 400, "invalid_request"),
            (b"[]", 400, "invalid_request"),
            (b"", 400, "invalid_request"),
            (b'{"a": "\\ud800"}', 422, "validation_error"),
            (b"{" + b'"x":{' * 40 + b"}" * 41, 422, "validation_error"),
            (b'{"x": "' + b"a" * (600 * 1024) + b'"}', 413, "payload_too_large"),
        ):
            response = await client.post(path, data=raw, headers={**headers, "Content-Type": "application/json"})
            await error_of(response, status, code)
    wrong = [
        ("/v1/pki/ca", {"name": 5, "common_name": "x", "ca_type": "root"}),
        ("/v1/pki/ca", {"name": "n", "common_name": "x", "ca_type": "root", "surprise": True}),
        ("/v1/pki/roles", {"name": "r", "ca_id": 5, "allowed_domains": ["x.example"]}),
        ("/v1/pki/issue/svc", {"common_name": 5}),
        ("/v1/pki/issue/svc", {"common_name": "a.svc.cluster.local", "alt_names": "b.svc.cluster.local"}),
        ("/v1/pki/issue/svc", {"common_name": "a.svc.cluster.local", "ttl": 60}),
        ("/v1/pki/issue/svc", {"common_name": "a.svc.cluster.local", "key_type": "rsa"}),
        ("/v1/pki/issue/svc", {"common_name": "a.svc.cluster.local", "alt_names": ["x.svc.cluster.local"] * 101}),
        ("/v1/pki/sign/svc", {"csr_pem": 5}),
        ("/v1/pki/sign/svc", {"common_name": "a.svc.cluster.local"}),
        (f"/v1/pki/certificates/{ids['cert']}/revoke", {"reason": 5}),
        (f"/v1/pki/ca/{ids['pending']}/signed-certificate", {"certificate_pem": ["x"]}),
    ]
    for path, body in wrong:
        response = await client.post(path, json=body, headers=headers)
        document = await response.json()
        assert response.status in (400, 422) and document["error"]["code"] in (
            "invalid_request", "validation_error"), (path, body, document)
    patch = await client.patch("/v1/pki/roles/svc", data=b"{oops", headers={**headers,
                                                                           "Content-Type": "application/json"})
    await error_of(patch, 400, "invalid_request")
    for path, code in (("/v1/pki/ca/ca_x%00y", "ca_not_found"), ("/v1/pki/roles/svc%00", "role_not_found"),
                       ("/v1/pki/certificates/cert%00", "certificate_not_found"),
                       ("/v1/pki/ca/ca_x%00y/certificate", "ca_not_found"), ("/v1/pki/ca/ca_x%00y/crl", "ca_not_found"),
                       (f"/v1/pki/ca/{'c' * 300}", "ca_not_found")):
        await error_of(await client.get(path, headers=headers), 404, code)
    await error_of(await client.post("/v1/pki/issue/svc%00", json={"common_name": "a.svc.cluster.local"},
                                     headers=headers), 404, "role_not_found")
    nul_ocsp = await client.post("/v1/pki/ca/ca_x%00y/ocsp", data=b"x")
    assert nul_ocsp.status in (200, 404)
    assert await event_count(container) == before


# ---- audit ----------------------------------------------------------------------------------------------------------

async def test_issuing_is_in_the_audit_log_without_the_key(client: TestClient, container: Container) -> None:
    ids = await fixtures(client, container)
    headers = pki_admin(container)
    issued = await issue(client, headers, "svc", "audited.svc.cluster.local")
    refused = await client.post("/v1/pki/issue/svc", json={"common_name": "evil.com"}, headers=headers)
    assert refused.status == 422
    await caught_up(container)
    auditor = caller_token(container, "audit:read", identity="user:auditor@acme.example", roles=("tenant_admin",))
    response = await client.get("/v1/audit/logs?action=pki_issue", headers=auditor)
    body = await response.json()
    assert response.status == 200, body
    entries = {entry["request_id"]: entry for entry in body["logs"]}
    entry = entries[issued_request_id(issued, body)]
    assert entry["success"] is True and entry["extra_data"]["certificate_id"] == issued["id"]
    assert entry["extra_data"]["serial_number"] == issued["serial_number"] and entry["extra_data"]["role"] == "svc"
    failed = entries[refused.headers["X-Request-ID"]]
    assert failed["success"] is False and failed["error_code"] == "validation_error"
    assert {e["action"] for e in body["logs"]} == {"pki_issue"} and len(body["logs"]) == 3  # fixtures issued one
    text = await response.text()
    assert "PRIVATE KEY" not in text and key_needles(issued["private_key"])[0] not in text
    assert ids["cert"] in text


def issued_request_id(issued: dict[str, Any], body: dict[str, Any]) -> str:
    return next(e["request_id"] for e in body["logs"] if e.get("extra_data", {}).get("certificate_id") == issued["id"])
