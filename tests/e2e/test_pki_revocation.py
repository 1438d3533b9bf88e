"""Revocation over HTTP, as relying parties see it: certificate status in the API, CRLs read by ``openssl crl`` and
``openssl verify -crl_check``, OCSP answers read by ``openssl ocsp``, and the cascade of revoking a CA."""

from __future__ import annotations

import asyncio
import base64
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from aiohttp.test_utils import TestClient
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509 import ocsp

from scaivault.bootstrap import Container
from scaivault.pki.revocation import REVOCATION_REASONS
from tests.e2e.pki_helpers import (
    create_ca,
    create_role,
    error_of,
    event_count,
    fields_of,
    get,
    openssl,
    pki_admin,
    pki_issuer,
    post,
    write,
)

OPENSSL_REASONS = {
    "key_compromise": "Key Compromise", "ca_compromise": "CA Compromise", "affiliation_changed": "Affiliation Changed",
    "superseded": "Superseded", "cessation_of_operation": "Cessation Of Operation",
    "certificate_hold": "Certificate Hold", "privilege_withdrawn": "Privilege Withdrawn",
    "aa_compromise": "AA Compromise",
}
CRYPTOGRAPHY_REASONS = {
    "key_compromise": x509.ReasonFlags.key_compromise, "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed, "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn, "aa_compromise": x509.ReasonFlags.aa_compromise,
}


def when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def hierarchy(client: TestClient, headers: dict[str, str], tmp_path: Path, prefix: str = "") -> dict[str, Any]:
    root = await create_ca(client, headers, f"{prefix}root", key_type="ec", key_size=256)
    inter = await create_ca(client, headers, f"{prefix}inter", ca_type="intermediate", parent_ca_id=root["id"],
                            key_type="ec", key_size=256)
    await create_role(client, headers, f"{prefix}svc", inter["id"], allowed_domains=["*.svc.cluster.local"],
                      max_ttl="720h")
    root_pem = (await get(client, f"/v1/pki/ca/{root['id']}/certificate", {}))["certificate_pem"]
    inter_pem = (await get(client, f"/v1/pki/ca/{inter['id']}/certificate", {}))["certificate_pem"]
    write(tmp_path, f"{prefix}root.pem", root_pem)
    write(tmp_path, f"{prefix}inter.pem", inter_pem)
    write(tmp_path, f"{prefix}chain.pem", root_pem + inter_pem)
    return {"root": root, "inter": inter, "role": f"{prefix}svc"}


async def issue(client: TestClient, container: Container, role: str, name: str, **fields: Any) -> dict[str, Any]:
    return await post(client, f"/v1/pki/issue/{role}", pki_issuer(container), {"common_name": name, **fields},
                      status=200)


async def crl_of(client: TestClient, path: str) -> x509.CertificateRevocationList:
    response = await client.get(path)  # no token: relying parties fetch CRLs anonymously
    assert response.status == 200 and response.content_type == "application/pkix-crl", await response.text()
    return x509.load_der_x509_crl(await response.read())


def crl_number(crl: x509.CertificateRevocationList) -> int:
    return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number


def serial(certificate_pem: str) -> int:
    return x509.load_pem_x509_certificate(certificate_pem.encode()).serial_number


