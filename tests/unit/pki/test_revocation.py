"""CRLs and OCSP answers, read back by the real `openssl crl`, `openssl verify -crl_check` and `openssl ocsp`."""

from __future__ import annotations

import dataclasses
import re
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp

from scaivault.pki.keys import KeySpec
from scaivault.pki.revocation import (
    MAX_OCSP_REQUEST_BYTES,
    REVOCATION_REASONS,
    InvalidOcspRequest,
    OcspQuery,
    RevokedEntry,
    build_crl,
    build_ocsp_response,
    crl_der,
    crl_pem,
    issuer_matches,
    ocsp_error_response,
    parse_ocsp_request,
)
from tests.unit.pki.material import NOW, PUBLICATION, SPECS, Hierarchy, hierarchy, openssl, write_pem

EC = KeySpec("ec", 256)
THIS_UPDATE = NOW - timedelta(minutes=5)
NEXT_UPDATE = NOW + timedelta(hours=12)


def crl_for(
    h: Hierarchy, *entries: RevokedEntry, distribution_point: str | None = None
) -> x509.CertificateRevocationList:
    return build_crl(h.inter, h.inter_key, entries, crl_number=7, this_update=THIS_UPDATE, next_update=NEXT_UPDATE,
                     distribution_point=distribution_point)


def verify_with_crl(tmp_path: Path, h: Hierarchy, crl: x509.CertificateRevocationList) -> str:
    (tmp_path / "crl.pem").write_text(crl_pem(crl))
    result = openssl("verify", "-crl_check", "-CAfile", write_pem(tmp_path / "root.pem", h.root),
                     "-untrusted", write_pem(tmp_path / "inter.pem", h.inter), "-CRLfile", str(tmp_path / "crl.pem"),
                     write_pem(tmp_path / "leaf.pem", h.leaf))
    if result.returncode == 0 and result.stdout.strip().endswith(": OK"):
        return "OK"
    return result.stdout + result.stderr


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_openssl_reads_the_crl_and_refuses_the_revoked_leaf(tmp_path: Path, spec: KeySpec) -> None:
    h = hierarchy(spec)
    crl = crl_for(h, RevokedEntry(h.leaf.serial_number, NOW - timedelta(minutes=10), "key_compromise"),
                  RevokedEntry(0xABCDEF, NOW - timedelta(days=1), "unspecified"))
    (tmp_path / "crl.pem").write_text(crl_pem(crl))
    text = openssl("crl", "-in", str(tmp_path / "crl.pem"), "-noout", "-text")
    assert text.returncode == 0, text.stderr
    assert re.search(r"CRL Number: *\n *7\n", text.stdout), text.stdout
    assert "Key Compromise" in text.stdout
    assert f"{h.leaf.serial_number:X}" in text.stdout.replace(":", "")
    assert "ABCDEF" in text.stdout
    assert "X509v3 Authority Key Identifier" in text.stdout
    signed = openssl("crl", "-in", str(tmp_path / "crl.pem"), "-noout",
                     "-CAfile", write_pem(tmp_path / "ca.pem", h.inter))
    assert "verify OK" in signed.stdout + signed.stderr
    assert crl.is_signature_valid(h.inter.public_key())  # type: ignore[arg-type]
    output = verify_with_crl(tmp_path, h, crl)
    assert "certificate revoked" in output, output


def test_a_crl_without_the_leaf_lets_it_pass(tmp_path: Path) -> None:
    h = hierarchy(EC)
    assert verify_with_crl(tmp_path, h, crl_for(h, RevokedEntry(12345, NOW, "superseded"))) == "OK"
    assert verify_with_crl(tmp_path, h, crl_for(h)) == "OK"


def test_crl_contents() -> None:
    h = hierarchy(EC)
    crl = crl_for(h, *[RevokedEntry(100 + i, NOW - timedelta(hours=i), reason) for i, reason in
                       enumerate(REVOCATION_REASONS)])
    assert crl.issuer == h.inter.subject
    assert crl.last_update_utc == THIS_UPDATE and crl.next_update_utc == NEXT_UPDATE
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 7
    assert (crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
            == h.inter.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest)
    with pytest.raises(x509.ExtensionNotFound):
        crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    reasons = {}
    for revoked in crl:
        try:
            reasons[revoked.serial_number] = revoked.extensions.get_extension_for_class(x509.CRLReason).value.reason
        except x509.ExtensionNotFound:
            reasons[revoked.serial_number] = None
    assert reasons[100] is None  # "unspecified" is published as no reason
    assert reasons[101] == x509.ReasonFlags.key_compromise
    assert reasons[106] == x509.ReasonFlags.certificate_hold
    assert len(reasons) == len(REVOCATION_REASONS)
    assert crl.get_revoked_certificate_by_serial_number(101).revocation_date_utc == NOW - timedelta(hours=1)  # type: ignore[union-attr]
    assert x509.load_der_x509_crl(crl_der(crl)) == crl
    assert x509.load_pem_x509_crl(crl_pem(crl).encode()) == crl


