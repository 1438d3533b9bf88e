"""ScaiKey's signing keys from its JWKS URL: cached, refetched when a token names an unknown ``kid`` (at most once
per ``refetch_interval``, whatever the number of distinct unknown kids, so a flood of made-up kids cannot turn into a
flood of fetches), and refreshed after ``cache_ttl``.

Failing closed: when the JWKS cannot be fetched, a key already cached keeps working (up to ``max_stale``), and a key
not cached is a 503 ``service_unavailable`` rather than a 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import jwt
import orjson

from scaivault.domain.errors import ServiceUnavailable, TokenInvalid

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "RS256", "ES256"})
MAX_JWKS_BYTES = 512 * 1024
_CURVES = {"EC": {"P-256": "ES256"}, "OKP": {"Ed25519": "EdDSA"}}


def _unavailable() -> ServiceUnavailable:
    return ServiceUnavailable("The identity provider's signing keys cannot be fetched")


def parse_jwks(document: Any) -> dict[str, jwt.PyJWK]:
    """Usable signature keys by kid; keys of other types or algorithms (e.g. ``oct``/HS*) are ignored."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("not a JWK Set")
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict) or not isinstance(jwk.get("kid"), str) or jwk.get("use", "sig") != "sig":
            continue
        kty, alg, crv = jwk.get("kty"), jwk.get("alg"), jwk.get("crv")
        inferred: str | None
        if kty == "RSA":
            inferred = "RS256"
        elif kty in _CURVES:
            # A curve that is not a name (a list, say) is an unknown curve: that key is skipped, the others still count.
            inferred = _CURVES[kty].get(crv) if isinstance(crv, str) else None
        else:
            continue
        if inferred is None or (alg is not None and alg != inferred):
            continue
        try:
            keys[jwk["kid"]] = jwt.PyJWK(jwk, algorithm=inferred)
        except (jwt.PyJWTError, ValueError, TypeError):
            continue
    return keys


class JwksClient:
    def __init__(
        self,
        url: str,
        session: aiohttp.ClientSession,
        *,
        cache_ttl: float = 300,
        refetch_interval: float = 30,
        max_stale: float = 24 * 3600,
        failure_backoff: float = 5.0,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self._session = session
        self._cache_ttl = cache_ttl
        self._refetch_interval = refetch_interval
        self._max_stale = max_stale
        self._failure_backoff = failure_backoff
        self._timeout = timeout
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None  # last successful fetch
        self._attempted_at: float | None = None  # last fetch attempt, successful or not
        self._last_ok = False
        self._generation = 0
        self._unknown_refetch_at = float("-inf")
        self._lock = asyncio.Lock()
        self.fetches = 0  # attempts made, for metrics and tests

    def __repr__(self) -> str:
        return f"<JwksClient {self.url} keys={len(self._keys)}>"

    async def get_signing_key(self, kid: object) -> jwt.PyJWK:
        """The key for ``kid``; TokenInvalid when the JWKS (as last fetched) has no such key; ServiceUnavailable
        when it is not cached and cannot be fetched."""
        if not isinstance(kid, str) or not kid:
            raise TokenInvalid("The token names no signing key")
        key = self._keys.get(kid)
        if key is not None:
            if self._since_success() < self._cache_ttl:
                return key
            return await self._refresh_stale(kid, key)
        if self._fetched_at is None:
            if self._since_attempt() < self._failure_backoff and not self._lock.locked():
                raise _unavailable()
            await self._fetch_once()
        elif self._clock() - self._unknown_refetch_at >= self._refetch_interval:
            # One refetch for an unknown kid per interval, whichever kid asked: made-up kids cannot flood ScaiKey.
            self._unknown_refetch_at = self._clock()
            await self._fetch_once()
        elif self._lock.locked():
            await self._fetch_once()  # a fetch is under way: wait for it and use its result
        elif not self._last_ok:
            raise _unavailable()  # the last fetch failed: the kid may be new, we cannot tell
        key = self._keys.get(kid)
        if key is None:
            raise TokenInvalid("The token's signing key is unknown")
        return key

    async def _refresh_stale(self, kid: str, key: jwt.PyJWK) -> jwt.PyJWK:
        if self._since_attempt() >= self._failure_backoff or self._lock.locked():
            with contextlib.suppress(ServiceUnavailable):
                await self._fetch_once()
        if self._since_success() < self._cache_ttl:
            fresh = self._keys.get(kid)
            if fresh is None:
                raise TokenInvalid("The token's signing key is no longer published")
            return fresh
        if self._since_success() < self._max_stale:
            return key  # the JWKS is down: keep serving what we had
        raise _unavailable()

    def _since_attempt(self) -> float:
        return float("inf") if self._attempted_at is None else self._clock() - self._attempted_at

    def _since_success(self) -> float:
        return float("inf") if self._fetched_at is None else self._clock() - self._fetched_at

    async def _fetch_once(self) -> None:
        """Fetch, coalescing concurrent callers: whoever waited on the lock reuses the fetch that just happened."""
        generation = self._generation
        async with self._lock:
            if self._generation != generation:  # another caller fetched while we waited
                if not self._last_ok:
                    raise _unavailable()
                return
            self._attempted_at = self._clock()
            self.fetches += 1
            try:
                keys = await self._fetch()
            except Exception as exc:  # noqa: BLE001 - any failure to fetch or parse is the same outage (503), logged
                self._last_ok = False
                log.warning("JWKS fetch failed", extra={"jwks_url": self.url, "error": type(exc).__name__})
                raise _unavailable() from None
            else:
                self._keys, self._fetched_at, self._last_ok = keys, self._clock(), True
            finally:
                self._generation += 1

    async def _fetch(self) -> dict[str, jwt.PyJWK]:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with self._session.get(self.url, timeout=timeout, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(MAX_JWKS_BYTES + 1)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError("JWKS too large")
        return parse_jwks(orjson.loads(body))
