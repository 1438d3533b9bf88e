"""Revocation data: CRLs (RFC 5280 5) and OCSP answers (RFC 6960) signed by the CA's own key.

The CA key signs OCSP responses itself (RFC 6960 4.2.2.2 allows the issuer as responder), so relying parties need
no delegated responder certificate and there is no second key to guard. The responder is named by key hash (the
shorter form). ``producedAt`` is the one time cryptography fills in itself (the signing moment); every other time
is a parameter.

The reason ``unspecified`` is published as no reason at all: RFC 5280 5.3.1 says the reasonCode SHOULD be absent
rather than unspecified, and the CA/Browser Forum requires it for OCSP and CRLs alike.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509 import ocsp

from scaivault.pki.certificates import MAX_SERIAL, PARSE_ERRORS, authority_key_identifier
from scaivault.pki.keys import PrivateKey, public_key_der, signature_hash

REVOCATION_REASONS = (
    "unspecified",
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
)
_REASON_FLAGS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "key_compromise": x509.ReasonFlags.key_compromise,
    "ca_compromise": x509.ReasonFlags.ca_compromise,
    "affiliation_changed": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessation_of_operation": x509.ReasonFlags.cessation_of_operation,
    "certificate_hold": x509.ReasonFlags.certificate_hold,
    "privilege_withdrawn": x509.ReasonFlags.privilege_withdrawn,
    "aa_compromise": x509.ReasonFlags.aa_compromise,
}
OCSP_STATUSES = ("good", "revoked", "unknown")
OCSP_ERRORS = {
    "malformed_request": ocsp.OCSPResponseStatus.MALFORMED_REQUEST,
    "internal_error": ocsp.OCSPResponseStatus.INTERNAL_ERROR,
    "try_later": ocsp.OCSPResponseStatus.TRY_LATER,
    "unauthorized": ocsp.OCSPResponseStatus.UNAUTHORIZED,
}
# A real OCSP request is about 100 bytes (a few hundred with a signature); 16 KiB leaves room and bounds the parse.
MAX_OCSP_REQUEST_BYTES = 16 * 1024
# RFC 8954: a nonce of 1 to 32 octets; longer ones make the responder a reflector.
MAX_NONCE_BYTES = 32


class InvalidOcspRequest(ValueError):
    """An OCSP request that cannot be answered: the responder replies ``malformedRequest``."""


@dataclass(frozen=True)
class RevokedEntry:
    serial: int
    revoked_at: datetime
    reason: str


@dataclass(frozen=True)
class OcspQuery:
    serial: int
    issuer_name_hash: bytes
    issuer_key_hash: bytes
    hash_algorithm: hashes.HashAlgorithm
    nonce: bytes | None


def build_crl(
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    entries: Iterable[RevokedEntry],
    *,
    crl_number: int,
    this_update: datetime,
    next_update: datetime,
    distribution_point: str | None = None,
) -> x509.CertificateRevocationList:
    """A CRL of ``entries`` signed by the issuer. With ``distribution_point``, a critical IssuingDistributionPoint
    names it, so the CRL covers only certificates whose CRL distribution point is that URL (RFC 5280 5.2.5)."""
    if public_key_der(issuer_cert.public_key()) != public_key_der(issuer_key):
        raise ValueError("the issuer's key does not belong to the issuer's certificate")
    try:
        usage = issuer_cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not usage.crl_sign:
        # Relying parties would refuse the CRL (RFC 5280 4.2.1.3): better to fail here than publish a dud.
        raise ValueError("the issuer's certificate may not sign CRLs (no cRLSign)")
    if this_update.tzinfo is None or next_update.tzinfo is None or next_update <= this_update:
        raise ValueError("next_update must be a time-zone-aware time after this_update")
    if isinstance(crl_number, bool) or not 0 <= crl_number <= MAX_SERIAL:
        raise ValueError("crl_number must be a non-negative integer of at most 159 bits")
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer_cert.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(authority_key_identifier(issuer_cert), critical=False)
    )
    if distribution_point is not None:
        point = x509.IssuingDistributionPoint(
            full_name=[x509.UniformResourceIdentifier(distribution_point)],
            relative_name=None,
            only_contains_user_certs=False,
            only_contains_ca_certs=False,
            only_some_reasons=None,
            indirect_crl=False,
            only_contains_attribute_certs=False,
        )
        builder = builder.add_extension(point, critical=True)
    seen: set[int] = set()
    for entry in entries:
        if entry.serial in seen:
            raise ValueError(f"serial {entry.serial:x} is listed twice")
        seen.add(entry.serial)
        if entry.revoked_at.tzinfo is None:
            raise ValueError("revocation times must carry a time zone")
        revoked = x509.RevokedCertificateBuilder().serial_number(entry.serial).revocation_date(entry.revoked_at)
        flag = _reason_flag(entry.reason)
        if flag is not None:
            revoked = revoked.add_extension(x509.CRLReason(flag), critical=False)
        builder = builder.add_revoked_certificate(revoked.build())
    return builder.sign(issuer_key, signature_hash(issuer_key))


def crl_der(crl: x509.CertificateRevocationList) -> bytes:
    return crl.public_bytes(serialization.Encoding.DER)


def crl_pem(crl: x509.CertificateRevocationList) -> str:
    return crl.public_bytes(serialization.Encoding.PEM).decode("ascii")


def parse_ocsp_request(der: bytes) -> OcspQuery:
    """The one certificate a DER OCSP request asks about; ``InvalidOcspRequest`` otherwise (several certificates,
    an unknown hash, an oversized nonce, garbage)."""
    if not isinstance(der, bytes) or not der or len(der) > MAX_OCSP_REQUEST_BYTES:
        raise InvalidOcspRequest(f"an OCSP request must be 1 byte to {MAX_OCSP_REQUEST_BYTES // 1024} KiB of DER")
    try:
        request = ocsp.load_der_ocsp_request(der)
        query = OcspQuery(
            serial=request.serial_number,
            issuer_name_hash=request.issuer_name_hash,
            issuer_key_hash=request.issuer_key_hash,
            hash_algorithm=request.hash_algorithm,
            nonce=_nonce(request.extensions),
        )
    # cryptography refuses requests for several certificates with NotImplementedError.
    except (*PARSE_ERRORS, NotImplementedError, x509.ExtensionNotFound):
        raise InvalidOcspRequest("not a well-formed OCSP request for one certificate") from None
    if query.nonce is not None and not 1 <= len(query.nonce) <= MAX_NONCE_BYTES:
        raise InvalidOcspRequest(f"the request's nonce must be 1 to {MAX_NONCE_BYTES} bytes")
    return query


def issuer_matches(query: OcspQuery, issuer_cert: x509.Certificate) -> bool:
    """Whether the request is about a certificate issued by ``issuer_cert``: its CertID's name and key hashes
    (RFC 6960 4.1.1: of the issuer's DER name and of its subjectPublicKey bits) under the request's algorithm."""
    try:
        name_hash = _digest(query.hash_algorithm, issuer_cert.subject.public_bytes())
        key_hashes = [_digest(query.hash_algorithm, bits) for bits in _public_key_bits(issuer_cert)]
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return hmac.compare_digest(name_hash, query.issuer_name_hash) and any(
        hmac.compare_digest(key_hash, query.issuer_key_hash) for key_hash in key_hashes
    )


def _digest(algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    digest = hashes.Hash(algorithm)
    digest.update(data)
    return digest.finalize()


def _public_key_bits(cert: x509.Certificate) -> list[bytes]:
    """The contents of the certificate's subjectPublicKey BIT STRING, as cryptography serialises each key type (an
    EC point may have been written either way, so both forms are offered)."""
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return [key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)]
    if isinstance(key, ec.EllipticCurvePublicKey):
        return [
            key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint),
            key.public_bytes(serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint),
        ]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return [key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)]
    return []


def build_ocsp_response(
    query: OcspQuery,
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    *,
    status: str,
    revoked_at: datetime | None,
    reason: str | None,
    this_update: datetime,
    next_update: datetime,
    certificate: x509.Certificate | None,
) -> bytes:
    """A DER ``successful`` OCSP response about ``query``'s certificate, signed by the CA key, echoing the nonce.

    ``certificate`` is the certificate asked about when the CA knows it (its serial must be the query's); the
    response's CertID is the query's own, so the client finds the answer to exactly what it asked.
    """
    if status not in OCSP_STATUSES:
        raise ValueError(f"status must be one of {', '.join(OCSP_STATUSES)}")
    if not issuer_matches(query, issuer_cert):
        raise ValueError("the OCSP request is not about a certificate of this CA")
    if public_key_der(issuer_cert.public_key()) != public_key_der(issuer_key):
        raise ValueError("the issuer's key does not belong to the issuer's certificate")
    if certificate is not None and certificate.serial_number != query.serial:
        raise ValueError("the certificate is not the one the request asks about")
    if this_update.tzinfo is None or next_update.tzinfo is None or next_update <= this_update:
        raise ValueError("next_update must be a time-zone-aware time after this_update")
    if status == "revoked":
        if revoked_at is None or revoked_at.tzinfo is None:
            raise ValueError("a revoked answer needs the time-zone-aware revocation time")
        flag = _reason_flag(reason or "unspecified")
    elif revoked_at is not None or reason is not None:
        raise ValueError("only a revoked answer carries a revocation time or reason")
    else:
        flag = None
    cert_status = {
        "good": ocsp.OCSPCertStatus.GOOD,
        "revoked": ocsp.OCSPCertStatus.REVOKED,
        "unknown": ocsp.OCSPCertStatus.UNKNOWN,
    }[status]
    builder = (
        ocsp.OCSPResponseBuilder()
        .add_response_by_hash(
            issuer_name_hash=query.issuer_name_hash,
            issuer_key_hash=query.issuer_key_hash,
            serial_number=query.serial,
            algorithm=query.hash_algorithm,
            cert_status=cert_status,
            this_update=this_update,
            next_update=next_update,
            revocation_time=revoked_at if status == "revoked" else None,
            revocation_reason=flag,
        )
        .responder_id(ocsp.OCSPResponderEncoding.HASH, issuer_cert)
    )
    if query.nonce is not None:
        builder = builder.add_extension(x509.OCSPNonce(query.nonce), critical=False)
    response = builder.sign(issuer_key, signature_hash(issuer_key))
    return response.public_bytes(serialization.Encoding.DER)


def ocsp_error_response(kind: str = "malformed_request") -> bytes:
    """An unsigned error response (RFC 6960 2.3): ``malformed_request``, ``unauthorized`` (not a CA we answer
    for), ``internal_error`` or ``try_later``."""
    if kind not in OCSP_ERRORS:
        raise ValueError(f"kind must be one of {', '.join(OCSP_ERRORS)}")
    return ocsp.OCSPResponseBuilder.build_unsuccessful(OCSP_ERRORS[kind]).public_bytes(serialization.Encoding.DER)


def _reason_flag(reason: str) -> x509.ReasonFlags | None:
    if reason not in _REASON_FLAGS:
        raise ValueError(f"unknown revocation reason {reason!r}; known: {', '.join(REVOCATION_REASONS)}")
    return None if reason == "unspecified" else _REASON_FLAGS[reason]


def _nonce(extensions: x509.Extensions) -> bytes | None:
    try:
        return extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None

