"""Bearer tokens end to end: the built-in issuer, ScaiKey JWTs through a real JWKS server, PATs, revocation.

Every refusal has its own error code; no token ever appears in an error or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scaivault.auth import (
    BuiltinIssuer,
    JwksClient,
    Principal,
    RevocationCache,
    TokenAuthenticator,
    find_pat,
    issue_pat,
    revoke,
    revoke_pat,
)
from scaivault.auth.jwks import parse_jwks
from scaivault.auth.revocation import purge_expired
from scaivault.crypto import LocalRootKeyProvider
from scaivault.domain.errors import (
    AuthenticationRequired,
    ScaiVaultError,
    ServiceUnavailable,
    TokenAlgorithmNotAllowed,
    TokenAudienceInvalid,
    TokenExpired,
    TokenInvalid,
    TokenIssuerInvalid,
    TokenRevoked,
)
from tests.helpers import Clock

ISSUER = "http://127.0.0.1:8443/issuer"
SCAIKEY = "https://scaikey.test"
AUDIENCE = "scaivault"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class FakeScaiKey:
    """A JWKS endpoint on 127.0.0.1 with keys we can rotate, and a signer for ScaiKey-style tokens."""

    ALGORITHMS = {
        "RS256": jwt.algorithms.RSAAlgorithm,
        "ES256": jwt.algorithms.ECAlgorithm,
        "EdDSA": jwt.algorithms.OKPAlgorithm,
    }

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, Any]] = {}
        self.hits = 0
        self.status = 200
        self.extra_jwks: list[dict[str, Any]] = []
        self.server: TestServer | None = None

    def add_key(self, kid: str, alg: str = "RS256") -> None:
        if alg == "RS256":
            private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif alg == "ES256":
            private = ec.generate_private_key(ec.SECP256R1())
        else:
            private = ed25519.Ed25519PrivateKey.generate()
        self.keys[kid] = (alg, private)

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, (alg, private) in self.keys.items():
            jwk = self.ALGORITHMS[alg].to_jwk(private.public_key(), as_dict=True)
            keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig"})
        return {"keys": keys + self.extra_jwks}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.status != 200:
            return web.Response(status=self.status, text="down")
        return web.json_response(self.jwks())

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/.well-known/jwks.json"))

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims = {
            "iss": SCAIKEY,
            "aud": AUDIENCE,
            "sub": "sa:reporting-service",
            "scope": "secrets:read secrets:list",
            "tenant_id": "tnt_acme_prod",
            "partner_id": "ptn_acme",
            "roles": ["tenant_admin"],
            "groups": [],
            "iat": now,
            "exp": now + 3600,
            "jti": "tok_" + secrets.token_hex(8),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def sign(self, claims: dict[str, Any], kid: str, *, header_kid: str | None = None) -> str:
        alg, private = self.keys[kid]
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": header_kid or kid})


@pytest.fixture
async def scaikey() -> AsyncIterator[FakeScaiKey]:
    fake = FakeScaiKey()
    fake.add_key("k1")
    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", fake.handle)
    fake.server = TestServer(app, host="127.0.0.1")
    await fake.server.start_server()
    try:
        yield fake
    finally:
        await fake.server.close()


@pytest.fixture
def clock() -> Clock:
    return Clock(now=10_000.0)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def jwks(scaikey: FakeScaiKey, session: aiohttp.ClientSession, clock: Clock) -> JwksClient:
    return JwksClient(scaikey.url, session, clock=clock)


@pytest.fixture
def root(tmp_path: Path) -> LocalRootKeyProvider:
    return LocalRootKeyProvider(tmp_path / "data")


@pytest.fixture
async def issuer(pool: asyncpg.Pool, root: LocalRootKeyProvider) -> BuiltinIssuer:
    async with pool.acquire() as conn:
        return await BuiltinIssuer.load(conn, root, issuer=ISSUER, audience=AUDIENCE)


@pytest.fixture
def revocations() -> RevocationCache:
    return RevocationCache()


@pytest.fixture
def auth(
    pool: asyncpg.Pool, issuer: BuiltinIssuer, jwks: JwksClient, revocations: RevocationCache
) -> TokenAuthenticator:
    return TokenAuthenticator(
        pool, issuer=issuer, jwks=jwks, scaikey_issuer=SCAIKEY, audience=AUDIENCE, revocations=revocations
    )


def builtin_token(issuer: BuiltinIssuer, **overrides: Any) -> str:
    """A token signed with the built-in key but with chosen claims (for expiry, audience... cases)."""
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user:alice@acme.example",
        "scopes": ["secrets:read"],
        "iat": now,
        "exp": now + 600,
        "jti": "tok_" + secrets.token_hex(8),
    }
    claims.update(overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return issuer.sign(claims)


def forged(header: dict[str, Any], claims: dict[str, Any], signer: Any = None) -> str:
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = b"" if signer is None else signer(signing_input.encode())
    return f"{signing_input}.{b64url(signature)}"


async def refused(auth: TokenAuthenticator, header: str | None, error: type[ScaiVaultError]) -> ScaiVaultError:
    with pytest.raises(error) as info:
        await auth.authenticate(header)
    exc = info.value
    assert type(exc) is error, type(exc)
    if header and len(header.split()) > 1:
        token = header.split()[-1]
        text = str(exc) + repr(exc) + repr(exc.details) + repr(exc.__cause__) + repr(exc.__context__)
        assert token not in text and token[-20:] not in text
    return exc


# --- the built-in issuer ------------------------------------------------------------------------------------------


async def test_builtin_token_round_trip(auth: TokenAuthenticator, issuer: BuiltinIssuer) -> None:
    mfa = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    token = issuer.issue(
        identity_id="user:alice@acme.example",
        tenant_id="tnt_acme_prod",
        partner_id="ptn_acme",
        scopes=["secrets:read", "secrets:write"],
        roles=["tenant_admin"],
        groups=["group:sre"],
        ttl=timedelta(hours=1),
        mfa_verified_at=mfa,
        display_name="Alice",
    )
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["scope"] == "secrets:read secrets:write" and claims["scopes"] == ["secrets:read", "secrets:write"]
    assert claims["jti"].startswith("tok_") and claims["mfa_verified_at"] == int(mfa.timestamp())
    assert claims["exp"] - claims["iat"] == 3600 and claims["nbf"] == claims["iat"]

    principal = await auth.authenticate(f"Bearer {token}")
    assert principal == Principal(
        identity_id="user:alice@acme.example",
        identity_type="user",
        display_name="Alice",
        tenant_id="tnt_acme_prod",
        partner_id="ptn_acme",
        scopes=frozenset({"secrets:read", "secrets:write"}),
        roles=frozenset({"tenant_admin"}),
        groups=("group:sre",),
        mfa_verified_at=mfa,
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
        issued_at=datetime.fromtimestamp(claims["iat"], UTC),
        token_kind="jwt",
        token_id=claims["jti"],
    )
    assert principal.has_scope("secrets:write") and not principal.has_scope("admin")
    assert principal.is_tenant_admin and not principal.is_partner_admin
    assert (await auth.authenticate(f"bearer  {token} ")) == principal  # scheme is case-insensitive
    assert issuer.jwks()["keys"][0]["kid"] == issuer.kid and "d" not in issuer.jwks()["keys"][0]
    assert "PRIVATE" not in repr(issuer) and issuer.kid in repr(issuer)


async def test_identity_type_from_prefix(auth: TokenAuthenticator, issuer: BuiltinIssuer) -> None:
    for identity, kind in (("sa:ci", "service_account"), ("group:sre", "group"), ("user:bob", "user")):
        token = issuer.issue(
            identity_id=identity, tenant_id=None, partner_id=None, scopes="secrets:read", ttl=timedelta(minutes=5)
        )
        principal = await auth.authenticate(f"Bearer {token}")
        assert principal.identity_type == kind and principal.scopes == {"secrets:read"}
        assert principal.tenant_id is None


async def test_builtin_key_created_once_under_concurrent_loads(pool: asyncpg.Pool, root: LocalRootKeyProvider) -> None:
    async def load() -> BuiltinIssuer:
        async with pool.acquire() as conn:
            return await BuiltinIssuer.load(conn, root, issuer=ISSUER, audience=AUDIENCE)

    issuers = await asyncio.gather(*(load() for _ in range(4)))
    assert len({i.kid for i in issuers}) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM scaivault_issuer_keys") == 1
    token = issuers[0].issue(identity_id="sa:x", tenant_id=None, partner_id=None, scopes=(), ttl=timedelta(minutes=1))
    auth = TokenAuthenticator(
        pool, issuer=issuers[3], jwks=None, scaikey_issuer=None, audience=AUDIENCE, revocations=RevocationCache()
    )
    assert (await auth.authenticate(f"Bearer {token}")).identity_id == "sa:x"


# --- every refusal, each with its own code ------------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "", "   ", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "Token abc"])
async def test_missing_header(auth: TokenAuthenticator, header: str | None) -> None:
    exc = await refused(auth, header, AuthenticationRequired)
    assert exc.code == "authentication_required"


async def test_expired(auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey) -> None:
    now = int(time.time())
    exc = await refused(auth, f"Bearer {builtin_token(issuer, iat=now - 7200, exp=now - 3600)}", TokenExpired)
    assert exc.code == "token_expired"
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(exp=now - 60), 'k1')}", TokenExpired)
    # within the 30 s leeway: still accepted
    await auth.authenticate(f"Bearer {builtin_token(issuer, exp=now - 10)}")


async def test_expired_while_cached(pool: asyncpg.Pool, issuer: BuiltinIssuer) -> None:
    clock = Clock(now=time.time())
    auth = TokenAuthenticator(
        pool,
        issuer=issuer,
        jwks=None,
        scaikey_issuer=None,
        audience=AUDIENCE,
        revocations=RevocationCache(),
        leeway=timedelta(0),
        clock=clock,
    )
    token = builtin_token(issuer, exp=int(clock.now) + 1)
    await auth.authenticate(f"Bearer {token}")
    clock.now += 2.1  # past exp: the cached verification must not outlive the token
    await refused(auth, f"Bearer {token}", TokenExpired)


async def test_tampered(auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey) -> None:
    for token in (builtin_token(issuer), scaikey.sign(scaikey.claims(), "k1")):
        head, payload, signature = token.split(".")
        sig = bytearray(base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4)))
        sig[len(sig) // 2] ^= 0x01
        exc = await refused(auth, f"Bearer {head}.{payload}.{b64url(bytes(sig))}", TokenInvalid)
        assert exc.code == "token_invalid"
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        claims["scopes"] = ["admin"]
        claims["scope"] = "admin"
        await refused(auth, f"Bearer {head}.{b64url(json.dumps(claims).encode())}.{signature}", TokenInvalid)
    for garbage in ("eyJ", "a.b.c", "eyJhbGciOiJFZERTQSJ9.!!!.xx", "x" * 20_000):
        await refused(auth, f"Bearer {garbage}", TokenInvalid)


async def test_wrong_key_for_issuer(auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey) -> None:
    # ScaiKey's key claiming to be the built-in issuer, and an unknown built-in kid: both unverifiable.
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(iss=ISSUER), 'k1')}", TokenInvalid)
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(iss=ISSUER), 'k1', header_kid=issuer.kid)}", TokenInvalid)
    scaikey.add_key("ed", "EdDSA")
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(iss=ISSUER), 'ed', header_kid=issuer.kid)}", TokenInvalid)


async def test_wrong_issuer(
    pool: asyncpg.Pool, auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey
) -> None:
    exc = await refused(
        auth, f"Bearer {scaikey.sign(scaikey.claims(iss='https://evil.example'), 'k1')}", TokenIssuerInvalid
    )
    assert exc.code == "token_issuer_invalid"
    await refused(auth, f"Bearer {builtin_token(issuer, iss=ISSUER + '/')}", TokenIssuerInvalid)
    await refused(auth, f"Bearer {builtin_token(issuer, iss=None)}", TokenIssuerInvalid)
    # No ScaiKey configured: ScaiKey's tokens are from an untrusted issuer.
    local_only = TokenAuthenticator(
        pool, issuer=issuer, jwks=None, scaikey_issuer=None, audience=AUDIENCE, revocations=RevocationCache()
    )
    await refused(local_only, f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}", TokenIssuerInvalid)


async def test_alg_none(auth: TokenAuthenticator, issuer: BuiltinIssuer) -> None:
    claims = jwt.decode(builtin_token(issuer), options={"verify_signature": False})
    for alg in ("none", "None", "NONE", ""):
        token = forged({"alg": alg, "typ": "JWT", "kid": issuer.kid}, claims)
        exc = await refused(auth, f"Bearer {token}", TokenAlgorithmNotAllowed)
        assert exc.code == "token_algorithm_not_allowed"
    await refused(auth, f"Bearer {forged({'typ': 'JWT'}, claims)}", TokenAlgorithmNotAllowed)


async def test_hs256_with_the_public_key_as_secret(
    auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey
) -> None:
    builtin_public = issuer.public_key(issuer.kid)
    assert builtin_public is not None
    rsa_public = scaikey.keys["k1"][1].public_key()
    secrets_to_try = [
        (
            ISSUER,
            issuer.kid,
            builtin_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ),
        (ISSUER, issuer.kid, issuer.jwks()["keys"][0]["x"].encode()),
        (
            SCAIKEY,
            "k1",
            rsa_public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        ),
        (SCAIKEY, "k1", json.dumps(scaikey.jwks()["keys"][0]).encode()),
    ]
    for iss, kid, secret in secrets_to_try:
        for alg, digest in (("HS256", hashlib.sha256), ("HS512", hashlib.sha512)):
            claims = scaikey.claims(iss=iss)
            token = forged(
                {"alg": alg, "typ": "JWT", "kid": kid},
                claims,
                lambda data, s=secret, d=digest: hmac.new(s, data, d).digest(),
            )
            await refused(auth, f"Bearer {token}", TokenAlgorithmNotAllowed)
    # An `oct` key slipped into the JWKS is ignored, so even a matching kid is no way in.
    scaikey.extra_jwks = [{"kty": "oct", "kid": "sym", "k": b64url(b"secret"), "alg": "HS256"}]
    assert "sym" not in parse_jwks(scaikey.jwks())
    token = forged(
        {"alg": "HS256", "kid": "sym"},
        scaikey.claims(),
        lambda data: hmac.new(b"secret", data, hashlib.sha256).digest(),
    )
    await refused(auth, f"Bearer {token}", TokenAlgorithmNotAllowed)


async def test_algorithm_must_match_the_key(auth: TokenAuthenticator, scaikey: FakeScaiKey) -> None:
    scaikey.add_key("ec", "ES256")
    claims = scaikey.claims()
    header = {"alg": "RS256", "kid": "ec"}  # an RS256 header over an EC key
    token = forged(header, claims, lambda data: b"\0" * 256)
    await refused(auth, f"Bearer {token}", TokenInvalid)


async def test_wrong_audience(auth: TokenAuthenticator, issuer: BuiltinIssuer, scaikey: FakeScaiKey) -> None:
    exc = await refused(auth, f"Bearer {builtin_token(issuer, aud='another-service')}", TokenAudienceInvalid)
    assert exc.code == "token_audience_invalid"
    await refused(auth, f"Bearer {builtin_token(issuer, aud=None)}", TokenAudienceInvalid)
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(aud=['x', 'y']), 'k1')}", TokenAudienceInvalid)
    assert await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(aud=['x', AUDIENCE]), 'k1')}")


async def test_missing_claims_and_bad_claim_types(auth: TokenAuthenticator, issuer: BuiltinIssuer) -> None:
    for overrides in (
        {"jti": None},
        {"sub": None},
        {"exp": None},
        {"iat": None},
        {"scopes": "secrets:read"},
        {"roles": [1]},
        {"nbf": int(time.time()) + 600},
    ):
        await refused(auth, f"Bearer {builtin_token(issuer, **overrides)}", TokenInvalid)


async def test_claims_with_text_no_answer_or_database_can_hold_are_refused(
    auth: TokenAuthenticator, issuer: BuiltinIssuer
) -> None:
    """A lone surrogate (valid JSON, not Unicode) or a NUL in any text claim: refused, not carried into answers,
    queries and access records that cannot hold it."""
    for bad in ("\ud800", "a\udfffb", "a\x00b"):
        for overrides in (
            {"sub": f"user:{bad}"},
            {"identity_type": bad},
            {"display_name": bad},
            {"tenant_id": bad},
            {"partner_id": bad},
            {"scopes": ["secrets:read", bad]},
            {"scopes": None, "scope": f"secrets:read {bad}"},
            {"roles": [bad]},
            {"groups": [bad]},
            {"jti": bad},
        ):
            await refused(auth, f"Bearer {builtin_token(issuer, **overrides)}", TokenInvalid)


async def test_revoked_jti(
    pool: asyncpg.Pool,
    auth: TokenAuthenticator,
    issuer: BuiltinIssuer,
    revocations: RevocationCache,
    scaikey: FakeScaiKey,
) -> None:
    token = issuer.issue(identity_id="user:alice", tenant_id=None, partner_id=None, scopes=(), ttl=timedelta(hours=1))
    other = scaikey.sign(scaikey.claims(), "k1")
    principal = await auth.authenticate(f"Bearer {token}")  # now cached
    await auth.authenticate(f"Bearer {other}")
    async with pool.acquire() as conn:
        await revoke(conn, "jti", principal.token_id, principal.expires_at)
        await revoke(conn, "jti", principal.token_id, principal.expires_at)  # idempotent
        assert await revocations.refresh(conn) == 1
    exc = await refused(auth, f"Bearer {token}", TokenRevoked)
    assert exc.code == "token_revoked"
    fresh = TokenAuthenticator(
        pool, issuer=issuer, jwks=None, scaikey_issuer=None, audience=AUDIENCE, revocations=RevocationCache()
    )  # refreshes its revocation list on first use
    await refused(fresh, f"Bearer {token}", TokenRevoked)
    await auth.authenticate(f"Bearer {other}")


async def test_revocation_refresh_is_incremental_and_catches_late_commits(pool: asyncpg.Pool) -> None:
    cache = RevocationCache()
    async with pool.acquire() as a, pool.acquire() as b:
        tx = a.transaction()
        await tx.start()
        await revoke(a, "jti", "tok_late", None)  # takes id 1, commits later
        await revoke(b, "jti", "tok_early", None)  # id 2, committed now
        assert await cache.refresh(b) == 1
        assert cache.is_revoked("jti", "tok_early") and not cache.is_revoked("jti", "tok_late")
        await tx.commit()
        assert await cache.refresh(b) == 1
        assert cache.is_revoked("jti", "tok_late")
        assert await cache.refresh(b) == 0
        await b.execute("UPDATE scaivault_token_revocations SET expires_at = now() - interval '2 days'")
        assert await purge_expired(b) == 2
        # Purging the table leaves memory alone.
        assert await cache.refresh(b) == 0 and cache.is_revoked("jti", "tok_late")
    with pytest.raises(ValueError):
        async with pool.acquire() as conn:
            await revoke(conn, "password", "x", None)


async def test_signature_check_skipped_on_the_hot_path(
    auth: TokenAuthenticator, issuer: BuiltinIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import scaivault.auth.authenticator as module

    calls = 0
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(module.jwt, "decode", counting_decode)
    token = issuer.issue(identity_id="sa:hot", tenant_id=None, partner_id=None, scopes=(), ttl=timedelta(minutes=5))
    for _ in range(5):
        await auth.authenticate(f"Bearer {token}")
    assert calls == 2  # one unverified peek at `iss`, one verification


# --- personal access tokens ---------------------------------------------------------------------------------------


async def test_pat_lifecycle(
    pool: asyncpg.Pool, auth: TokenAuthenticator, issuer: BuiltinIssuer, revocations: RevocationCache
) -> None:
    async with pool.acquire() as conn:
        token, pat_id = await issue_pat(
            conn,
            identity_id="user:alice@acme.example",
            tenant_id="tnt_acme_prod",
            partner_id="ptn_acme",
            scopes=["secrets:read"],
            roles=["tenant_admin"],
            groups=["group:sre"],
            display_name="Alice's laptop",
        )
    assert token.startswith("skt_") and len(token) == 47 and pat_id.startswith("pat_")
    principal = await auth.authenticate(f"Bearer {token}")
    assert principal.token_kind == "pat" and principal.token_id == pat_id
    assert principal.identity_type == "user" and principal.scopes == {"secrets:read"}
    assert principal.groups == ("group:sre",) and principal.display_name == "Alice's laptop"
    assert principal.expires_at is not None
    assert timedelta(days=89) < principal.expires_at - datetime.now(UTC) <= timedelta(days=90)

    async with pool.acquire() as conn:
        row = await find_pat(conn, token)
        assert row is not None and row["id"] == pat_id
        assert bytes(row["token_hash"]) == hashlib.sha256(token.encode()).digest()
        assert await revoke_pat(conn, token)
        assert not await revoke_pat(conn, pat_id)  # already revoked
        await revocations.refresh(conn)
    await refused(auth, f"Bearer {token}", TokenRevoked)  # the cached verification is dropped
    fresh = TokenAuthenticator(
        pool, issuer=issuer, jwks=None, scaikey_issuer=None, audience=AUDIENCE, revocations=RevocationCache()
    )
    await refused(fresh, f"Bearer {token}", TokenRevoked)


async def test_revoke_pat_by_id(pool: asyncpg.Pool, auth: TokenAuthenticator, revocations: RevocationCache) -> None:
    async with pool.acquire() as conn:
        token, pat_id = await issue_pat(conn, identity_id="sa:ci", tenant_id=None, partner_id=None, scopes=[])
        assert (await auth.authenticate(f"Bearer {token}")).identity_type == "service_account"
        assert await revoke_pat(conn, pat_id)
        assert not await revoke_pat(conn, "pat_00000000000000000000000000")
        assert not await revoke_pat(conn, "skt_" + "A" * 43)
        assert not await revoke_pat(conn, "nonsense")
        await revocations.refresh(conn)
    await refused(auth, f"Bearer {token}", TokenRevoked)


async def test_unknown_and_malformed_pats(pool: asyncpg.Pool, auth: TokenAuthenticator) -> None:
    async with pool.acquire() as conn:
        token, _ = await issue_pat(conn, identity_id="user:a", tenant_id=None, partner_id=None, scopes=[])
    for candidate in (
        "skt_" + secrets.token_urlsafe(32),
        "skt_",
        "skt_short",
        token[:-1],
        token[:-1] + "A" if token[-1] != "A" else token[:-1] + "B",
    ):
        exc = await refused(auth, f"Bearer {candidate}", TokenInvalid)
        assert exc.code == "token_invalid"


async def test_expired_pat(pool: asyncpg.Pool, auth: TokenAuthenticator) -> None:
    async with pool.acquire() as conn:
        token, pat_id = await issue_pat(
            conn, identity_id="user:a", tenant_id=None, partner_id=None, scopes=[], ttl=timedelta(days=1)
        )
        await conn.execute(
            "UPDATE scaivault_personal_access_tokens SET expires_at = now() - interval '1 second' WHERE id = $1", pat_id
        )
    exc = await refused(auth, f"Bearer {token}", TokenExpired)
    assert exc.code == "token_expired"


async def test_pat_is_stored_only_as_a_hash(pool: asyncpg.Pool, auth: TokenAuthenticator) -> None:
    async with pool.acquire() as conn:
        token, _ = await issue_pat(conn, identity_id="user:a", tenant_id=None, partner_id=None, scopes=[])
        await auth.authenticate(f"Bearer {token}")
        await revoke_pat(conn, token)
        body = token.removeprefix("skt_")
        needles = [token, body, body[:20], base64.b64encode(token.encode()).decode()[:30]]
        columns = await conn.fetch(
            """SELECT table_name, column_name, data_type FROM information_schema.columns
               WHERE table_schema = current_schema()"""
        )
        hits = 0
        for column in columns:
            name, table = column["column_name"], column["table_name"]
            cast = "" if column["data_type"] == "bytea" else "::text"
            for row in await conn.fetch(f'SELECT "{name}"{cast} AS value FROM "{table}"'):
                value = row["value"]
                if value is None:
                    continue
                hits += 1
                if isinstance(value, bytes):
                    assert not any(n.encode() in value for n in needles), (table, name)
                else:
                    assert not any(n in value for n in needles), (table, name)
        assert hits > 5


async def test_no_token_in_logs(
    caplog: pytest.LogCaptureFixture,
    pool: asyncpg.Pool,
    auth: TokenAuthenticator,
    issuer: BuiltinIssuer,
    scaikey: FakeScaiKey,
    clock: Clock,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with pool.acquire() as conn:
        pat, _ = await issue_pat(conn, identity_id="user:a", tenant_id=None, partner_id=None, scopes=[])
    tokens = [
        pat,
        issuer.issue(identity_id="user:a", tenant_id=None, partner_id=None, scopes=(), ttl=timedelta(minutes=1)),
        scaikey.sign(scaikey.claims(), "k1"),
    ]
    for token in tokens:
        await auth.authenticate(f"Bearer {token}")
        for bad in (token + "x", token[:-3]):
            with pytest.raises(ScaiVaultError):
                await auth.authenticate(f"Bearer {bad}")
    scaikey.status = 500
    clock.now += 1000
    with pytest.raises(ScaiVaultError):
        await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1', header_kid='gone')}")
    for token in tokens:
        assert token not in caplog.text and token[-20:] not in caplog.text


# --- ScaiKey JWKS -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "ES256", "EdDSA"])
async def test_scaikey_token_accepted(auth: TokenAuthenticator, scaikey: FakeScaiKey, alg: str) -> None:
    scaikey.add_key("key-" + alg, alg)
    mfa = int(time.time()) - 60
    principal = await auth.authenticate(
        f"Bearer {scaikey.sign(scaikey.claims(mfa_verified_at=mfa, name='Reporting'), 'key-' + alg)}"
    )
    assert principal.identity_type == "service_account" and principal.partner_id == "ptn_acme"
    assert principal.scopes == {"secrets:read", "secrets:list"} and principal.display_name == "Reporting"
    assert principal.mfa_verified_at == datetime.fromtimestamp(mfa, UTC)


async def test_jwks_key_rotation_and_refetch_limits(
    auth: TokenAuthenticator, jwks: JwksClient, scaikey: FakeScaiKey, clock: Clock
) -> None:
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}")
    assert scaikey.hits == 1

    scaikey.add_key("k2", "ES256")  # ScaiKey rotates: a token with the new kid triggers one refetch
    clock.now += 1
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k2')}")
    assert scaikey.hits == 2
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k2')}")
    assert scaikey.hits == 2

    # A flood of made-up kids, one after another and all at once: no refetch within the interval.
    for i in range(30):
        clock.now += 0.5
        await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(), 'k1', header_kid=f'bogus-{i}')}", TokenInvalid)
    flood = [auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1', header_kid=f'x{i}')}") for i in range(50)]
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert all(isinstance(r, TokenInvalid) for r in results)
    assert scaikey.hits == 2

    clock.now += 31  # the interval has passed: at most one more refetch, however many unknown kids arrive
    results = await asyncio.gather(
        *(auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1', header_kid=f'y{i}')}") for i in range(50)),
        return_exceptions=True,
    )
    assert all(isinstance(r, TokenInvalid) for r in results)
    assert scaikey.hits == 3

    # After cache_ttl the JWKS is fetched again on the next use of a known kid.
    clock.now += 301
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k2')}")
    assert scaikey.hits == 4
    assert jwks.fetches == 4


async def test_jwks_removed_key_is_refused_after_refresh(
    pool: asyncpg.Pool, issuer: BuiltinIssuer, jwks: JwksClient, scaikey: FakeScaiKey, clock: Clock
) -> None:
    auth = TokenAuthenticator(
        pool, issuer=issuer, jwks=jwks, scaikey_issuer=SCAIKEY, audience=AUDIENCE, revocations=RevocationCache()
    )
    first = scaikey.sign(scaikey.claims(), "k1")
    await auth.authenticate(f"Bearer {first}")
    scaikey.add_key("k2")
    del scaikey.keys["k1"]  # ScaiKey stops publishing k1 (e.g. it was compromised)
    clock.now += 301
    auth.forget()
    await refused(auth, f"Bearer {first}", TokenInvalid)


async def test_jwks_outage_fails_closed_only_for_uncached_keys(
    pool: asyncpg.Pool, issuer: BuiltinIssuer, session: aiohttp.ClientSession, scaikey: FakeScaiKey, clock: Clock
) -> None:
    jwks = JwksClient(scaikey.url, session, clock=clock)
    auth = TokenAuthenticator(
        pool, issuer=issuer, jwks=jwks, scaikey_issuer=SCAIKEY, audience=AUDIENCE, revocations=RevocationCache()
    )
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}")
    scaikey.status = 503
    clock.now += 400  # past cache_ttl: the refresh fails, the cached key keeps working
    auth.forget()
    await auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}")
    scaikey.add_key("k2")
    exc = await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(), 'k2')}", ServiceUnavailable)
    assert exc.code == "service_unavailable"

    cold = JwksClient(scaikey.url, session, clock=clock)  # nothing cached at all
    cold_auth = TokenAuthenticator(
        pool, issuer=issuer, jwks=cold, scaikey_issuer=SCAIKEY, audience=AUDIENCE, revocations=RevocationCache()
    )
    await refused(cold_auth, f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}", ServiceUnavailable)
    hits = scaikey.hits
    await refused(cold_auth, f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}", ServiceUnavailable)
    assert scaikey.hits == hits  # failed fetches are retried after a back-off, not on every request
    scaikey.status = 200
    clock.now += 6
    await cold_auth.authenticate(f"Bearer {scaikey.sign(scaikey.claims(), 'k2')}")


async def test_unreachable_jwks_is_service_unavailable(
    pool: asyncpg.Pool, issuer: BuiltinIssuer, session: aiohttp.ClientSession, scaikey: FakeScaiKey
) -> None:
    jwks = JwksClient("http://127.0.0.1:9/jwks.json", session, timeout=2)
    auth = TokenAuthenticator(
        pool, issuer=issuer, jwks=jwks, scaikey_issuer=SCAIKEY, audience=AUDIENCE, revocations=RevocationCache()
    )
    await refused(auth, f"Bearer {scaikey.sign(scaikey.claims(), 'k1')}", ServiceUnavailable)
