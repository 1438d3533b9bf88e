"""Keys and a small CA hierarchy shared by the PKI tests: generated once per run (RSA 4096 takes seconds), and
times around the real clock, because `openssl verify` and `openssl ocsp` judge validity against it."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

from cryptography import x509

from scaivault.pki.certificates import (
    LeafProfile,
    Publication,
    build_root_ca,
    certificate_pem,
    sign_intermediate,
    sign_leaf,
)
from scaivault.pki.keys import KeySpec, PrivateKey, generate_private_key

NOW = datetime.now(UTC).replace(microsecond=0)
SPECS = [KeySpec("rsa", 2048), KeySpec("rsa", 3072), KeySpec("rsa", 4096), KeySpec("ec", 256), KeySpec("ec", 384),
         KeySpec("ed25519", 0)]


@cache
def key(spec: KeySpec, slot: int = 0) -> PrivateKey:
    """The ``slot``-th key of ``spec`` (different slots give different keys)."""
    return generate_private_key(spec)


@dataclass(frozen=True)
class Hierarchy:
    root_key: PrivateKey
    root: x509.Certificate
    inter_key: PrivateKey
    inter: x509.Certificate
    leaf_key: PrivateKey
    leaf: x509.Certificate


PUBLICATION = Publication(
    crl_urls=("http://pki.test/v1/pki/ca/ca_inter/crl",),
    ocsp_urls=("http://pki.test/v1/pki/ca/ca_inter/ocsp",),
    ca_issuer_urls=("http://pki.test/v1/pki/ca/ca_inter/certificate",),
)


@cache
def hierarchy(spec: KeySpec, leaf_spec: KeySpec | None = None) -> Hierarchy:
    """root -> intermediate -> leaf for billing.svc.cluster.local, every CA key of ``spec``."""
    root_key, inter_key = key(spec, 0), key(spec, 1)
    leaf_key = key(leaf_spec or spec, 2)
    root = build_root_ca(root_key, common_name="Test Root CA", not_before=NOW - timedelta(days=1),
                         not_after=NOW + timedelta(days=3650))
    inter = sign_intermediate(root, root_key, inter_key.public_key(), common_name="Test Intermediate CA",
                              not_before=NOW - timedelta(days=1), not_after=NOW + timedelta(days=1825),
                              max_path_length=0)
    profile = LeafProfile(common_name="billing.svc.cluster.local", dns_names=("billing.svc.cluster.local",),
                          not_before=NOW - timedelta(hours=1), not_after=NOW + timedelta(days=7))
    leaf = sign_leaf(inter, inter_key, leaf_key.public_key(), profile, publication=PUBLICATION)
    return Hierarchy(root_key, root, inter_key, inter, leaf_key, leaf)


def write_pem(path: Path, *certificates: x509.Certificate) -> str:
    path.write_text("".join(certificate_pem(cert) for cert in certificates))
    return str(path)


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60, check=False)
