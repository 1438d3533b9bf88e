"""Bearer-token authentication: ``Authorization: Bearer <token>`` -> Principal, or one precise error code.

Order of checks for a JWT: the unverified header's ``alg`` against a fixed allow-list (never ``none``, never HS*),
``iss`` against the trusted issuers (the built-in one, ScaiKey's), the key by issuer (built-in key, or ScaiKey's
JWKS by ``kid``), then PyJWT verifies signature, ``exp``/``nbf``/``iat`` (with leeway) and ``aud``; finally the
``jti`` against the revocation set.

Successful verifications are cached per token (keyed by its SHA-256, until it expires) so the hot path skips the
signature check and the PAT lookup; the revocation check runs on every request. Work done later on behalf of a
caller authenticated earlier (an audit export's job) applies the same expiry and revocation rules through
``recheck``. Tokens and keys never appear in an error message or a log line.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey

from scaivault.auth.issuer import BuiltinIssuer
from scaivault.auth.jwks import ALLOWED_ALGORITHMS, JwksClient
from scaivault.auth.pats import PAT_PREFIX, find_pat
from scaivault.auth.principal import Principal
from scaivault.auth.revocation import RevocationCache
from scaivault.domain.errors import (
    AuthenticationRequired,
    ServiceUnavailable,
    TokenAlgorithmNotAllowed,
    TokenAudienceInvalid,
    TokenExpired,
    TokenInvalid,
    TokenIssuerInvalid,
    TokenRevoked,
)

log = logging.getLogger(__name__)

MAX_TOKEN_LENGTH = 16 * 1024
_VISIBLE_ASCII = re.compile(r"[!-~]+")  # printable ASCII, no white space or control characters
_KEY_TYPES = {"EdDSA": Ed25519PublicKey, "RS256": RSAPublicKey, "ES256": EllipticCurvePublicKey}
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti"]
LEEWAY = timedelta(seconds=30)  # for clocks slightly apart: a JWT is accepted until its exp plus this


class TokenAuthenticator:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        issuer: BuiltinIssuer,
        jwks: JwksClient | None,
        scaikey_issuer: str | None,
        audience: str,
        revocations: RevocationCache,
        leeway: timedelta = LEEWAY,
        cache_size: int = 10_000,
        revocation_max_age: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``revocation_max_age``: if nobody refreshed ``revocations`` for that many seconds (or ever), the next
        request refreshes it inline; if that fails, requests fail closed with 503. ``clock`` (Unix seconds): what
        cached verifications and ``recheck`` hold tokens' expiry against (public, so tests can move it)."""
        if scaikey_issuer and jwks is None:
            raise ValueError("a ScaiKey issuer needs a JWKS client")
        self._pool = pool
        self._issuer = issuer
        self._jwks = jwks
        self._scaikey_issuer = scaikey_issuer or None
        self._audience = audience
        self._revocations = revocations
        self._leeway = leeway
        self._cache: OrderedDict[bytes, tuple[Principal, float]] = OrderedDict()
        self._cache_size = max(1, cache_size)
        self._revocation_max_age = revocation_max_age
        self._refresh_lock = asyncio.Lock()
        self.clock = clock

    def __repr__(self) -> str:
        return f"<TokenAuthenticator audience={self._audience!r} cached={len(self._cache)}>"

    async def authenticate(self, authorization_header: str | None) -> Principal:
        token = _bearer_token(authorization_header)
        await self._ensure_revocations_fresh()
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            principal, expires = cached
            if self.clock() > expires:
                self._cache.pop(digest, None)
                raise TokenExpired()
            self._cache.move_to_end(digest)
        elif token.startswith(PAT_PREFIX):
            principal, expires = await self._verify_pat(token)
        else:
            principal, expires = await self._verify_jwt(token)
        if self._revocations.is_revoked(*_revocation_key(principal)):
            raise TokenRevoked()
        if cached is None:
            self._remember(digest, principal, expires)
        return principal

    async def recheck(self, principal: Principal) -> None:
        """Would a request with this principal's token still be accepted? Raises ``TokenExpired`` past its expiry
        (with the leeway ``authenticate`` allows, on the clock its cache uses), ``TokenRevoked`` when it has been
        revoked since, by a revocation list no staler than requests accept (refreshed first, or
        ``ServiceUnavailable``)."""
        if self.clock() > self._usable_until(principal):
            raise TokenExpired()
        await self._ensure_revocations_fresh()
        if self._revocations.is_revoked(*_revocation_key(principal)):
            raise TokenRevoked()

    def _usable_until(self, principal: Principal) -> float:
        """Until when (Unix seconds) the token is accepted: a JWT until its ``exp`` plus the leeway, a PAT until its
        expiry."""
        if principal.expires_at is None:
            return math.inf
        leeway = self._leeway if principal.token_kind == "jwt" else timedelta(0)
        return (principal.expires_at + leeway).timestamp()

    def forget(self, authorization_header: str | None = None) -> None:
        """Drop cached verifications (one token's, or all)."""
        if authorization_header is None:
            self._cache.clear()
        else:
            token = _bearer_token(authorization_header)
            self._cache.pop(hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest(), None)

    # --- personal access tokens ---------------------------------------------------------------------------------

    async def _verify_pat(self, token: str) -> tuple[Principal, float]:
        async with self._pool.acquire() as conn:
            row = await find_pat(conn, token)
        if row is None:
            raise TokenInvalid()
        if row["revoked_at"] is not None:
            raise TokenRevoked()
        expires_at: datetime = row["expires_at"]
        if expires_at <= datetime.now(UTC):
            raise TokenExpired()
        principal = Principal(
            identity_id=row["identity_id"],
            identity_type=row["identity_type"],
            display_name=row["display_name"],
            tenant_id=row["tenant_id"],
            partner_id=row["partner_id"],
            scopes=frozenset(row["scopes"]),
            roles=frozenset(row["roles"]),
            groups=tuple(row["groups"]),
            mfa_verified_at=None,
            expires_at=expires_at,
            issued_at=row["created_at"],
            token_kind="pat",
            token_id=row["id"],
        )
        return principal, self._usable_until(principal)

    # --- JWTs ---------------------------------------------------------------------------------------------------

    async def _verify_jwt(self, token: str) -> tuple[Principal, float]:
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenInvalid() from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
            raise TokenAlgorithmNotAllowed()
        iss = unverified.get("iss")
        kid = header.get("kid")
        key: Any
        if isinstance(iss, str) and iss == self._issuer.issuer:
            key = self._issuer.public_key(kid) if isinstance(kid, str) else None
            if key is None or alg != "EdDSA":
                raise TokenInvalid()
        elif isinstance(iss, str) and self._scaikey_issuer is not None and iss == self._scaikey_issuer:
            assert self._jwks is not None
            key = await self._jwks.get_signing_key(kid)  # TokenInvalid / ServiceUnavailable
            if key.algorithm_name != alg:
                raise TokenInvalid()
        else:
            raise TokenIssuerInvalid()
        public_key = key.key if isinstance(key, jwt.PyJWK) else key
        if not isinstance(public_key, _KEY_TYPES[alg]):
            raise TokenInvalid()
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[alg],
                audience=self._audience,
                issuer=iss,
                leeway=self._leeway,
                options={"require": _REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except (jwt.InvalidAudienceError, jwt.MissingRequiredClaimError) as exc:
            if isinstance(exc, jwt.InvalidAudienceError) or exc.claim == "aud":
                raise TokenAudienceInvalid() from None
            raise TokenInvalid() from None
        except jwt.InvalidIssuerError:
            raise TokenIssuerInvalid() from None
        except jwt.InvalidAlgorithmError:
            raise TokenAlgorithmNotAllowed() from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise TokenInvalid() from None
        principal = Principal.from_claims(claims, token_kind="jwt")
        return principal, self._usable_until(principal)

    # --- helpers ------------------------------------------------------------------------------------------------

    def _remember(self, digest: bytes, principal: Principal, expires: float) -> None:
        self._cache[digest] = (principal, expires)
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _ensure_revocations_fresh(self) -> None:
        if self._revocations.age() < self._revocation_max_age:
            return
        async with self._refresh_lock:
            if self._revocations.age() < self._revocation_max_age:
                return
            try:
                async with self._pool.acquire() as conn:
                    await self._revocations.refresh(conn)
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.error("token revocation list unavailable", extra={"error": type(exc).__name__})
                raise ServiceUnavailable("The token revocation list is unavailable") from None


def _revocation_key(principal: Principal) -> tuple[str, str]:
    return ("pat" if principal.token_kind == "pat" else "jti", principal.token_id)


def _bearer_token(header: str | None) -> str:
    if not isinstance(header, str) or not header.strip():
        raise AuthenticationRequired()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationRequired()
    if len(token) > MAX_TOKEN_LENGTH or not _VISIBLE_ASCII.fullmatch(token):
        raise TokenInvalid()
    return token


__all__ = ["TokenAuthenticator"]