async def test_revocation_reasons_and_the_crls(client: TestClient, container: Container, tmp_path: Path) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    inter = made["inter"]
    crl_path = f"/v1/pki/ca/{inter['id']}/crl"
    number = crl_number(await crl_of(client, crl_path))
    certificates = {}
    for reason in REVOCATION_REASONS:
        issued = await issue(client, container, made["role"], f"{reason.replace('_', '-')}.svc.cluster.local")
        revoked = await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", admin, {"reason": reason},
                             status=200)
        assert revoked["status"] == "revoked" and revoked["revocation_reason"] == reason
        again = await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", admin,
                           {"reason": "superseded"}, status=200)
        assert again["revoked_at"] == revoked["revoked_at"] and again["revocation_reason"] == reason
        crl = await crl_of(client, crl_path)
        assert crl_number(crl) > number  # every revocation re-signs the CRL with a higher number
        number = crl_number(crl)
        certificates[reason] = issued
    untouched = await issue(client, container, made["role"], "fine.svc.cluster.local")

    crl = await crl_of(client, crl_path)
    for reason, issued in certificates.items():
        entry = crl.get_revoked_certificate_by_serial_number(serial(issued["certificate"]))
        assert entry is not None, reason
        reasons = [e.value.reason for e in entry.extensions if isinstance(e.value, x509.CRLReason)]
        assert reasons == ([CRYPTOGRAPHY_REASONS[reason]] if reason != "unspecified" else []) or \
            reasons == [x509.ReasonFlags.unspecified], (reason, reasons)
    assert crl.get_revoked_certificate_by_serial_number(serial(untouched["certificate"])) is None
    issuer_certificate = x509.load_pem_x509_certificate((tmp_path / "inter.pem").read_bytes())
    assert crl.is_signature_valid(issuer_certificate.public_key())  # type: ignore[arg-type]

    write(tmp_path, "crl.der", crl.public_bytes(serialization.Encoding.DER))
    text = openssl("crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text", "-CAfile", "inter.pem",
                   cwd=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "verify OK" in text.stderr + text.stdout
    for label in OPENSSL_REASONS.values():
        assert label in text.stdout, label
    as_pem = await client.get(crl_path, headers={"Accept": "application/x-pem-file"})
    assert as_pem.status == 200 and (await as_pem.text()).startswith("-----BEGIN X509 CRL-----")

    unknown = await client.post(f"/v1/pki/certificates/{untouched['id']}/revoke", json={"reason": "bored"},
                                headers=admin)
    assert fields_of(await error_of(unknown, 422, "validation_error")) == ["reason"]
    missing = await client.post("/v1/pki/certificates/cert_nope/revoke", json={}, headers=admin)
    await error_of(missing, 404, "certificate_not_found")
    assert (await get(client, f"/v1/pki/certificates/{untouched['id']}", admin))["status"] == "valid"

    published = await post(client, f"/v1/pki/ca/{inter['id']}/crl", admin, {}, status=200)
    assert published["crl_number"] > number and published["entries"] == len(REVOCATION_REASONS)
    assert when(published["next_update"]) - when(published["this_update"]) == timedelta(days=3)
    forced = x509.load_pem_x509_crl(published["crl_pem"].encode())
    assert crl_number(forced) == published["crl_number"] and len(list(forced)) == len(REVOCATION_REASONS)
    assert crl_number(await crl_of(client, crl_path)) == published["crl_number"]


async def test_the_distribution_point_in_a_certificate_serves_its_crl(
    client: TestClient, container: Container, tmp_path: Path
) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    issued = await issue(client, container, made["role"], "billing.svc.cluster.local")
    certificate = x509.load_pem_x509_certificate(issued["certificate"].encode())
    points = certificate.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert points[0].full_name is not None
    url = points[0].full_name[0].value
    path = urlsplit(url).path
    assert path.startswith(f"/v1/pki/ca/{made['inter']['id']}/crl/") and path.rsplit("/", 1)[1].count("-w") == 1
    aia = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    locations = {d.access_method.dotted_string: urlsplit(d.access_location.value).path for d in aia}
    assert f"/v1/pki/ca/{made['inter']['id']}/ocsp" in locations.values()
    ca_issuer = [p for p in locations.values() if p.endswith("/certificate/der")]
    assert ca_issuer and (await client.get(ca_issuer[0])).status == 200

    before = await crl_of(client, path)  # no revocation in this partition yet: the complete CRL answers
    assert before.get_revoked_certificate_by_serial_number(certificate.serial_number) is None
    await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", admin, {"reason": "superseded"}, status=200)
    partition = await crl_of(client, path)
    assert partition.get_revoked_certificate_by_serial_number(certificate.serial_number) is not None
    assert crl_number(partition) > crl_number(before)
    idp = partition.extensions.get_extension_for_class(x509.IssuingDistributionPoint).value
    assert idp.full_name is not None and idp.full_name[0].value == url

    write(tmp_path, "leaf.pem", issued["certificate"])
    write(tmp_path, "partition.pem", partition.public_bytes(serialization.Encoding.PEM))
    checked = openssl("verify", "-crl_check", "-CAfile", "chain.pem", "-CRLfile", "partition.pem", "leaf.pem",
                      cwd=tmp_path)
    assert checked.returncode != 0 and "revoked" in checked.stdout + checked.stderr
    await error_of(await client.get(f"/v1/pki/ca/{made['inter']['id']}/crl/{'x' * 17}"), 404, "ca_not_found")
    await error_of(await client.get("/v1/pki/ca/ca_nope/crl"), 404, "ca_not_found")


async def test_expired_revoked_certificates_leave_new_crls(client: TestClient, container: Container,
                                                           tmp_path: Path) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    short = await issue(client, container, made["role"], "brief.svc.cluster.local", ttl="2s")
    lasting = await issue(client, container, made["role"], "lasting.svc.cluster.local")
    for issued in (short, lasting):
        await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", admin, {"reason": "superseded"}, status=200)
    crl = await crl_of(client, f"/v1/pki/ca/{made['inter']['id']}/crl")
    assert crl.get_revoked_certificate_by_serial_number(serial(short["certificate"])) is not None
    await asyncio.sleep(max(0.0, (when(short["not_after"]) - datetime.now(when(short["not_after"]).tzinfo))
                            .total_seconds()) + 1.1)
    published = await post(client, f"/v1/pki/ca/{made['inter']['id']}/crl", admin, {}, status=200)
    fresh = x509.load_pem_x509_crl(published["crl_pem"].encode())
    assert fresh.get_revoked_certificate_by_serial_number(serial(short["certificate"])) is None
    assert fresh.get_revoked_certificate_by_serial_number(serial(lasting["certificate"])) is not None
    assert published["entries"] == 1
    listed = await get(client, f"/v1/pki/certificates?include_revoked=true&ca_id={made['inter']['id']}", admin)
    assert {c["id"]: c["status"] for c in listed["certificates"]}[short["id"]] == "revoked"


# ---- OCSP -----------------------------------------------------------------------------------------------------------

def ocsp_request(tmp_path: Path, issuer: str, *target: str, nonce: bool = True, out: str = "req.der") -> bytes:
    made = openssl("ocsp", "-issuer", issuer, *target, "-reqout", out, *(() if nonce else ("-no_nonce",)),
                   cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    return (tmp_path / out).read_bytes()


async def ask(client: TestClient, ca_id: str, request: bytes, *, method: str = "POST") -> bytes:
    if method == "POST":
        response = await client.post(f"/v1/pki/ca/{ca_id}/ocsp", data=request,
                                     headers={"Content-Type": "application/ocsp-request"})
    elif method == "GET-urlsafe":
        encoded = base64.urlsafe_b64encode(request).decode().rstrip("=")
        response = await client.get(f"/v1/pki/ca/{ca_id}/ocsp/{encoded}")
    else:  # RFC 6960 A.1: base64, then URL-encoded
        encoded = quote(base64.b64encode(request).decode(), safe="")
        response = await client.get(f"/v1/pki/ca/{ca_id}/ocsp/{encoded}")
    assert response.status == 200 and response.content_type == "application/ocsp-response", await response.text()
    return await response.read()


def read_answer(tmp_path: Path, answer: bytes, *args: str) -> str:
    write(tmp_path, "resp.der", answer)
    shown = openssl("ocsp", "-respin", "resp.der", "-resp_text", *args, cwd=tmp_path)
    return shown.stdout + shown.stderr


async def test_ocsp_answers(client: TestClient, container: Container, tmp_path: Path) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    other = await hierarchy(client, admin, tmp_path, prefix="other-")
    inter_id = made["inter"]["id"]
    good = await issue(client, container, made["role"], "good.svc.cluster.local")
    bad = await issue(client, container, made["role"], "bad.svc.cluster.local")
    foreign = await issue(client, container, other["role"], "foreign.svc.cluster.local")
    await post(client, f"/v1/pki/certificates/{bad['id']}/revoke", admin, {"reason": "key_compromise"}, status=200)
    write(tmp_path, "good.pem", good["certificate"])
    write(tmp_path, "bad.pem", bad["certificate"])
    write(tmp_path, "foreign.pem", foreign["certificate"])

    for method in ("POST", "GET-urlsafe", "GET"):
        for nonce in (True, False):
            request = ocsp_request(tmp_path, "inter.pem", "-cert", "good.pem", nonce=nonce)
            answer = await ask(client, inter_id, request, method=method)
            shown = read_answer(tmp_path, answer, "-issuer", "inter.pem", "-cert", "good.pem", "-CAfile", "chain.pem",
                                "-no_nonce")  # openssl would compare with a nonce of its own: -reqin below
            assert "good.pem: good" in shown and "Response verify OK" in shown, (method, nonce, shown)
            shown = read_answer(tmp_path, answer, "-reqin", "req.der", "-VAfile", "inter.pem")
            assert "Response verify OK" in shown and "Nonce Verify error" not in shown, shown
            assert ("no nonce in response" in shown) is False or not nonce, shown
            echoed = ocsp.load_der_ocsp_response(answer).extensions
            asked = ocsp.load_der_ocsp_request(request).extensions
            if nonce:
                assert echoed.get_extension_for_class(x509.OCSPNonce).value.nonce == \
                    asked.get_extension_for_class(x509.OCSPNonce).value.nonce
            else:
                assert not any(isinstance(e.value, x509.OCSPNonce) for e in echoed)

            request = ocsp_request(tmp_path, "inter.pem", "-cert", "bad.pem", nonce=nonce)
            answer = await ask(client, inter_id, request, method=method)
            shown = read_answer(tmp_path, answer, "-issuer", "inter.pem", "-cert", "bad.pem", "-VAfile", "inter.pem",
                                "-no_nonce")
            assert "bad.pem: revoked" in shown and "keyCompromise" in shown and "Response verify OK" in shown, shown

    request = ocsp_request(tmp_path, "inter.pem", "-serial", "0x1234abcd", nonce=False)
    shown = read_answer(tmp_path, await ask(client, inter_id, request), "-issuer", "inter.pem", "-serial",
                        "0x1234abcd", "-CAfile", "chain.pem")
    assert "0x1234abcd: unknown" in shown and "Response verify OK" in shown, shown

    for garbage in (b"", b"garbage", b"\x30\x03\x02\x01\x00", b"\x00" * 100):
        answer = await ask(client, inter_id, garbage)
        assert ocsp.load_der_ocsp_response(answer).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        assert "malformedrequest" in read_answer(tmp_path, answer).lower()
    answer = await ask(client, inter_id, b"not base64 at all!", method="GET-urlsafe")
    assert ocsp.load_der_ocsp_response(answer).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    huge = await client.post(f"/v1/pki/ca/{inter_id}/ocsp", data=b"\x30" * (64 * 1024),
                             headers={"Content-Type": "application/ocsp-request"})
    assert huge.status == 200
    assert ocsp.load_der_ocsp_response(await huge.read()).response_status != ocsp.OCSPResponseStatus.SUCCESSFUL

    # another CA's certificate, asked of this CA: not ours to answer for
    request = ocsp_request(tmp_path, "other-inter.pem", "-cert", "foreign.pem", nonce=False)
    answer = await ask(client, inter_id, request)
    assert ocsp.load_der_ocsp_response(answer).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED
    assert "unauthorized" in read_answer(tmp_path, answer).lower()
    answer = await ask(client, "ca_missing", request)
    assert ocsp.load_der_ocsp_response(answer).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


# ---- revoking CAs ---------------------------------------------------------------------------------------------------

async def ocsp_status(client: TestClient, tmp_path: Path, ca_id: str, issuer: str, leaf: str) -> str:
    request = ocsp_request(tmp_path, issuer, "-cert", leaf, nonce=False)
    answer = ocsp.load_der_ocsp_response(await ask(client, ca_id, request))
    assert answer.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    return answer.certificate_status.name.lower()


async def test_revoking_an_intermediate(client: TestClient, container: Container, tmp_path: Path) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    root, inter = made["root"], made["inter"]
    leaf = await issue(client, container, made["role"], "billing.svc.cluster.local")
    write(tmp_path, "leaf.pem", leaf["certificate"])
    assert await ocsp_status(client, tmp_path, inter["id"], "inter.pem", "leaf.pem") == "good"
    root_number = crl_number(await crl_of(client, f"/v1/pki/ca/{root['id']}/crl"))

    revoked = await post(client, f"/v1/pki/ca/{inter['id']}/revoke", admin, {"reason": "retired"}, status=200)
    assert revoked["status"] == "revoked" and revoked["is_active"] is False and revoked["certificates_revoked"] == 1
    assert revoked["revocation_reason"] == "retired" and revoked["revoked_at"] is not None
    assert (await get(client, f"/v1/pki/certificates/{leaf['id']}", admin))["status"] == "revoked"
    assert await ocsp_status(client, tmp_path, inter["id"], "inter.pem", "leaf.pem") == "revoked"
    refused = await client.post(f"/v1/pki/issue/{made['role']}", headers=pki_issuer(container),
                                json={"common_name": "new.svc.cluster.local"})
    await error_of(refused, 409, "ca_not_active")
    child = await client.post("/v1/pki/ca", headers=admin, json={
        "name": "under-revoked", "common_name": "X", "ca_type": "intermediate", "parent_ca_id": inter["id"]})
    await error_of(child, 409, "ca_not_active")
    again = await post(client, f"/v1/pki/ca/{inter['id']}/revoke", admin, {}, status=200)
    assert again["revoked_at"] == revoked["revoked_at"] and again["certificates_revoked"] == 0

    root_crl = await crl_of(client, f"/v1/pki/ca/{root['id']}/crl")
    assert crl_number(root_crl) > root_number
    assert root_crl.get_revoked_certificate_by_serial_number(serial((tmp_path / "inter.pem").read_text()))
    write(tmp_path, "root-crl.der", await (await client.get(f"/v1/pki/ca/{root['id']}/crl")).read())
    write(tmp_path, "inter-crl.der", await (await client.get(f"/v1/pki/ca/{inter['id']}/crl")).read())
    for name in ("root-crl", "inter-crl"):
        converted = openssl("crl", "-inform", "DER", "-in", f"{name}.der", "-out", f"{name}.pem", cwd=tmp_path)
        assert converted.returncode == 0, converted.stderr
    write(tmp_path, "crls.pem", (tmp_path / "root-crl.pem").read_text() + (tmp_path / "inter-crl.pem").read_text())
    checked = openssl("verify", "-crl_check_all", "-CAfile", "chain.pem", "-CRLfile", "crls.pem", "leaf.pem",
                      cwd=tmp_path)
    assert checked.returncode != 0 and "certificate revoked" in checked.stdout + checked.stderr, checked
    # the root itself still stands, and its CRL verifies
    assert (await get(client, f"/v1/pki/ca/{root['id']}", admin))["is_active"] is True


async def test_revoking_a_root_revokes_everything_under_it(client: TestClient, container: Container,
                                                           tmp_path: Path) -> None:
    admin = pki_admin(container)
    made = await hierarchy(client, admin, tmp_path)
    root, inter = made["root"], made["inter"]
    deeper = await create_ca(client, admin, "deeper", ca_type="intermediate", parent_ca_id=inter["id"],
                             key_type="ec", key_size=256, validity_days=365)
    await create_role(client, admin, "deep", deeper["id"], allowed_domains=["*.svc.cluster.local"])
    leaves = [await issue(client, container, made["role"], f"l{n}.svc.cluster.local") for n in range(2)]
    deep_leaf = await issue(client, container, "deep", "deep.svc.cluster.local")
    unrelated = await hierarchy(client, admin, tmp_path, prefix="other-")
    survivor = await issue(client, container, unrelated["role"], "ok.svc.cluster.local")

    revoked = await post(client, f"/v1/pki/ca/{root['id']}/revoke", admin, {"reason": "compromised"}, status=200)
    assert revoked["status"] == "revoked" and revoked["certificates_revoked"] == 3
    for ca in (inter, deeper):
        document = await get(client, f"/v1/pki/ca/{ca['id']}", admin)
        assert document["status"] == "revoked" and document["is_active"] is False
    for issued in (*leaves, deep_leaf):
        assert (await get(client, f"/v1/pki/certificates/{issued['id']}", admin))["status"] == "revoked"
    write(tmp_path, "l0.pem", leaves[0]["certificate"])
    assert await ocsp_status(client, tmp_path, inter["id"], "inter.pem", "l0.pem") == "revoked"
    write(tmp_path, "deeper.pem", (await get(client, f"/v1/pki/ca/{deeper['id']}/certificate", {}))["certificate_pem"])
    write(tmp_path, "deep.pem", deep_leaf["certificate"])
    assert await ocsp_status(client, tmp_path, deeper["id"], "deeper.pem", "deep.pem") == "revoked"
    for role in (made["role"], "deep"):
        refused = await client.post(f"/v1/pki/issue/{role}", headers=pki_issuer(container),
                                    json={"common_name": "x.svc.cluster.local"})
        await error_of(refused, 409, "ca_not_active")
    before = await event_count(container)
    await error_of(await client.post(f"/v1/pki/ca/{root['id']}/crl", headers=admin, json={}), 409, "ca_not_active")
    assert await event_count(container) == before
    assert (await get(client, f"/v1/pki/certificates/{survivor['id']}", admin))["status"] == "valid"
    assert (await get(client, f"/v1/pki/ca/{unrelated['root']['id']}", admin))["is_active"] is True
    listed = await get(client, "/v1/pki/certificates", admin)
    assert [c["id"] for c in listed["certificates"]] == [survivor["id"]]


async def test_revoking_a_certificate_its_ca_revoked_already_changes_nothing(
    client: TestClient, container: Container
) -> None:
    headers = pki_admin(container)
    ca = await create_ca(client, headers, "lone", key_type="ec")
    await create_role(client, headers, "svc", ca["id"], allowed_domains=["*.svc.local"])
    issued = await post(client, "/v1/pki/issue/svc", headers, {"common_name": "a.svc.local"}, status=200)
    await post(client, f"/v1/pki/ca/{ca['id']}/revoke", headers, {"reason": "retired"}, status=200)
    before = await event_count(container)
    again = await post(client, f"/v1/pki/certificates/{issued['id']}/revoke", headers, {"reason": "superseded"},
                       status=200)
    assert again["status"] == "revoked" and again["revocation_reason"] == "ca_compromise"
    assert await event_count(container) == before
