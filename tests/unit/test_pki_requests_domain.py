"""The CSR request and trust anchor aggregates (scaivault.domain.pki_requests): a request is decided once, never by
its requester; reasons, notes and names follow the house rules; the events keep their topics and survive the store's
mapper; and what a trust anchor's certificate says of itself is read by one function that takes only CA
certificates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from eventsourcing.utils import get_topic

from commands.pki_requests import read_anchor_certificate
from scaivault.domain.errors import CsrNotPending, Forbidden, InvalidCertificate, ValidationFailed
from scaivault.domain.pki_requests import (
    APPROVED,
    PENDING,
    REJECTED,
    CsrRequest,
    TrustAnchor,
    check_anchor_name,
    check_note,
    check_reason,
    csr_request_stream_id,
    trust_anchor_stream_id,
)
from scaivault.eventstore.mapper import create_mapper
from scaivault.pki.certificates import certificate_pem

AT = datetime(2026, 12, 5, 12, tzinfo=UTC)
REQUESTER = "sa:vendor-portal"
REVIEWER = "user:admin@acme.example"
STAMP = ("at", "actor", "request_id")


def submitted(**overrides: Any) -> CsrRequest:
    fields: dict[str, Any] = {
        "csr_id": "csr_1", "owner": "tnt_acme", "tenant_id": "tnt_acme", "partner_id": "ptn_acme",
        "role_name": "svc-mtls", "role_id": "pkr_1", "csr_pem": "-----BEGIN CERTIFICATE REQUEST-----\n...\n",
        "common_name": "billing.svc.cluster.local", "alt_names": ["billing.svc.cluster.local"], "ip_sans": [],
        "key_type": "ec", "key_bits": 256, "ttl": "1w", "note": None, "at": AT, "actor": REQUESTER,
        "request_id": "req_1",
    }
    return CsrRequest(**{**fields, **overrides})


def ca_certificate(*, ca: bool = True, constraints: bool = True, serial: int | None = None) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Partner Root CA")])
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
               .serial_number(serial or x509.random_serial_number())
               .not_valid_before(AT - timedelta(days=1)).not_valid_after(AT + timedelta(days=365)))
    if constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    return builder.sign(key, hashes.SHA256())


def test_a_request_is_pending_until_someone_else_approves_it() -> None:
    request = submitted()
    assert (request.status, request.requested_by, request.certificate_id) == (PENDING, REQUESTER, None)
    with pytest.raises(Forbidden) as refused:
        request.approve(certificate_id="cert_1", ttl="1w", at=AT, actor=REQUESTER, request_id="req_2")
    assert "four-eyes" in refused.value.message and refused.value.details == {"csr_id": "csr_1"}
    assert request.status == PENDING and len(request.collect_events()) == 1

    request.approve(certificate_id="cert_1", ttl="2d", at=AT, actor=REVIEWER, request_id="req_3")
    assert (request.status, request.certificate_id) == (APPROVED, "cert_1")
    (approved,) = request.collect_events()
    assert isinstance(approved, CsrRequest.Approved)
    assert (approved.certificate_id, approved.ttl, approved.actor) == ("cert_1", "2d", REVIEWER)


@pytest.mark.parametrize("first", ["approve", "reject"])
def test_a_request_is_decided_once(first: str) -> None:
    request = submitted()
    if first == "approve":
        request.approve(certificate_id="cert_1", ttl="1w", at=AT, actor=REVIEWER, request_id=None)
    else:
        request.reject(reason="out of scope", at=AT, actor=REVIEWER, request_id=None)
    request.collect_events()
    for decide in (
        lambda: request.approve(certificate_id="cert_2", ttl="1w", at=AT, actor="user:bob", request_id=None),
        lambda: request.reject(reason="again", at=AT, actor="user:bob", request_id=None),
        lambda: request.check_can_approve("user:bob"),
    ):
        with pytest.raises(CsrNotPending) as refused:
            decide()
        assert refused.value.details["status"] == (APPROVED if first == "approve" else REJECTED)
    assert request.collect_events() == []


def test_a_rejection_says_why_and_the_requester_may_withdraw_its_own() -> None:
    request = submitted()
    for reason in ("", "   ", None, 7, "x" * 1025):
        with pytest.raises(ValidationFailed) as refused:
            request.reject(reason=reason, at=AT, actor=REVIEWER, request_id=None)  # type: ignore[arg-type]
        assert refused.value.details["fields"][0]["field"] == "reason"
    request.reject(reason="  wrong role ", at=AT, actor=REQUESTER, request_id=None)
    (rejected,) = request.collect_events()[1:]
    assert isinstance(rejected, CsrRequest.Rejected) and rejected.reason == "wrong role"
    assert request.status == REJECTED


def test_notes_reasons_and_anchor_names() -> None:
    assert check_note(None) is None and check_note("  ") is None and check_note(" ticket 7 ") == "ticket 7"
    assert check_reason(" no ") == "no"
    assert check_anchor_name("  partner-root ") == "partner-root"
    for bad_note in (7, "x" * 1025, ["a"]):
        with pytest.raises(ValidationFailed):
            check_note(bad_note)
    for bad_name in ("", "  ", "a\nb", "x" * 129, None, 3):
        with pytest.raises(ValidationFailed):
            check_anchor_name(bad_name)
    with pytest.raises(ValidationFailed) as refused:
        check_note(7, "description")
    assert refused.value.details["fields"][0]["field"] == "description"


def test_the_events_keep_their_topics_and_survive_the_stores_mapper() -> None:
    request = submitted(note="ticket OPS-1")
    request.approve(certificate_id="cert_1", ttl="1w", at=AT, actor=REVIEWER, request_id="req_9")
    anchor = TrustAnchor(
        anchor_id="ta_1", owner="tnt_acme", tenant_id="tnt_acme", partner_id="ptn_acme", name="partner-root",
        description=None, certificate_pem="-----BEGIN CERTIFICATE-----\n...\n", subject="CN=Partner Root CA",
        issuer="CN=Partner Root CA", serial_number="01:02", not_before=AT, not_after=AT + timedelta(days=365),
        fingerprint_sha256="ab" * 32, at=AT, actor=REVIEWER, request_id=None,
    )
    anchor.remove(at=AT, actor=REVIEWER, request_id=None)
    assert anchor.removed
    events = [*request.collect_events(), *anchor.collect_events()]
    module = "scaivault.domain.pki_requests:"
    assert [get_topic(type(e)) for e in events] == [
        module + "CsrRequest.Submitted", module + "CsrRequest.Approved", module + "TrustAnchor.Added",
        module + "TrustAnchor.Removed",
    ]
    assert request.id == csr_request_stream_id("csr_1") and anchor.id == trust_anchor_stream_id("ta_1")
    assert csr_request_stream_id("x") != trust_anchor_stream_id("x")
    mapper = create_mapper()
    decoded = [mapper.to_domain_event(mapper.to_stored_event(e)) for e in events]
    assert [vars(e) for e in decoded] == [vars(e) for e in events]
    submitted_fields = set(vars(events[0])) - {"originator_id", "originator_version", "timestamp", "originator_topic"}
    assert submitted_fields == {
        "csr_id", "owner", "tenant_id", "partner_id", "role_name", "role_id", "csr_pem", "common_name", "alt_names",
        "ip_sans", "key_type", "key_bits", "ttl", "note", *STAMP,
    }
    assert set(vars(events[1])) - {"originator_id", "originator_version", "timestamp"} == {
        "certificate_id", "ttl", *STAMP}
    replayed: Any = None
    for e in decoded[:2]:
        assert isinstance(e, CsrRequest.Submitted | CsrRequest.Approved)
        replayed = e.mutate(replayed)
    assert isinstance(replayed, CsrRequest) and replayed.status == APPROVED and replayed.requested_by == REQUESTER


def test_only_one_ca_certificate_is_read_as_an_anchor() -> None:
    certificate = ca_certificate(serial=0x1F)
    read = read_anchor_certificate(certificate_pem(certificate))
    assert read.subject == "CN=Partner Root CA" == read.issuer and read.serial_number == "1f"
    assert read.fingerprint_sha256 == certificate.fingerprint(hashes.SHA256()).hex()
    assert (read.not_before, read.not_after) == (AT - timedelta(days=1), AT + timedelta(days=365))
    assert read.certificate_pem == certificate_pem(certificate)
    # Kept as PEM re-encoded from the certificate: the bundle holds certificates and nothing around them.
    padded = "\n\n" + certificate_pem(certificate) + "\n\n"
    assert read_anchor_certificate(padded).certificate_pem == read.certificate_pem

    refusals = {
        certificate_pem(ca_certificate(ca=False)): "not a CA certificate",
        certificate_pem(ca_certificate(constraints=False)): "not a CA certificate",
        certificate_pem(certificate) * 2: "exactly one",
        "": "empty",
        "garbage": "not a well-formed",
    }
    for pem, why in refusals.items():
        with pytest.raises(InvalidCertificate) as refused:
            read_anchor_certificate(pem)
        assert why in refused.value.message and refused.value.message.startswith("certificate_pem: ")
