"""CA and leaf certificates: their contents, and chains checked by the real `openssl verify` and by cryptography's
own path builder; imports of externally signed intermediates."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509 import verification
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from scaivault.pki.certificates import (
    InvalidCertificate,
    InvalidProfile,
    LeafProfile,
    Publication,
    build_ca_csr,
    build_root_ca,
    certificate_pem,
    check_signed_ca_certificate,
    fingerprint_sha256,
    load_certificate,
    load_certificate_chain,
    new_serial,
    sign_intermediate,
    sign_leaf,
)
from scaivault.pki.keys import KeySpec, key_spec_of
from tests.unit.pki.material import NOW, PUBLICATION, SPECS, Hierarchy, hierarchy, key, openssl, write_pem

EC = KeySpec("ec", 256)
RSA = KeySpec("rsa", 2048)
CHAIN_CASES = [(spec, None) for spec in SPECS] + [(RSA, EC), (EC, RSA), (KeySpec("ec", 384), KeySpec("ed25519", 0))]


def ext(cert: x509.Certificate, kind: type[x509.ExtensionType]) -> x509.Extension[x509.ExtensionType]:
    return cert.extensions.get_extension_for_class(kind)


def profile(**changes: object) -> LeafProfile:
    values: dict[str, object] = {
        "common_name": "billing.svc.cluster.local",
        "dns_names": ("billing.svc.cluster.local",),
        "not_before": NOW - timedelta(hours=1),
        "not_after": NOW + timedelta(days=7),
    }
    values.update(changes)
    return LeafProfile(**values)  # type: ignore[arg-type]


def openssl_verify(tmp_path: Path, h: Hierarchy, leaf: x509.Certificate | None = None, *extra: str) -> str:
    """openssl's verdict: "OK" when it accepts the chain, its complaint otherwise."""
    result = openssl(
        "verify", "-x509_strict", "-purpose", "sslserver", *extra,
        "-CAfile", write_pem(tmp_path / "root.pem", h.root),
        "-untrusted", write_pem(tmp_path / "inter.pem", h.inter),
        write_pem(tmp_path / "leaf.pem", leaf or h.leaf),
    )
    if result.returncode == 0 and result.stdout.strip().endswith(": OK"):
        return "OK"
    return result.stdout + result.stderr


@pytest.mark.parametrize(("ca_spec", "leaf_spec"), CHAIN_CASES, ids=str)
def test_openssl_verifies_the_chain(tmp_path: Path, ca_spec: KeySpec, leaf_spec: KeySpec | None) -> None:
    output = openssl_verify(tmp_path, hierarchy(ca_spec, leaf_spec))
    assert output == "OK", output


@pytest.mark.parametrize(("ca_spec", "leaf_spec"), CHAIN_CASES, ids=str)
def test_each_link_verifies_with_cryptography(ca_spec: KeySpec, leaf_spec: KeySpec | None) -> None:
    h = hierarchy(ca_spec, leaf_spec)
    h.root.verify_directly_issued_by(h.root)
    h.inter.verify_directly_issued_by(h.root)
    h.leaf.verify_directly_issued_by(h.inter)
    with pytest.raises((ValueError, Exception)):
        h.leaf.verify_directly_issued_by(h.root)


@pytest.mark.parametrize(("ca_spec", "leaf_spec"), [c for c in CHAIN_CASES if KeySpec("ed25519", 0) not in c], ids=str)
def test_cryptography_path_builder_accepts_the_chain_for_server_and_client(
    ca_spec: KeySpec, leaf_spec: KeySpec | None
) -> None:
    h = hierarchy(ca_spec, leaf_spec)
    store = verification.Store([h.root])
    builder = verification.PolicyBuilder().store(store).time(NOW)
    server = builder.build_server_verifier(x509.DNSName("billing.svc.cluster.local"))
    assert server.verify(h.leaf, [h.inter])[-1] == h.root
    client = builder.build_client_verifier().verify(h.leaf, [h.inter])
    assert client.chain[-1] == h.root
    with pytest.raises(verification.VerificationError):
        builder.build_server_verifier(x509.DNSName("evil.com")).verify(h.leaf, [h.inter])


