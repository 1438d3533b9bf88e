"""CA and leaf certificates: what goes into them is decided here, once, for every issuing path.

Roots and intermediates carry a critical BasicConstraints (cA) and a critical KeyUsage (keyCertSign, cRLSign,
digitalSignature), a SubjectKeyIdentifier and an AuthorityKeyIdentifier. Leaves carry a critical BasicConstraints
(not a CA), the role's key usages, a SubjectAltName (critical when the subject is empty, RFC 5280 4.2.1.6), the key
identifiers, and where the issuer publishes revocation data (CRL distribution points, OCSP and caIssuers in the
AuthorityInformationAccess). Serials are 159 random bits, so they cannot be predicted (the chosen-prefix collision
defence of CA/B BR 7.1) and never collide in practice. The digest follows the issuer's key (``keys.signature_hash``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scaivault.pki.keys import PrivateKey, UnsupportedKey, key_spec_of, public_key_der, signature_hash

KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "cert_sign",
    "crl_sign",
)
EXT_KEY_USAGES = ("server_auth", "client_auth", "code_signing", "email_protection", "time_stamping", "ocsp_signing")
_EKU_OIDS = {
    "server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "code_signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email_protection": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "time_stamping": ExtendedKeyUsageOID.TIME_STAMPING,
    "ocsp_signing": ExtendedKeyUsageOID.OCSP_SIGNING,
}
# RFC 5280 ub-common-name.
MAX_COMMON_NAME_LENGTH = 64
# RFC 5280 4.1.2.2: at most 20 octets, positive.
MAX_SERIAL = 2**159 - 1
# An imported chain deeper than this is not one anybody runs; the bound keeps the checks cheap.
MAX_CHAIN_LENGTH = 8
# What cryptography raises for malformed input: some of its errors are not ValueErrors.
PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)
# A certificate PEM is a few KiB; a bundle of a chain a few times that.
MAX_CERTIFICATE_BYTES = 64 * 1024


class InvalidCertificate(ValueError):
    """A certificate (or chain) that cannot be parsed or does not hold what it must; the message says why."""


class InvalidProfile(ValueError):
    """What a caller asked to issue cannot be put into a certificate (bad times, names, usages, issuer)."""


@dataclass(frozen=True)
class Publication:
    """Where relying parties fetch revocation data and the issuer's certificate for certificates this CA signs."""

    crl_urls: tuple[str, ...] = ()
    ocsp_urls: tuple[str, ...] = ()
    ca_issuer_urls: tuple[str, ...] = ()


@dataclass(frozen=True)
class LeafProfile:
    """What a leaf certificate says; names are DNS A-labels, already checked against the role."""

    common_name: str | None
    not_before: datetime
    not_after: datetime
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] = ()
    uris: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    key_usage: tuple[str, ...] = ("digital_signature", "key_encipherment")
    ext_key_usage: tuple[str, ...] = ("server_auth", "client_auth")


def new_serial() -> int:
    return x509.random_serial_number()


def build_root_ca(
    key: PrivateKey,
    *,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
    max_path_length: int | None = None,
) -> x509.Certificate:
    """A self-signed root."""
    _check_window(not_before, not_after)
    name = _subject(common_name)
    public_key = key.public_key()
    ski = x509.SubjectKeyIdentifier.from_public_key(public_key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(_serial(serial))
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=_path_length(max_path_length)), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    )
    return builder.sign(key, signature_hash(key))


