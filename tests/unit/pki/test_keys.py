"""Key specs, generation, PEM round trips, and which keys are refused."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from scaivault.domain.errors import ValidationFailed
from scaivault.pki.keys import (
    KEY_TYPES,
    KeySpec,
    UnsupportedKey,
    check_key_spec,
    key_spec_of,
    load_private_key,
    private_key_pem,
    signature_hash,
)
from tests.unit.pki.material import SPECS, key


@pytest.mark.parametrize(
    ("key_type", "key_bits", "expected"),
    [
        ("rsa", None, KeySpec("rsa", 2048)),
        ("rsa", 2048, KeySpec("rsa", 2048)),
        ("rsa", 3072, KeySpec("rsa", 3072)),
        ("rsa", 4096, KeySpec("rsa", 4096)),
        ("ec", None, KeySpec("ec", 256)),
        ("ec", 256, KeySpec("ec", 256)),
        ("ec", 384, KeySpec("ec", 384)),
        ("ed25519", None, KeySpec("ed25519", 0)),
        ("ed25519", 0, KeySpec("ed25519", 0)),
    ],
)
def test_check_key_spec_accepts_the_supported_shapes(key_type: str, key_bits: int | None, expected: KeySpec) -> None:
    assert check_key_spec(key_type, key_bits) == expected


@pytest.mark.parametrize(
    ("key_type", "key_bits", "field"),
    [
        ("dsa", None, "key_type"),
        ("RSA", 2048, "key_type"),
        (None, None, "key_type"),
        (1, None, "key_type"),
        ("rsa", 1024, "key_bits"),
        ("rsa", 2047, "key_bits"),
        ("rsa", 8192, "key_bits"),
        ("rsa", "2048", "key_bits"),
        ("rsa", 2048.0, "key_bits"),
        ("rsa", True, "key_bits"),
        ("ec", 521, "key_bits"),
        ("ec", 224, "key_bits"),
        ("ec", 2048, "key_bits"),
        ("ed25519", 256, "key_bits"),
        ("ed25519", False, "key_bits"),
    ],
)
def test_check_key_spec_names_the_bad_field(key_type: object, key_bits: object, field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        check_key_spec(key_type, key_bits, field_prefix="ca.")
    assert raised.value.details["fields"][0]["field"] == f"ca.{field}"


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_generated_keys_have_their_spec_and_survive_a_pem_round_trip(spec: KeySpec) -> None:
    private = key(spec)
    assert spec.key_type in KEY_TYPES
    assert key_spec_of(private.public_key()) == spec
    assert key_spec_of(private) == spec
    pem = private_key_pem(private)
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, unencrypted
    loaded = load_private_key(pem)
    assert private_key_pem(loaded) == pem
    assert load_private_key(pem.encode()).public_key() == private.public_key()


@pytest.mark.parametrize(
    ("spec", "digest"),
    [
        (KeySpec("rsa", 2048), hashes.SHA256),
        (KeySpec("rsa", 4096), hashes.SHA256),
        (KeySpec("ec", 256), hashes.SHA256),
        (KeySpec("ec", 384), hashes.SHA384),
    ],
    ids=str,
)
def test_signature_hash_follows_the_key(spec: KeySpec, digest: type[hashes.HashAlgorithm]) -> None:
    assert isinstance(signature_hash(key(spec)), digest)
    assert isinstance(signature_hash(key(spec).public_key()), digest)


def test_ed25519_signs_without_a_separate_hash() -> None:
    assert signature_hash(key(KeySpec("ed25519", 0))) is None


def test_traditional_pem_keys_load_too() -> None:
    private = key(KeySpec("ec", 256))
    traditional = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert b"EC PRIVATE KEY" in traditional
    assert load_private_key(traditional).public_key() == private.public_key()


@pytest.mark.parametrize(
    "public_key",
    [
        pytest.param(lambda: rsa.generate_private_key(65537, 1024).public_key(), id="rsa-1024"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP521R1()).public_key(), id="p-521"),
        pytest.param(lambda: ec.generate_private_key(ec.SECP256K1()).public_key(), id="secp256k1"),
        pytest.param(lambda: dsa.generate_private_key(2048).public_key(), id="dsa"),
        pytest.param(lambda: ed448.Ed448PrivateKey.generate().public_key(), id="ed448"),
        pytest.param(lambda: "not a key", id="string"),
    ],
)
def test_key_spec_of_refuses_what_the_ca_does_not_accept(public_key: object) -> None:
    with pytest.raises(UnsupportedKey):
        key_spec_of(public_key() if callable(public_key) else public_key)  # type: ignore[operator]


def test_load_private_key_refuses_unsupported_or_garbled_keys_without_echoing_them() -> None:
    weak = rsa.generate_private_key(65537, 1024)
    weak_pem = weak.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    with pytest.raises(UnsupportedKey):
        load_private_key(weak_pem)
    dsa_pem = dsa.generate_private_key(2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(UnsupportedKey):
        load_private_key(dsa_pem)
    good = private_key_pem(key(KeySpec("ec", 256)))
    broken = good.replace(good.splitlines()[1], good.splitlines()[1][::-1])
    with pytest.raises(UnsupportedKey) as raised:
        load_private_key(broken)
    assert good.splitlines()[1][:20] not in str(raised.value)
    assert broken.splitlines()[1][:20] not in str(raised.value)
    encrypted = key(KeySpec("ec", 256)).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(UnsupportedKey):
        load_private_key(encrypted)
    with pytest.raises(UnsupportedKey):
        load_private_key("x" * 100_000)


def test_ed25519_key_of_an_ed25519_public_key() -> None:
    assert key_spec_of(ed25519.Ed25519PrivateKey.generate().public_key()) == KeySpec("ed25519", 0)
