"""The built-in token issuer: Ed25519 (EdDSA) JWTs with the claims ScaiKey puts in, for self-hosting without ScaiKey
and for the CLI.

The signing key lives in ``scaivault_issuer_keys``, its private half wrapped by the root key provider with the kid
as AAD. It is made on first use; an advisory lock makes two processes starting at once agree on one key.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from scaivault.auth.principal import identity_type_of
from scaivault.crypto.aead import DecryptionFailed
from scaivault.crypto.keyring import issuer_key_aad
from scaivault.crypto.root_keys import RootKeyProvider
from scaivault.domain.durations import MAX_DURATION
from scaivault.ids import new_id

# pg_advisory_xact_lock id meaning "the issuer key is being created" (the migration lock is 0x5CA17A01).
ISSUER_LOCK_ID = 0x5CA1_7A02
ALGORITHM = "EdDSA"

_RAW = serialization.Encoding.Raw


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _public_jwk(kid: str, public_key: Ed25519PublicKey) -> dict[str, str]:
    raw = public_key.public_bytes(_RAW, serialization.PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(raw), "kid": kid, "alg": ALGORITHM, "use": "sig"}


class BuiltinIssuer:
    def __init__(
        self,
        *,
        issuer: str,
        audience: str,
        kid: str,
        private_key: Ed25519PrivateKey,
        public_jwks: Iterable[Mapping[str, Any]],
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = kid
        self._private_key = private_key
        self._jwks = [dict(jwk) for jwk in public_jwks]
        self._public_keys = {
            jwk["kid"]: Ed25519PublicKey.from_public_bytes(_b64url_decode(jwk["x"])) for jwk in self._jwks
        }

    def __repr__(self) -> str:
        return f"<BuiltinIssuer iss={self.issuer!r} kid={self.kid!r}>"

    @classmethod
    async def load(
        cls, conn: asyncpg.Connection, root: RootKeyProvider, *, issuer: str, audience: str
    ) -> BuiltinIssuer:
        """Load the signing key, creating it on first use (exactly once, even with processes racing)."""
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", ISSUER_LOCK_ID)
            rows = await conn.fetch(
                """SELECT kid, root_key_id, wrapped_private_key, public_jwk::text AS public_jwk, retired_at
                   FROM scaivault_issuer_keys ORDER BY created_at, kid"""
            )
            active = [row for row in rows if row["retired_at"] is None]
            if active:
                row = active[-1]
                kid = row["kid"]
                raw = await root.unwrap(row["root_key_id"], bytes(row["wrapped_private_key"]), issuer_key_aad(kid))
                private_key = Ed25519PrivateKey.from_private_bytes(raw)
                stored = orjson.loads(row["public_jwk"])
                if not hmac.compare_digest(_public_jwk(kid, private_key.public_key())["x"], stored.get("x", "")):
                    raise DecryptionFailed("The issuer's stored public key does not match its private key")
            else:
                kid = new_id("ik_")
                private_key = Ed25519PrivateKey.generate()
                raw = private_key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
                root_key_id, wrapped = await root.wrap(raw, issuer_key_aad(kid))
                await conn.execute(
                    """INSERT INTO scaivault_issuer_keys (kid, algorithm, root_key_id, wrapped_private_key, public_jwk)
                       VALUES ($1, $2, $3, $4, $5::text::jsonb) ON CONFLICT (kid) DO NOTHING""",
                    kid,
                    ALGORITHM,
                    root_key_id,
                    wrapped,
                    orjson.dumps(_public_jwk(kid, private_key.public_key())).decode(),
                )
                rows = [*rows, {"public_jwk": orjson.dumps(_public_jwk(kid, private_key.public_key())).decode()}]
        return cls(
            issuer=issuer,
            audience=audience,
            kid=kid,
            private_key=private_key,
            public_jwks=[orjson.loads(row["public_jwk"]) for row in rows],
        )

    def issue(
        self,
        *,
        identity_id: str,
        tenant_id: str | None,
        partner_id: str | None,
        scopes: Iterable[str] | str,
        roles: Iterable[str] = (),
        groups: Iterable[str] = (),
        ttl: timedelta,
        mfa_verified_at: datetime | None = None,
        display_name: str | None = None,
        identity_type: str | None = None,
    ) -> str:
        """Sign a token with ScaiKey's claim set. ``scopes`` may be a list or a space-separated string."""
        if not isinstance(identity_id, str) or not identity_id:
            raise ValueError("identity_id is required")
        if not timedelta(0) < ttl <= MAX_DURATION:
            raise ValueError("ttl must be positive and at most 100 years")
        scope_list = scopes.split() if isinstance(scopes, str) else list(dict.fromkeys(scopes))
        now = datetime.now(UTC)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": identity_id,
            "identity_type": identity_type or identity_type_of(identity_id),
            "scope": " ".join(scope_list),
            "scopes": scope_list,
            "roles": list(roles),
            "groups": list(groups),
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + ttl).timestamp()),
            "jti": new_id("tok_"),
        }
        if tenant_id is not None:
            claims["tenant_id"] = tenant_id
        if partner_id is not None:
            claims["partner_id"] = partner_id
        if display_name is not None:
            claims["display_name"] = display_name
        if mfa_verified_at is not None:
            claims["mfa_verified_at"] = int(mfa_verified_at.timestamp())
        return self.sign(claims)

    def sign(self, claims: Mapping[str, Any]) -> str:
        """A JWT of exactly ``claims``, signed with the current key (``issue`` builds ScaiKey's claim set first; the
        authenticator's tests sign others: expired, for another audience, missing a claim)."""
        return jwt.encode(
            dict(claims), self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": "JWT"}
        )

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        return self._public_keys.get(kid)

    def jwks(self) -> dict[str, list[dict[str, Any]]]:
        """The public keys as a JWK Set (for ``/.well-known/jwks.json``-style serving)."""
        return {"keys": [dict(jwk) for jwk in self._jwks]}
