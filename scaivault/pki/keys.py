"""Key types the CA issues and accepts: RSA 2048/3072/4096, EC P-256/P-384 and Ed25519.

The list is short on purpose: every relying party we target (OpenSSL, Go, browsers, Java) understands these, and a
smaller set is a smaller attack surface (no DSA, no exotic curves, no RSA below 2048 bits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scaivault.domain.labels import field_error

KEY_TYPES = ("rsa", "ec", "ed25519")
RSA_KEY_BITS = (2048, 3072, 4096)
EC_KEY_BITS = (256, 384)
DEFAULT_KEY_BITS = {"rsa": 2048, "ec": 256, "ed25519": 0}
# A PEM private key of RSA 4096 is about 3.3 KiB: anything far larger is not a key we made or want to parse.
MAX_KEY_PEM_BYTES = 16 * 1024

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

_CURVES: dict[int, ec.EllipticCurve] = {256: ec.SECP256R1(), 384: ec.SECP384R1()}
_CURVE_BITS = {"secp256r1": 256, "secp384r1": 384}


class UnsupportedKey(ValueError):
    """A key of a type or size the CA does not issue or accept (DSA, other curves, RSA below 2048 bits, garbage)."""


@dataclass(frozen=True)
class KeySpec:
    """``key_bits`` is the RSA modulus size or the EC curve size; 0 for Ed25519, whose size is fixed."""

    key_type: str
    key_bits: int


def check_key_spec(key_type: object, key_bits: object, *, field_prefix: str = "") -> KeySpec:
    """The spec named by a request's ``key_type`` and ``key_bits``; ``key_bits`` None means the type's default.

    Raises ``ValidationFailed`` naming ``{field_prefix}key_type`` or ``{field_prefix}key_bits``.
    """
    if not isinstance(key_type, str) or key_type not in KEY_TYPES:
        raise field_error(f"{field_prefix}key_type", f"must be one of {', '.join(KEY_TYPES)}")
    bits_field = f"{field_prefix}key_bits"
    # bool is an int in Python, and `true` must not quietly mean a 1-bit key.
    if key_bits is not None and (isinstance(key_bits, bool) or not isinstance(key_bits, int)):
        raise field_error(bits_field, "must be an integer")
    if key_type == "ed25519":
        if key_bits not in (None, 0):
            raise field_error(bits_field, "ed25519 keys have a fixed size: omit key_bits or give 0")
        return KeySpec("ed25519", 0)
    allowed = RSA_KEY_BITS if key_type == "rsa" else EC_KEY_BITS
    if key_bits is None:
        return KeySpec(key_type, DEFAULT_KEY_BITS[key_type])
    if key_bits not in allowed:
        raise field_error(bits_field, f"{key_type} keys must have one of {', '.join(map(str, allowed))} bits")
    return KeySpec(key_type, key_bits)


def generate_private_key(spec: KeySpec) -> PrivateKey:
    if spec.key_type == "rsa" and spec.key_bits in RSA_KEY_BITS:
        return rsa.generate_private_key(public_exponent=65537, key_size=spec.key_bits)
    if spec.key_type == "ec" and spec.key_bits in _CURVES:
        return ec.generate_private_key(_CURVES[spec.key_bits])
    if spec.key_type == "ed25519" and spec.key_bits == 0:
        return ed25519.Ed25519PrivateKey.generate()
    raise UnsupportedKey(f"unsupported key spec {spec.key_type}/{spec.key_bits}")


def private_key_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM, unencrypted: callers seal it before it goes anywhere."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def load_private_key(pem: str | bytes) -> PrivateKey:
    """A PEM private key (PKCS#8 or traditional) of a supported type; ``UnsupportedKey`` otherwise.

    The message never repeats the input: it may be a real key.
    """
    data = pem.encode("utf-8") if isinstance(pem, str) else pem
    if len(data) > MAX_KEY_PEM_BYTES:
        raise UnsupportedKey("the private key PEM is too large")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UnsupportedKey("not an unencrypted PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UnsupportedKey("unsupported private key type")
    key_spec_of(key.public_key())
    return key


def key_spec_of(public_key: object) -> KeySpec:
    """The spec of a public (or private) key; ``UnsupportedKey`` for DSA, other curves, RSA below 2048 bits."""
    if isinstance(public_key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        public_key = public_key.public_key()
    if isinstance(public_key, rsa.RSAPublicKey):
        # RSA sizes between the named ones (e.g. 2056 bits from some HSMs) are still sound; below 2048 is not.
        if public_key.key_size < 2048 or public_key.key_size > 8192:
            raise UnsupportedKey("RSA keys must have 2048 to 8192 bits")
        if public_key.public_numbers().e < 65537:
            raise UnsupportedKey("RSA keys must have a public exponent of at least 65537")
        return KeySpec("rsa", public_key.key_size)
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        bits = _CURVE_BITS.get(public_key.curve.name)
        if bits is None:
            raise UnsupportedKey("EC keys must be on P-256 or P-384")
        return KeySpec("ec", bits)
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return KeySpec("ed25519", 0)
    raise UnsupportedKey("unsupported key type: only RSA, EC (P-256, P-384) and Ed25519 keys are accepted")


def signature_hash(key: object) -> hashes.SHA256 | hashes.SHA384 | None:
    """The digest a CA key signs with: matched to the key's strength (SHA-384 for P-384), None for Ed25519, which
    hashes internally."""
    spec = key_spec_of(key)
    if spec.key_type == "ed25519":
        return None
    if spec.key_type == "ec" and spec.key_bits == 384:
        return hashes.SHA384()
    return hashes.SHA256()


def public_key_der(key: object) -> bytes:
    """SubjectPublicKeyInfo DER of a public or private key: the form two keys are compared in."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        key = key.public_key()
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise UnsupportedKey("unsupported key type")
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