def build_ca_csr(key: PrivateKey, *, common_name: str) -> x509.CertificateSigningRequest:
    """The CSR of an intermediate whose issuer is outside ScaiVault: it asks to be a CA that signs certificates and
    CRLs; the external root decides what it grants."""
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_subject(common_name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    return builder.sign(key, signature_hash(key))


def sign_intermediate(
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    subject_public_key: CertificatePublicKeyTypes,
    *,
    common_name: str,
    not_before: datetime,
    not_after: datetime,
    serial: int | None = None,
    publication: Publication = Publication(),  # noqa: B008 - frozen, so one shared default is safe
    max_path_length: int | None = None,
) -> x509.Certificate:
    """An intermediate CA signed by ``issuer_cert``; its validity ends no later than its issuer's, and its path
    length stays below the issuer's (defaulting to one less when the issuer is constrained)."""
    _check_issuer(issuer_cert, issuer_key)
    key_spec_of(subject_public_key)
    issuer_limit = _basic_constraints(issuer_cert).path_length
    if issuer_limit is not None:
        if issuer_limit == 0:
            raise InvalidProfile("the issuing CA's path length is 0: it may not sign CA certificates")
        if max_path_length is None:
            max_path_length = issuer_limit - 1
        elif max_path_length > issuer_limit - 1:
            raise InvalidProfile(f"max_path_length must be at most {issuer_limit - 1} under this issuer")
    not_after = _capped(not_after, issuer_cert)
    _check_window(not_before, not_after)
    builder = (
        _issued_builder(issuer_cert, subject_public_key, _serial(serial), not_before, not_after, publication)
        .subject_name(_subject(common_name))
        .add_extension(x509.BasicConstraints(ca=True, path_length=_path_length(max_path_length)), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
    )
    return builder.sign(issuer_key, signature_hash(issuer_key))


def sign_leaf(
    issuer_cert: x509.Certificate,
    issuer_key: PrivateKey,
    subject_public_key: CertificatePublicKeyTypes,
    profile: LeafProfile,
    *,
    serial: int | None = None,
    publication: Publication = Publication(),  # noqa: B008 - frozen, so one shared default is safe
) -> x509.Certificate:
    """A leaf (end-entity) certificate; ``not_after`` is cut to the issuer's. Only the profile's content goes in:
    a CSR's own extensions never reach this function."""
    _check_issuer(issuer_cert, issuer_key)
    spec = key_spec_of(subject_public_key)
    not_after = _capped(profile.not_after, issuer_cert)
    _check_window(profile.not_before, not_after)
    names = _general_names(profile)
    if not names and not profile.common_name:
        raise InvalidProfile("a certificate must name its subject: give a common name or alternative names")
    subject = _subject(profile.common_name) if profile.common_name else x509.Name([])
    builder = _issued_builder(
        issuer_cert, subject_public_key, _serial(serial), profile.not_before, not_after, publication
    ).subject_name(subject)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
    key_usage = _leaf_key_usage(profile.key_usage, spec.key_type)
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    if profile.ext_key_usage:
        builder = builder.add_extension(_ext_key_usage(profile.ext_key_usage), critical=False)
    if names:
        # With an empty subject the SAN is the only identity, and RFC 5280 then requires it critical.
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=not profile.common_name)
    return builder.sign(issuer_key, signature_hash(issuer_key))


def check_signed_ca_certificate(
    cert: x509.Certificate,
    key: PrivateKey,
    chain: Sequence[x509.Certificate],
    *,
    at: datetime | None = None,
) -> None:
    """That ``cert`` (an intermediate signed outside ScaiVault) is a CA certificate for ``key`` and that ``chain``
    (its issuer first, a self-signed root last) links it to a root, each signature verified by ``cryptography``.
    With ``at``, every certificate must also be valid then. Raises ``InvalidCertificate`` saying what is wrong."""
    try:
        cert_key = public_key_der(cert.public_key())
    except (UnsupportedKey, UnsupportedAlgorithm, ValueError):
        raise InvalidCertificate("the certificate's public key is not of a supported type") from None
    if cert_key != public_key_der(key):
        raise InvalidCertificate("the certificate is not for this CA's key")
    _require_supported_key(cert, "the certificate")
    if not chain:
        raise InvalidCertificate("the issuer chain is empty: it must lead to a self-signed root")
    if len(chain) > MAX_CHAIN_LENGTH:
        raise InvalidCertificate(f"the issuer chain is longer than {MAX_CHAIN_LENGTH} certificates")
    path = [cert, *chain]
    for depth, member in enumerate(path):
        label = "the certificate" if depth == 0 else f"chain[{depth - 1}]"
        constraints = _ca_constraints(member, label)
        # A CA's path length counts the CA certificates below it (here: the ``depth`` ones before it in ``path``).
        if constraints.path_length is not None and depth > constraints.path_length:
            raise InvalidCertificate(f"{label} allows {constraints.path_length} CA certificates below it")
        if at is not None and not member.not_valid_before_utc <= at <= member.not_valid_after_utc:
            raise InvalidCertificate(f"{label} is not valid at {at.isoformat()}")
    for depth in range(len(path) - 1):
        subject, issuer = path[depth], path[depth + 1]
        _require_supported_key(issuer, f"chain[{depth}]")
        signed = "the certificate" if depth == 0 else f"chain[{depth - 1}]"
        _verify_link(subject, issuer, f"chain[{depth}] did not sign {signed}")
    root = path[-1]
    if root.issuer != root.subject:
        raise InvalidCertificate("the chain does not end with a self-signed root")
    _verify_link(root, root, "the last certificate of the chain is not validly self-signed")


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


def load_certificate(pem_or_der: str | bytes) -> x509.Certificate:
    """One certificate, PEM or DER; ``InvalidCertificate`` for anything else (including a PEM with several)."""
    certificates = _load(pem_or_der)
    if len(certificates) != 1:
        raise InvalidCertificate("expected exactly one certificate")
    return certificates[0]


def load_certificate_chain(pem: str | bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM bundle, in order; ``InvalidCertificate`` if there is none or one is broken."""
    return _load(pem)


def fingerprint_sha256(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def _load(data: str | bytes) -> list[x509.Certificate]:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if not raw or len(raw) > MAX_CERTIFICATE_BYTES:
        raise InvalidCertificate("the certificate is empty or too large")
    try:
        if raw.lstrip().startswith(b"-----BEGIN"):
            certificates = x509.load_pem_x509_certificates(raw)
        else:
            certificates = [x509.load_der_x509_certificate(raw)]
        for certificate in certificates:
            # cryptography parses extensions lazily: reach them now, so a broken one fails here and not later.
            certificate.extensions  # noqa: B018
            certificate.public_key()
    except PARSE_ERRORS:
        raise InvalidCertificate("not a well-formed X.509 certificate") from None
    return certificates


def _check_window(not_before: datetime, not_after: datetime) -> None:
    if not_before.tzinfo is None or not_after.tzinfo is None:
        raise InvalidProfile("validity times must carry a time zone")
    if not_before >= not_after:
        raise InvalidProfile("the certificate would end before it starts (not_before must precede not_after)")


def _capped(not_after: datetime, issuer_cert: x509.Certificate) -> datetime:
    if not_after.tzinfo is None:
        raise InvalidProfile("validity times must carry a time zone")
    return min(not_after, issuer_cert.not_valid_after_utc)


def _serial(serial: int | None) -> int:
    if serial is None:
        return new_serial()
    if isinstance(serial, bool) or not isinstance(serial, int) or not 0 < serial <= MAX_SERIAL:
        raise InvalidProfile("a serial number must be a positive integer of at most 159 bits")
    return serial


def _path_length(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise InvalidProfile("max_path_length must be a non-negative integer or None")
    return value


def _subject(common_name: str) -> x509.Name:
    if not isinstance(common_name, str) or not common_name.strip():
        raise InvalidProfile("the common name must not be empty")
    if len(common_name) > MAX_COMMON_NAME_LENGTH:
        raise InvalidProfile(f"the common name must be at most {MAX_COMMON_NAME_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in common_name):
        raise InvalidProfile("the common name must not contain control characters")
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca_key_usage() -> x509.KeyUsage:
    # digitalSignature lets the CA key sign OCSP responses itself (RFC 6960 4.2.2.2).
    return _key_usage({"digital_signature", "cert_sign", "crl_sign"})


def _key_usage(names: set[str]) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature="digital_signature" in names,
        content_commitment="content_commitment" in names,
        key_encipherment="key_encipherment" in names,
        data_encipherment="data_encipherment" in names,
        key_agreement="key_agreement" in names,
        key_cert_sign="cert_sign" in names,
        crl_sign="crl_sign" in names,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_key_usage(names: tuple[str, ...], key_type: str) -> x509.KeyUsage | None:
    unknown = [name for name in names if name not in KEY_USAGES]
    if unknown:
        raise InvalidProfile(f"unknown key usage {unknown[0]!r}; known: {', '.join(KEY_USAGES)}")
    if "cert_sign" in names:
        raise InvalidProfile("a leaf certificate cannot sign certificates (RFC 5280 4.2.1.3)")
    wanted = set(names)
    if key_type != "rsa":
        # Only RSA keys encrypt other keys; an EC or Ed25519 certificate claiming it confuses strict TLS stacks.
        wanted.discard("key_encipherment")
    if key_type == "ed25519":
        wanted.discard("key_agreement")
    return _key_usage(wanted) if wanted else None


def _ext_key_usage(names: tuple[str, ...]) -> x509.ExtendedKeyUsage:
    unknown = [name for name in names if name not in _EKU_OIDS]
    if unknown:
        raise InvalidProfile(f"unknown extended key usage {unknown[0]!r}; known: {', '.join(EXT_KEY_USAGES)}")
    return x509.ExtendedKeyUsage([_EKU_OIDS[name] for name in dict.fromkeys(names)])


def _general_names(profile: LeafProfile) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    try:
        names.extend(x509.DNSName(name) for name in dict.fromkeys(profile.dns_names))
        names.extend(x509.IPAddress(address) for address in dict.fromkeys(profile.ip_addresses))
        names.extend(x509.UniformResourceIdentifier(uri) for uri in dict.fromkeys(profile.uris))
        names.extend(x509.RFC822Name(email) for email in dict.fromkeys(profile.emails))
    except (ValueError, TypeError) as exc:
        raise InvalidProfile(f"an alternative name cannot be encoded: {exc}") from None
    return names


def _issued_builder(
    issuer_cert: x509.Certificate,
    subject_public_key: CertificatePublicKeyTypes,
    serial: int,
    not_before: datetime,
    not_after: datetime,
    publication: Publication,
) -> x509.CertificateBuilder:
    builder = (
        x509.CertificateBuilder()
        .issuer_name(issuer_cert.subject)
        .public_key(subject_public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_public_key), critical=False)
        .add_extension(authority_key_identifier(issuer_cert), critical=False)
    )
    if publication.crl_urls:
        points = [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None
            )
            for url in publication.crl_urls
        ]
        builder = builder.add_extension(x509.CRLDistributionPoints(points), critical=False)
    access = [
        x509.AccessDescription(x509.AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(url))
        for url in publication.ocsp_urls
    ] + [
        x509.AccessDescription(x509.AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier(url))
        for url in publication.ca_issuer_urls
    ]
    if access:
        builder = builder.add_extension(x509.AuthorityInformationAccess(access), critical=False)
    return builder


def authority_key_identifier(issuer_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    # The issuer's own SKI, not one recomputed from its key: an externally made root may use another method.
    try:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _basic_constraints(cert: x509.Certificate) -> x509.BasicConstraints:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return x509.BasicConstraints(ca=False, path_length=None)


def _check_issuer(issuer_cert: x509.Certificate, issuer_key: PrivateKey) -> None:
    if public_key_der(issuer_cert.public_key()) != public_key_der(issuer_key):
        raise InvalidProfile("the issuer's key does not belong to the issuer's certificate")
    if not _basic_constraints(issuer_cert).ca:
        raise InvalidProfile("the issuer's certificate is not a CA certificate")
    usage = _key_usage_of(issuer_cert)
    if usage is not None and not usage.key_cert_sign:
        raise InvalidProfile("the issuer's certificate may not sign certificates (no keyCertSign)")


def _key_usage_of(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _ca_constraints(cert: x509.Certificate, label: str) -> x509.BasicConstraints:
    try:
        constraints = _basic_constraints(cert)
        usage = _key_usage_of(cert)
    except PARSE_ERRORS:
        raise InvalidCertificate(f"{label} has malformed extensions") from None
    if not constraints.ca:
        raise InvalidCertificate(f"{label} is not a CA certificate (BasicConstraints cA is not set)")
    if usage is not None and not usage.key_cert_sign:
        raise InvalidCertificate(f"{label} may not sign certificates (KeyUsage lacks keyCertSign)")
    return constraints


def _require_supported_key(cert: x509.Certificate, label: str) -> None:
    try:
        key_spec_of(cert.public_key())
    except (UnsupportedKey, UnsupportedAlgorithm, ValueError) as exc:
        raise InvalidCertificate(f"{label} has an unsupported key: {exc}") from None


def _verify_link(subject: x509.Certificate, issuer: x509.Certificate, reason: str) -> None:
    try:
        subject.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise InvalidCertificate(reason) from None