def test_a_partitioned_crl_names_its_distribution_point_and_covers_only_it(tmp_path: Path) -> None:
    h = hierarchy(EC)
    revoked = RevokedEntry(h.leaf.serial_number, NOW - timedelta(minutes=10), "privilege_withdrawn")
    crl = crl_for(h, revoked, distribution_point=PUBLICATION.crl_urls[0])
    point = crl.extensions.get_extension_for_class(x509.IssuingDistributionPoint)
    assert point.critical
    assert point.value.full_name == [x509.UniformResourceIdentifier(PUBLICATION.crl_urls[0])]
    assert "certificate revoked" in verify_with_crl(tmp_path, h, crl)
    # A partition for another distribution point says nothing about this leaf: openssl finds no CRL in scope.
    elsewhere = crl_for(h, revoked, distribution_point="http://pki.test/other.crl")
    output = verify_with_crl(tmp_path, h, elsewhere)
    assert output != "OK" and "different CRL scope" in output, output


def test_build_crl_refuses_inconsistent_input() -> None:
    h = hierarchy(EC)
    entry = RevokedEntry(5, NOW, "superseded")
    with pytest.raises(ValueError, match="twice"):
        crl_for(h, entry, entry)
    with pytest.raises(ValueError, match="reason"):
        crl_for(h, RevokedEntry(5, NOW, "bored"))
    with pytest.raises(ValueError, match="time zone"):
        crl_for(h, RevokedEntry(5, NOW.replace(tzinfo=None), "superseded"))
    with pytest.raises(ValueError):
        build_crl(h.inter, h.inter_key, [], crl_number=1, this_update=NOW, next_update=NOW)
    with pytest.raises(ValueError):
        build_crl(h.inter, h.inter_key, [], crl_number=-1, this_update=NOW, next_update=NEXT_UPDATE)
    with pytest.raises(ValueError, match="key"):
        build_crl(h.inter, h.root_key, [], crl_number=1, this_update=NOW, next_update=NEXT_UPDATE)
    with pytest.raises(ValueError, match="cRLSign"):  # a leaf is no CRL issuer
        build_crl(h.leaf, h.leaf_key, [], crl_number=1, this_update=NOW, next_update=NEXT_UPDATE)


def request_for(h: Hierarchy, algorithm: hashes.HashAlgorithm | None = None, nonce: bytes | None = None) -> bytes:
    builder = ocsp.OCSPRequestBuilder().add_certificate(h.leaf, h.inter, algorithm or hashes.SHA1())
    if nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(serialization.Encoding.DER)


def answer(h: Hierarchy, query: OcspQuery, status: str = "good", **changes: object) -> bytes:
    arguments: dict[str, object] = {
        "status": status,
        "revoked_at": None,
        "reason": None,
        "this_update": THIS_UPDATE,
        "next_update": NEXT_UPDATE,
        "certificate": h.leaf,
    }
    arguments.update(changes)
    return build_ocsp_response(query, h.inter, h.inter_key, **arguments)  # type: ignore[arg-type]


def openssl_ocsp(tmp_path: Path, h: Hierarchy, response: bytes, digest: str = "-sha1") -> tuple[int, str]:
    """openssl's reading of ``response`` as the answer about ``h.leaf`` (its CertID made with ``digest``)."""
    (tmp_path / "resp.der").write_bytes(response)
    result = openssl("ocsp", digest, "-issuer", write_pem(tmp_path / "ca.pem", h.inter),
                     "-cert", write_pem(tmp_path / "leaf.pem", h.leaf), "-respin", str(tmp_path / "resp.der"),
                     "-CAfile", write_pem(tmp_path / "chain.pem", h.inter, h.root), "-resp_text", "-no_nonce")
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_openssl_accepts_a_good_answer(tmp_path: Path, spec: KeySpec) -> None:
    h = hierarchy(spec)
    query = parse_ocsp_request(request_for(h))
    code, output = openssl_ocsp(tmp_path, h, answer(h, query))
    assert code == 0, output
    assert "Response verify OK" in output
    assert "leaf.pem: good" in output


