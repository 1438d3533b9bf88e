"""Opening the signing secrets of delivery targets (webhooks and push subscriptions), with a small cache.

A sealed secret is bound to its owner (the tenant), its target and its slot; each sealing uses a new data key, so
the data key's id names one sealed value and is the cache's key: a rotation brings a new id, a deleted target's
keys are destroyed (and its deliveries with it). Entries live ``CACHE_SECONDS`` at most, so a destroyed key stops
being usable here soon after, too.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg

from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.signing_secrets import SealedSigningSecret, open_signing_secret

CACHE_SECONDS = 300.0
MAX_CACHED = 10_000


class SigningSecrets:
    def __init__(self, keyring: KeyRing, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keyring = keyring
        self._clock = clock
        self._cache: dict[str, tuple[float, str]] = {}

    async def open(
        self, conn: asyncpg.Connection, *, ciphertext: bytes, data_key_id: str, owner: str, target_id: str
    ) -> str:
        now = self._clock()
        cached = self._cache.get(data_key_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        secret = await open_signing_secret(
            self._keyring, conn, SealedSigningSecret(ciphertext, data_key_id), owner=owner, target_id=target_id
        )
        if len(self._cache) >= MAX_CACHED:
            self._cache.clear()
        self._cache[data_key_id] = (now + CACHE_SECONDS, secret)
        return secret
