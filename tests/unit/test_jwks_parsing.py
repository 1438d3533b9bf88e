"""Reading an identity provider's JWK Set: a key we cannot use is skipped, and the others still count."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scaivault.auth.jwks import parse_jwks


def _ed25519_jwk(kid: str) -> dict[str, Any]:
    raw = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode()}


def test_a_key_whose_curve_is_not_a_name_is_skipped_and_the_others_still_count() -> None:
    odd = [{"kty": "EC", "kid": "odd", "crv": ["P-256"]}, {"kty": "OKP", "kid": "odder", "crv": {"name": "Ed25519"}}]
    assert list(parse_jwks({"keys": [*odd, _ed25519_jwk("k1")]})) == ["k1"]