def test_openssl_reads_a_revoked_answer_with_its_reason(tmp_path: Path) -> None:
    h = hierarchy(EC)
    query = parse_ocsp_request(request_for(h, hashes.SHA256()))
    revoked_at = NOW - timedelta(minutes=30)
    code, output = openssl_ocsp(
        tmp_path, h, answer(h, query, "revoked", revoked_at=revoked_at, reason="key_compromise"), "-sha256"
    )
    assert code == 0, output
    assert "Response verify OK" in output
    assert "leaf.pem: revoked" in output
    assert "Reason: keyCompromise" in output
    assert revoked_at.strftime("%H:%M:%S") in output.split("Revocation Time:")[1]
    parsed = ocsp.load_der_ocsp_response(answer(h, query, "revoked", revoked_at=revoked_at, reason="superseded"))
    assert parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert parsed.revocation_reason == x509.ReasonFlags.superseded
    assert parsed.revocation_time_utc == revoked_at
    unspecified = ocsp.load_der_ocsp_response(answer(h, query, "revoked", revoked_at=revoked_at, reason=None))
    assert unspecified.revocation_reason is None


def test_openssl_reads_an_unknown_answer_for_a_serial_the_ca_never_issued(tmp_path: Path) -> None:
    h = hierarchy(EC)
    query = parse_ocsp_request(request_for(h))
    code, output = openssl_ocsp(tmp_path, h, answer(h, query, "unknown", certificate=None))
    assert code == 0, output
    assert "leaf.pem: unknown" in output


def test_the_response_is_signed_by_the_ca_and_names_it_by_key_hash() -> None:
    h = hierarchy(EC)
    query = parse_ocsp_request(request_for(h))
    parsed = ocsp.load_der_ocsp_response(answer(h, query))
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.responder_name is None
    assert parsed.responder_key_hash == query.issuer_key_hash  # both SHA-1 of the CA's key
    assert parsed.serial_number == h.leaf.serial_number
    assert parsed.this_update_utc == THIS_UPDATE and parsed.next_update_utc == NEXT_UPDATE
    assert parsed.certificates == []
    issuer_key = h.inter.public_key()
    assert isinstance(issuer_key, ec.EllipticCurvePublicKey)
    issuer_key.verify(parsed.signature, parsed.tbs_response_bytes, ec.ECDSA(hashes.SHA256()))


def test_the_nonce_an_openssl_request_carries_is_echoed(tmp_path: Path) -> None:
    h = hierarchy(EC)
    write_pem(tmp_path / "ca.pem", h.inter)
    write_pem(tmp_path / "leaf.pem", h.leaf)
    made = openssl("ocsp", "-issuer", str(tmp_path / "ca.pem"), "-cert", str(tmp_path / "leaf.pem"),
                   "-reqout", str(tmp_path / "req.der"))
    assert made.returncode == 0, made.stderr
    query = parse_ocsp_request((tmp_path / "req.der").read_bytes())
    assert query.serial == h.leaf.serial_number and query.nonce is not None and len(query.nonce) == 16
    assert isinstance(query.hash_algorithm, hashes.SHA1)
    assert issuer_matches(query, h.inter)

    def check(response: bytes) -> tuple[int, str]:
        (tmp_path / "resp.der").write_bytes(response)
        result = openssl("ocsp", "-reqin", str(tmp_path / "req.der"), "-respin", str(tmp_path / "resp.der"),
                         "-CAfile", write_pem(tmp_path / "chain.pem", h.inter, h.root),
                         "-verify_other", str(tmp_path / "ca.pem"))
        return result.returncode, result.stdout + result.stderr

    code, output = check(answer(h, query))
    assert code == 0 and "Response verify OK" in output and "nonce" not in output.lower(), output
    echoed = ocsp.load_der_ocsp_response(answer(h, query)).extensions.get_extension_for_class(x509.OCSPNonce)
    assert echoed.value.nonce == query.nonce
    # openssl does notice a missing or different nonce: the check above can fail.
    assert "WARNING: no nonce in response" in check(answer(h, dataclasses.replace(query, nonce=None)))[1]
    code, output = check(answer(h, dataclasses.replace(query, nonce=b"\x00" * 16)))
    assert code != 0 and "Nonce Verify error" in output, output


