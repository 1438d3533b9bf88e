"""Certificate signing requests: what a requester asks for, read and checked, never trusted.

A CSR contributes exactly two things to a certificate: its public key (once its self-signature proves the requester
holds the private key) and the names it asks for (the subject's common name and the DNS, IP, URI and e-mail
alternative names), which the signer checks against the role (``scaivault.domain.pki_names``) like any other
request. Everything else a CSR carries is never copied into the certificate: the rest of its subject (O, OU, C...),
and every requested extension (BasicConstraints asking to be a CA, key usages, name constraints, policies...). The
signer builds the certificate from the role alone; ``requested_extensions`` only lists what was asked, so it can be
shown or refused, not applied.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from scaivault.pki.certificates import PARSE_ERRORS
from scaivault.pki.keys import PublicKey, UnsupportedKey, key_spec_of

# A CSR is one to a few KiB; the cap is applied before parsing, so a huge body never reaches the ASN.1 parser.
MAX_CSR_BYTES = 64 * 1024


class InvalidCsr(ValueError):
    """A CSR that cannot be parsed, is not self-signed correctly, or asks for something that is never issued."""


@dataclass(frozen=True)
class CsrRequest:
    common_name: str | None
    dns_names: tuple[str, ...]
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    uris: tuple[str, ...]
    emails: tuple[str, ...]
    public_key: PublicKey
    requested_extensions: tuple[str, ...]  # dotted OIDs, in the CSR's order


def parse_csr(pem: str | bytes) -> CsrRequest:
    """The CSR's key and names; ``InvalidCsr`` for garbage, a bad self-signature, several CNs, an unsupported key,
    or alternative names of a kind no role can allow (directory names, otherName, registered IDs)."""
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    if not data or len(data) > MAX_CSR_BYTES:
        raise InvalidCsr(f"the CSR must be between 1 byte and {MAX_CSR_BYTES // 1024} KiB")
    try:
        csr = x509.load_pem_x509_csr(data)
        public_key = csr.public_key()
        signature_valid = csr.is_signature_valid
    except PARSE_ERRORS:
        raise InvalidCsr("not a well-formed PEM certificate signing request") from None
    try:
        key_spec_of(public_key)
    except UnsupportedKey as exc:
        raise InvalidCsr(f"the CSR's key is not supported: {exc}") from None
    if not signature_valid:
        raise InvalidCsr("the CSR's signature does not verify: it was not signed by the key it carries")
    common_name = _common_name(csr)
    try:
        extensions = list(csr.extensions)
    except PARSE_ERRORS:
        raise InvalidCsr("the CSR's requested extensions are malformed") from None
    dns_names: list[str] = []
    ip_addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    uris: list[str] = []
    emails: list[str] = []
    for extension in extensions:
        if not isinstance(extension.value, x509.SubjectAlternativeName):
            continue
        for name in extension.value:
            if isinstance(name, x509.DNSName):
                dns_names.append(name.value)
            elif isinstance(name, x509.IPAddress) and isinstance(
                name.value, ipaddress.IPv4Address | ipaddress.IPv6Address
            ):
                ip_addresses.append(name.value)
            elif isinstance(name, x509.UniformResourceIdentifier):
                uris.append(name.value)
            elif isinstance(name, x509.RFC822Name):
                emails.append(name.value)
            else:
                # Silently dropping a name would issue something other than what was asked; say so instead.
                kind = type(name).__name__
                raise InvalidCsr(f"the CSR asks for an alternative name of a kind that is never issued: {kind}")
    return CsrRequest(
        common_name=common_name,
        dns_names=tuple(dict.fromkeys(dns_names)),
        ip_addresses=tuple(dict.fromkeys(ip_addresses)),
        uris=tuple(dict.fromkeys(uris)),
        emails=tuple(dict.fromkeys(emails)),
        public_key=public_key,  # type: ignore[arg-type]
        requested_extensions=tuple(extension.oid.dotted_string for extension in extensions),
    )


def _common_name(csr: x509.CertificateSigningRequest) -> str | None:
    try:
        attributes = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except PARSE_ERRORS:
        raise InvalidCsr("the CSR's subject is malformed") from None
    if len(attributes) > 1:
        # Relying parties disagree on which CN counts (first or last): one could be checked and the other trusted.
        raise InvalidCsr("the CSR's subject has more than one common name")
    if not attributes:
        return None
    value = attributes[0].value
    if not isinstance(value, str):
        raise InvalidCsr("the CSR's common name is not a string")
    return value
