"""CSR parsing: what a requester asks for is read and checked, and nothing else is taken from it."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtensionOID, NameOID

from scaivault.pki.certificates import LeafProfile, sign_leaf
from scaivault.pki.csr import MAX_CSR_BYTES, InvalidCsr, parse_csr
from scaivault.pki.keys import KeySpec
from tests.unit.pki.material import NOW, SPECS, hierarchy, key, openssl

EC = KeySpec("ec", 256)


def csr_pem(private_key: object, *names: x509.NameAttribute, extensions: Sequence[x509.ExtensionType] = ()) -> str:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(list(names)))
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    digest = None if isinstance(private_key, type(key(KeySpec("ed25519", 0)))) else hashes.SHA256()
    return builder.sign(private_key, digest).public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[arg-type]


def cn(value: str) -> x509.NameAttribute:
    return x509.NameAttribute(NameOID.COMMON_NAME, value)


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_a_csr_gives_its_key_names_and_the_extensions_it_asked_for(spec: KeySpec) -> None:
    san = x509.SubjectAlternativeName([
        x509.DNSName("billing.svc.cluster.local"),
        x509.DNSName("billing.svc.cluster.local"),
        x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
        x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/billing"),
        x509.RFC822Name("ops@example.com"),
    ])
    pem = csr_pem(key(spec, 3), cn("billing.svc.cluster.local"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Evil"),
                  extensions=[san, x509.BasicConstraints(ca=True, path_length=None)])
    request = parse_csr(pem)
    assert request.common_name == "billing.svc.cluster.local"
    assert request.dns_names == ("billing.svc.cluster.local",)
    assert request.ip_addresses == (ipaddress.ip_address("10.1.2.3"),)
    assert request.uris == ("spiffe://cluster.local/ns/default/sa/billing",)
    assert request.emails == ("ops@example.com",)
    assert request.public_key == key(spec, 3).public_key()
    assert request.requested_extensions == (
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string, ExtensionOID.BASIC_CONSTRAINTS.dotted_string
    )


def test_a_csr_asking_to_be_a_ca_still_gets_a_leaf_with_only_the_profile() -> None:
    pem = csr_pem(key(EC, 3), cn("billing.svc.cluster.local"),
                  extensions=[x509.BasicConstraints(ca=True, path_length=None),
                              x509.NameConstraints(permitted_subtrees=[x509.DNSName("evil.com")],
                                                   excluded_subtrees=None)])
    request = parse_csr(pem.encode())
    h = hierarchy(EC)
    profile = LeafProfile(common_name=request.common_name, dns_names=request.dns_names,
                          not_before=NOW, not_after=NOW + timedelta(days=1))
    leaf = sign_leaf(h.inter, h.inter_key, request.public_key, profile)
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(x509.ExtensionNotFound):
        leaf.extensions.get_extension_for_class(x509.NameConstraints)
    assert leaf.subject == x509.Name([cn("billing.svc.cluster.local")])


def test_a_csr_made_by_openssl(tmp_path: Path) -> None:
    result = openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", str(tmp_path / "k.pem"),
                     "-subj", "/O=Acme/CN=api.example.com", "-addext",
                     "subjectAltName=DNS:api.example.com,DNS:www.example.com,IP:192.0.2.7,IP:2001:db8::7",
                     "-out", str(tmp_path / "req.pem"))
    assert result.returncode == 0, result.stderr
    request = parse_csr((tmp_path / "req.pem").read_text())
    assert request.common_name == "api.example.com"
    assert request.dns_names == ("api.example.com", "www.example.com")
    assert request.ip_addresses == (ipaddress.ip_address("192.0.2.7"), ipaddress.ip_address("2001:db8::7"))
    assert request.requested_extensions == (ExtensionOID.SUBJECT_ALTERNATIVE_NAME.dotted_string,)


def test_no_cn_and_no_extensions() -> None:
    request = parse_csr(csr_pem(key(EC, 3)))
    assert request.common_name is None
    assert (request.dns_names, request.ip_addresses, request.uris, request.emails) == ((), (), (), ())
    assert request.requested_extensions == ()


def test_two_common_names_are_refused() -> None:
    with pytest.raises(InvalidCsr, match="more than one common name"):
        parse_csr(csr_pem(key(EC, 3), cn("ok.svc.cluster.local"), cn("evil.com")))


def test_a_tampered_csr_is_refused() -> None:
    pem = csr_pem(key(EC, 3), cn("billing.svc.cluster.local"))
    der = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    assert b"billing" in der
    tampered = x509.load_der_x509_csr(der.replace(b"billing", b"billinh"))
    with pytest.raises(InvalidCsr, match="signature"):
        parse_csr(tampered.public_bytes(serialization.Encoding.PEM))


@pytest.mark.parametrize(
    "private_key",
    [
        pytest.param(lambda: rsa.generate_private_key(65537, 1024), id="rsa-1024"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()), id="p-521"),
    ],
)
def test_unsupported_keys_are_refused(private_key: object) -> None:
    with pytest.raises(InvalidCsr, match="key"):
        parse_csr(csr_pem(private_key(), cn("a.example.com")))  # type: ignore[operator]


@pytest.mark.parametrize(
    "name",
    [
        x509.DirectoryName(x509.Name([cn("evil.com")])),
        x509.OtherName(x509.ObjectIdentifier("1.3.6.1.4.1.311.20.2.3"), b"\x0c\x08evil.com"),
        x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),
    ],
    ids=["directory", "other", "registered"],
)
def test_names_no_role_can_allow_are_refused(name: x509.GeneralName) -> None:
    pem = csr_pem(key(EC, 3), cn("a.example.com"),
                  extensions=[x509.SubjectAlternativeName([x509.DNSName("a.example.com"), name])])
    with pytest.raises(InvalidCsr, match="never issued"):
        parse_csr(pem)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "hello",
        "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        "-----BEGIN CERTIFICATE REQUEST-----\n" + "A" * (MAX_CSR_BYTES + 1) + "\n-----END CERTIFICATE REQUEST-----\n",
        b"\x30\x82\x01\x00",
    ],
    ids=["empty", "text", "short", "oversized", "der"],
)
def test_garbage_is_refused(garbage: str | bytes) -> None:
    with pytest.raises(InvalidCsr):
        parse_csr(garbage)


def test_a_certificate_is_not_a_csr() -> None:
    leaf = hierarchy(EC).leaf
    with pytest.raises(InvalidCsr):
        parse_csr(leaf.public_bytes(serialization.Encoding.PEM))