def test_openssl_refuses_a_leaf_from_another_ca(tmp_path: Path) -> None:
    other = hierarchy(KeySpec("ec", 384))
    output = openssl_verify(tmp_path, hierarchy(EC), other.leaf)
    assert output != "OK"
    assert "unable to get local issuer certificate" in output or "signature failure" in output, output


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_root_ca_contents(spec: KeySpec) -> None:
    root = hierarchy(spec).root
    assert root.subject == root.issuer
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Test Root CA"
    constraints = ext(root, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length is None
    usage = ext(root, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign and usage.value.digital_signature
    assert not usage.value.key_encipherment
    ski = ext(root, x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(key(spec, 0).public_key())
    assert ext(root, x509.AuthorityKeyIdentifier).value.key_identifier == ski.digest
    assert root.version == x509.Version.v3
    expected_hash = {"rsa": "sha256", "ec": "sha384" if spec.key_bits == 384 else "sha256", "ed25519": None}
    algorithm = root.signature_hash_algorithm
    assert (algorithm.name if algorithm else None) == expected_hash[spec.key_type]


def test_root_path_length_and_explicit_serial() -> None:
    root = build_root_ca(key(EC), common_name="Constrained Root", not_before=NOW, not_after=NOW + timedelta(days=1),
                         serial=12345, max_path_length=1)
    assert root.serial_number == 12345
    assert ext(root, x509.BasicConstraints).value.path_length == 1


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_intermediate_contents(spec: KeySpec) -> None:
    h = hierarchy(spec)
    assert h.inter.issuer == h.root.subject
    constraints = ext(h.inter, x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert ext(h.inter, x509.KeyUsage).critical and ext(h.inter, x509.KeyUsage).value.key_cert_sign
    assert (
        ext(h.inter, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(h.root, x509.SubjectKeyIdentifier).value.digest
    )


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_leaf_contents(spec: KeySpec) -> None:
    h = hierarchy(spec)
    leaf = h.leaf
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "billing.svc.cluster.local"
    constraints = ext(leaf, x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    san = ext(leaf, x509.SubjectAlternativeName)
    assert not san.critical  # the subject names the CN
    assert san.value.get_values_for_type(x509.DNSName) == ["billing.svc.cluster.local"]
    usage = ext(leaf, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert usage.value.key_encipherment is (spec.key_type == "rsa")
    assert not usage.value.key_cert_sign
    eku = ext(leaf, x509.ExtendedKeyUsage)
    assert not eku.critical
    assert list(eku.value) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(leaf, x509.SubjectKeyIdentifier).value == x509.SubjectKeyIdentifier.from_public_key(
        h.leaf_key.public_key()
    )
    assert (
        ext(leaf, x509.AuthorityKeyIdentifier).value.key_identifier
        == ext(h.inter, x509.SubjectKeyIdentifier).value.digest
    )
    points = ext(leaf, x509.CRLDistributionPoints).value
    assert [p.full_name[0].value for p in points if p.full_name] == list(PUBLICATION.crl_urls)
    access = ext(leaf, x509.AuthorityInformationAccess).value
    assert [(a.access_method, a.access_location.value) for a in access] == [
        (AuthorityInformationAccessOID.OCSP, PUBLICATION.ocsp_urls[0]),
        (AuthorityInformationAccessOID.CA_ISSUERS, PUBLICATION.ca_issuer_urls[0]),
    ]
    assert 0 < leaf.serial_number < 2**159
    assert key_spec_of(leaf.public_key()) == spec


def test_leaf_without_publication_has_no_revocation_pointers() -> None:
    h = hierarchy(EC)
    leaf = sign_leaf(h.inter, h.inter_key, key(EC, 3).public_key(), profile())
    for kind in (x509.CRLDistributionPoints, x509.AuthorityInformationAccess):
        with pytest.raises(x509.ExtensionNotFound):
            ext(leaf, kind)


def test_leaf_with_every_kind_of_name_and_no_cn_has_a_critical_san(tmp_path: Path) -> None:
    h = hierarchy(EC)
    leaf = sign_leaf(
        h.inter, h.inter_key, key(EC, 3).public_key(),
        profile(
            common_name=None,
            dns_names=("a.svc.cluster.local", "b.svc.cluster.local", "a.svc.cluster.local"),
            ip_addresses=(ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")),
            uris=("spiffe://cluster.local/ns/default/sa/billing",),
            emails=("ops@example.com",),
        ),
    )
    assert leaf.subject == x509.Name([])
    san = ext(leaf, x509.SubjectAlternativeName)
    assert san.critical
    assert san.value.get_values_for_type(x509.DNSName) == ["a.svc.cluster.local", "b.svc.cluster.local"]
    assert san.value.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("10.0.0.1"), ipaddress.ip_address("fd00::1")
    ]
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://cluster.local/ns/default/sa/billing"
    ]
    assert san.value.get_values_for_type(x509.RFC822Name) == ["ops@example.com"]
    output = openssl_verify(tmp_path, h, leaf)
    assert output == "OK", output


def test_leaf_usages_follow_the_profile() -> None:
    h = hierarchy(RSA)
    leaf = sign_leaf(
        h.inter, h.inter_key, key(RSA, 3).public_key(),
        profile(key_usage=("digital_signature", "content_commitment"), ext_key_usage=("code_signing",)),
    )
    usage = ext(leaf, x509.KeyUsage).value
    assert usage.content_commitment and not usage.key_encipherment
    assert list(ext(leaf, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CODE_SIGNING]
    bare = sign_leaf(h.inter, h.inter_key, key(RSA, 3).public_key(), profile(key_usage=(), ext_key_usage=()))
    for kind in (x509.KeyUsage, x509.ExtendedKeyUsage):
        with pytest.raises(x509.ExtensionNotFound):
            ext(bare, kind)


def test_ec_leaf_with_only_key_encipherment_gets_no_key_usage() -> None:
    h = hierarchy(EC)
    leaf = sign_leaf(h.inter, h.inter_key, key(EC, 3).public_key(), profile(key_usage=("key_encipherment",)))
    with pytest.raises(x509.ExtensionNotFound):
        ext(leaf, x509.KeyUsage)


def test_not_after_is_capped_at_the_issuers() -> None:
    h = hierarchy(EC)
    leaf = sign_leaf(h.inter, h.inter_key, key(EC, 3).public_key(), profile(not_after=NOW + timedelta(days=99999)))
    assert leaf.not_valid_after_utc == h.inter.not_valid_after_utc
    inter = sign_intermediate(h.root, h.root_key, key(EC, 4).public_key(), common_name="Long",
                              not_before=NOW, not_after=NOW + timedelta(days=99999))
    assert inter.not_valid_after_utc == h.root.not_valid_after_utc


def test_serials_are_random_positive_and_explicit_ones_are_kept() -> None:
    serials = {new_serial() for _ in range(200)}
    assert len(serials) == 200
    assert all(0 < serial < 2**159 for serial in serials)
    assert max(serials).bit_length() > 150
    h = hierarchy(EC)
    assert sign_leaf(h.inter, h.inter_key, key(EC, 3).public_key(), profile(), serial=2**159 - 1).serial_number == (
        2**159 - 1
    )


@pytest.mark.parametrize("serial", [0, -1, 2**159, True])
def test_bad_serials_are_refused(serial: int) -> None:
    h = hierarchy(EC)
    with pytest.raises(InvalidProfile):
        sign_leaf(h.inter, h.inter_key, key(EC, 3).public_key(), profile(), serial=serial)


def test_sign_leaf_refuses_what_it_cannot_honestly_issue() -> None:
    h = hierarchy(EC)
    subject = key(EC, 3).public_key()
    cases: list[tuple[object, object, object, LeafProfile]] = [
        (h.inter, h.root_key, subject, profile()),  # the key is not the issuer's
        (h.leaf, h.leaf_key, subject, profile()),  # a leaf is no CA
        (h.inter, h.inter_key, subject, profile(key_usage=("cert_sign",))),
        (h.inter, h.inter_key, subject, profile(key_usage=("teleport",))),
        (h.inter, h.inter_key, subject, profile(ext_key_usage=("any",))),
        (h.inter, h.inter_key, subject, profile(common_name=None, dns_names=())),
        (h.inter, h.inter_key, subject, profile(not_before=NOW, not_after=NOW)),
        (h.inter, h.inter_key, subject, profile(not_before=NOW.replace(tzinfo=None))),
        (h.inter, h.inter_key, subject, profile(not_before=h.inter.not_valid_after_utc + timedelta(days=1),
                                                not_after=h.inter.not_valid_after_utc + timedelta(days=2))),
        (h.inter, h.inter_key, subject, profile(common_name="x" * 65)),
        (h.inter, h.inter_key, subject, profile(common_name="a\x00b")),
        (h.inter, h.inter_key, subject, profile(dns_names=("bücher.example",))),
    ]
    for issuer, issuer_key, public_key, leaf_profile in cases:
        with pytest.raises(InvalidProfile):
            sign_leaf(issuer, issuer_key, public_key, leaf_profile)  # type: ignore[arg-type]
    weak = rsa.generate_private_key(65537, 1024).public_key()
    with pytest.raises(ValueError):
        sign_leaf(h.inter, h.inter_key, weak, profile())


def test_intermediate_path_lengths() -> None:
    h = hierarchy(EC)
    with pytest.raises(InvalidProfile):  # the intermediate has path length 0
        sign_intermediate(h.inter, h.inter_key, key(EC, 4).public_key(), common_name="Too deep",
                          not_before=NOW, not_after=NOW + timedelta(days=1))
    root = build_root_ca(key(EC, 5), common_name="Root 2", not_before=NOW, not_after=NOW + timedelta(days=10),
                         max_path_length=2)
    child = sign_intermediate(root, key(EC, 5), key(EC, 4).public_key(), common_name="Child",
                              not_before=NOW, not_after=NOW + timedelta(days=5))
    assert ext(child, x509.BasicConstraints).value.path_length == 1
    with pytest.raises(InvalidProfile):
        sign_intermediate(root, key(EC, 5), key(EC, 4).public_key(), common_name="Child", not_before=NOW,
                          not_after=NOW + timedelta(days=5), max_path_length=2)
    with pytest.raises(InvalidProfile):
        build_root_ca(key(EC, 5), common_name="R", not_before=NOW, not_after=NOW + timedelta(days=1),
                      max_path_length=-1)
    with pytest.raises(InvalidProfile):
        build_root_ca(key(EC, 5), common_name="", not_before=NOW, not_after=NOW + timedelta(days=1))


def test_intermediate_carries_the_publication_of_its_issuer() -> None:
    h = hierarchy(EC)
    publication = Publication(crl_urls=("http://pki.test/root.crl",), ocsp_urls=(), ca_issuer_urls=())
    inter = sign_intermediate(h.root, h.root_key, key(EC, 4).public_key(), common_name="Published",
                              not_before=NOW, not_after=NOW + timedelta(days=5), publication=publication)
    points = ext(inter, x509.CRLDistributionPoints).value
    assert points[0].full_name == [x509.UniformResourceIdentifier("http://pki.test/root.crl")]


@pytest.mark.parametrize("spec", [EC, KeySpec("rsa", 3072), KeySpec("ed25519", 0)], ids=str)
def test_ca_csr_asks_to_be_a_ca(spec: KeySpec) -> None:
    csr = build_ca_csr(key(spec, 6), common_name="Acme External Intermediate")
    assert csr.is_signature_valid
    assert csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Acme External Intermediate"
    assert csr.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert csr.public_key() == key(spec, 6).public_key()


def _sign_with_openssl(
    tmp_path: Path, csr: x509.CertificateSigningRequest, extensions: str
) -> tuple[x509.Certificate, x509.Certificate]:
    """An external root made by openssl, and the CSR signed by it."""
    assert openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                   "-keyout", str(tmp_path / "ext-root.key"), "-out", str(tmp_path / "ext-root.pem"),
                   "-subj", "/CN=External Root", "-days", "30",
                   "-addext", "keyUsage=critical,keyCertSign,cRLSign").returncode == 0
    (tmp_path / "inter.csr").write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ext.cnf").write_text(f"[v3]\n{extensions}\n")
    result = openssl("x509", "-req", "-in", str(tmp_path / "inter.csr"), "-CA", str(tmp_path / "ext-root.pem"),
                     "-CAkey", str(tmp_path / "ext-root.key"), "-CAcreateserial", "-days", "10",
                     "-extfile", str(tmp_path / "ext.cnf"), "-extensions", "v3",
                     "-out", str(tmp_path / "inter.pem"))
    assert result.returncode == 0, result.stderr
    return (load_certificate((tmp_path / "inter.pem").read_text()),
            load_certificate((tmp_path / "ext-root.pem").read_bytes()))


def test_an_intermediate_signed_by_an_external_openssl_root_is_accepted(tmp_path: Path) -> None:
    inter_key = key(EC, 7)
    csr = build_ca_csr(inter_key, common_name="Acme External Intermediate")
    inter, root = _sign_with_openssl(tmp_path, csr, "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                                                    "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
    check_signed_ca_certificate(inter, inter_key, [root])
    check_signed_ca_certificate(inter, inter_key, [root], at=NOW + timedelta(minutes=5))
    with pytest.raises(InvalidCertificate, match="not valid at"):
        check_signed_ca_certificate(inter, inter_key, [root], at=NOW + timedelta(days=20))
    # ... and what it then issues verifies under the external root.
    leaf = sign_leaf(inter, inter_key, key(EC, 3).public_key(), profile())
    result = openssl("verify", "-x509_strict", "-CAfile", write_pem(tmp_path / "r.pem", root),
                     "-untrusted", write_pem(tmp_path / "i.pem", inter), write_pem(tmp_path / "l.pem", leaf))
    assert result.stdout.strip().endswith(": OK"), result.stdout + result.stderr


def test_an_external_signature_without_ca_rights_is_refused(tmp_path: Path) -> None:
    inter_key = key(EC, 7)
    csr = build_ca_csr(inter_key, common_name="Acme External Intermediate")
    inter, root = _sign_with_openssl(tmp_path, csr, "basicConstraints=critical,CA:FALSE")
    with pytest.raises(InvalidCertificate, match="not a CA certificate"):
        check_signed_ca_certificate(inter, inter_key, [root])


def test_check_signed_ca_certificate_refuses_broken_chains() -> None:
    h = hierarchy(EC)
    other = hierarchy(KeySpec("ec", 384))
    # a deeper, valid chain first
    root = build_root_ca(key(EC, 5), common_name="Deep Root", not_before=NOW, not_after=NOW + timedelta(days=10))
    mid = sign_intermediate(root, key(EC, 5), key(EC, 4).public_key(), common_name="Mid", not_before=NOW,
                            not_after=NOW + timedelta(days=9))
    low = sign_intermediate(mid, key(EC, 4), key(EC, 8).public_key(), common_name="Low", not_before=NOW,
                            not_after=NOW + timedelta(days=8))
    check_signed_ca_certificate(low, key(EC, 8), [mid, root])

    with pytest.raises(InvalidCertificate, match="not for this CA's key"):
        check_signed_ca_certificate(h.inter, key(EC, 3), [h.root])
    with pytest.raises(InvalidCertificate, match="not a CA"):
        check_signed_ca_certificate(h.leaf, h.leaf_key, [h.inter, h.root])
    with pytest.raises(InvalidCertificate, match="empty"):
        check_signed_ca_certificate(h.inter, h.inter_key, [])
    with pytest.raises(InvalidCertificate, match="did not sign"):
        check_signed_ca_certificate(h.inter, h.inter_key, [other.root])
    with pytest.raises(InvalidCertificate, match="self-signed root"):
        check_signed_ca_certificate(low, key(EC, 8), [mid])
    with pytest.raises(InvalidCertificate, match="did not sign"):
        check_signed_ca_certificate(low, key(EC, 8), [mid, other.root])
    # The intermediate (path length 0) cannot have a CA below it.
    with pytest.raises(InvalidCertificate, match="allows 0"):
        below = _forge_ca(h.inter, h.inter_key, key(EC, 8), "Below")
        check_signed_ca_certificate(below, key(EC, 8), [h.inter, h.root])
    # A forgery: the right issuer name, the wrong key.
    impostor = _forge_ca(h.root, key(EC, 9), key(EC, 8), "Impostor", issuer_name=h.root.subject)
    with pytest.raises(InvalidCertificate, match="did not sign"):
        check_signed_ca_certificate(impostor, key(EC, 8), [h.root])
    with pytest.raises(InvalidCertificate, match="longer"):
        check_signed_ca_certificate(h.inter, h.inter_key, [h.root] * 9)


def _forge_ca(issuer: x509.Certificate, signing_key: object, subject_key: object, name: str,
              issuer_name: x509.Name | None = None) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name or issuer.subject)
        .public_key(subject_key.public_key())  # type: ignore[attr-defined]
        .serial_number(new_serial())
        .not_valid_before(NOW)
        .not_valid_after(NOW + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    return builder.sign(signing_key, hashes.SHA256())  # type: ignore[arg-type]


def test_pem_and_der_round_trips_and_fingerprint(tmp_path: Path) -> None:
    leaf = hierarchy(EC).leaf
    pem = certificate_pem(leaf)
    assert pem.startswith("-----BEGIN CERTIFICATE-----")
    assert load_certificate(pem) == leaf
    assert load_certificate(leaf.public_bytes(serialization.Encoding.DER)) == leaf
    (tmp_path / "leaf.pem").write_text(pem)
    result = openssl("x509", "-in", str(tmp_path / "leaf.pem"), "-noout", "-fingerprint", "-sha256")
    assert fingerprint_sha256(leaf) == result.stdout.strip().split("=")[1].replace(":", "").lower()
    assert len(fingerprint_sha256(leaf)) == 64


def test_load_certificate_refuses_garbage_and_bundles() -> None:
    h = hierarchy(EC)
    bundle = certificate_pem(h.inter) + certificate_pem(h.root)
    assert load_certificate_chain(bundle) == [h.inter, h.root]
    der = h.leaf.public_bytes(serialization.Encoding.DER)
    for bad in ["", "garbage", b"\x30\x03\x02\x01\x01", der[:-10], bundle, "-----BEGIN CERTIFICATE-----\nAAAA\n"
                "-----END CERTIFICATE-----\n", "x" * 70_000, certificate_pem(h.leaf).replace("M", "N", 3)]:
        with pytest.raises(InvalidCertificate):
            load_certificate(bad)
    with pytest.raises(InvalidCertificate):
        load_certificate_chain("no certificates here")
