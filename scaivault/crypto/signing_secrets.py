"""Sealing the HMAC signing secrets of webhooks and push subscriptions.

A signing secret is a credential the tenant gave us: it is stored like a secret value, sealed with AES-256-GCM under
its own data key (wrapped by the tenant key, destroyable), and the associated data binds the ciphertext to its
target and slot, so a ciphertext copied onto another webhook, or from the previous slot to the current one, fails
to open. Events carry only the ciphertext and the data key's id.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from scaivault.crypto.aead import open_sealed, seal
from scaivault.crypto.keyring import KeyRing

CURRENT = "current"
PREVIOUS = "previous"


def signing_secret_aad(owner: str, target_id: str, slot: str) -> bytes:
    return f"scaivault/signing-secret/v1\x00{owner}\x00{target_id}\x00{slot}".encode()


@dataclass(frozen=True)
class SealedSigningSecret:
    ciphertext: bytes
    data_key_id: str


async def seal_signing_secret(
    keyring: KeyRing, conn: asyncpg.Connection, secret: str, *, owner: str, target_id: str, slot: str = CURRENT
) -> SealedSigningSecret:
    """Seal ``secret`` under a new data key of ``owner`` (the tenant), inserted in the caller's transaction."""
    data_key = await keyring.new_data_key(conn, owner)
    ciphertext = seal(data_key.key, secret.encode(), signing_secret_aad(owner, target_id, slot))
    return SealedSigningSecret(ciphertext, data_key.id)


async def open_signing_secret(
    keyring: KeyRing, conn: asyncpg.Connection, sealed: SealedSigningSecret, *, owner: str, target_id: str,
    slot: str = CURRENT,
) -> str:
    key = await keyring.data_key(conn, sealed.data_key_id, owner)
    return open_sealed(key, sealed.ciphertext, signing_secret_aad(owner, target_id, slot)).decode()