def test_parse_ocsp_request_reads_the_cert_id_and_nonce() -> None:
    h = hierarchy(KeySpec("rsa", 2048))
    for algorithm in (hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()):
        query = parse_ocsp_request(request_for(h, algorithm, nonce=b"n" * 32))
        assert query.serial == h.leaf.serial_number
        assert query.hash_algorithm.name == algorithm.name
        assert query.nonce == b"n" * 32
        assert issuer_matches(query, h.inter)
        assert not issuer_matches(query, h.root)
        assert not issuer_matches(query, hierarchy(EC).inter)
    assert parse_ocsp_request(request_for(h)).nonce is None


def test_issuer_matches_needs_both_hashes() -> None:
    h = hierarchy(EC)
    query = parse_ocsp_request(request_for(h))
    assert issuer_matches(query, h.inter)
    assert not issuer_matches(dataclasses.replace(query, issuer_name_hash=b"\x00" * 20), h.inter)
    assert not issuer_matches(dataclasses.replace(query, issuer_key_hash=b"\x00" * 20), h.inter)


def test_parse_ocsp_request_refuses_garbage_several_certificates_and_long_nonces(tmp_path: Path) -> None:
    h = hierarchy(EC)
    for garbage in [b"", b"garbage", b"\x30\x00", request_for(h)[:-3], b"\x30" * (MAX_OCSP_REQUEST_BYTES + 1)]:
        with pytest.raises(InvalidOcspRequest):
            parse_ocsp_request(garbage)
    with pytest.raises(InvalidOcspRequest):
        parse_ocsp_request("not bytes")  # type: ignore[arg-type]
    with pytest.raises(InvalidOcspRequest, match="nonce"):
        parse_ocsp_request(request_for(h, nonce=b"x" * 33))
    made = openssl("ocsp", "-issuer", write_pem(tmp_path / "ca.pem", h.inter),
                   "-cert", write_pem(tmp_path / "leaf.pem", h.leaf), "-cert", write_pem(tmp_path / "i.pem", h.inter),
                   "-reqout", str(tmp_path / "two.der"))
    assert made.returncode == 0, made.stderr
    with pytest.raises(InvalidOcspRequest):
        parse_ocsp_request((tmp_path / "two.der").read_bytes())


def test_build_ocsp_response_refuses_inconsistent_answers() -> None:
    h = hierarchy(EC)
    query = parse_ocsp_request(request_for(h))
    other = hierarchy(KeySpec("ec", 384))
    with pytest.raises(ValueError, match="not about"):
        build_ocsp_response(query, other.inter, other.inter_key, status="good", revoked_at=None, reason=None,
                            this_update=THIS_UPDATE, next_update=NEXT_UPDATE, certificate=None)
    with pytest.raises(ValueError, match="key"):
        build_ocsp_response(query, h.inter, h.root_key, status="good", revoked_at=None, reason=None,
                            this_update=THIS_UPDATE, next_update=NEXT_UPDATE, certificate=None)
    bad: list[dict[str, object]] = [
        {"status": "fine"},
        {"status": "revoked"},
        {"status": "revoked", "revoked_at": NOW, "reason": "bored"},
        {"status": "good", "revoked_at": NOW},
        {"status": "unknown", "reason": "superseded"},
        {"certificate": h.inter},
        {"next_update": THIS_UPDATE},
        {"this_update": NOW.replace(tzinfo=None)},
    ]
    for changes in bad:
        with pytest.raises(ValueError):
            answer(h, query, **changes)


@pytest.mark.parametrize(
    ("kind", "status", "text"),
    [
        ("malformed_request", ocsp.OCSPResponseStatus.MALFORMED_REQUEST, "malformedrequest"),
        ("unauthorized", ocsp.OCSPResponseStatus.UNAUTHORIZED, "unauthorized"),
        ("internal_error", ocsp.OCSPResponseStatus.INTERNAL_ERROR, "internalerror"),
        ("try_later", ocsp.OCSPResponseStatus.TRY_LATER, "trylater"),
    ],
)
def test_error_responses(tmp_path: Path, kind: str, status: ocsp.OCSPResponseStatus, text: str) -> None:
    der = ocsp_error_response(kind)
    assert ocsp.load_der_ocsp_response(der).response_status == status
    (tmp_path / "err.der").write_bytes(der)
    result = openssl("ocsp", "-respin", str(tmp_path / "err.der"), "-resp_text", "-noverify")
    assert f"Responder Error: {text}" in result.stdout + result.stderr


def test_error_response_default_and_unknown_kind() -> None:
    assert ocsp.load_der_ocsp_response(ocsp_error_response()).response_status == (
        ocsp.OCSPResponseStatus.MALFORMED_REQUEST
    )
    with pytest.raises(ValueError):
        ocsp_error_response("sig_required")
