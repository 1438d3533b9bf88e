"""Sealing private keys the server keeps: CA keys, issued keys under ``store_private_keys``, ACME account keys.

Each key is sealed like a secret value: AES-256-GCM under its own data key (wrapped by the tenant key, so it can be
destroyed on its own), with associated data binding the ciphertext to its owner, kind and object, so a ciphertext
copied onto another CA, or from an issued certificate to a CA, fails to open. Events carry only the ciphertext and
the data key's id; the PEM exists in memory while it is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from scaivault.crypto.aead import open_sealed, seal
from scaivault.crypto.keyring import KeyRing
from scaivault.database import Queryable

CA_KEY = "ca"
ISSUED_KEY = "issued"
ACME_ACCOUNT_KEY = "acme-account"


def private_key_aad(owner: str, kind: str, object_id: str) -> bytes:
    return f"scaivault/private-key/v1\x00{owner}\x00{kind}\x00{object_id}".encode()


@dataclass(frozen=True)
class SealedKey:
    ciphertext: bytes
    data_key_id: str


async def seal_private_key(
    keyring: KeyRing, conn: asyncpg.Connection, pem: str, *, owner: str, kind: str, object_id: str
) -> SealedKey:
    """Seal ``pem`` under a new data key of ``owner``, inserted in the caller's transaction."""
    data_key = await keyring.new_data_key(conn, owner)
    return SealedKey(seal(data_key.key, pem.encode(), private_key_aad(owner, kind, object_id)), data_key.id)


async def open_private_key(
    keyring: KeyRing, conn: Queryable, sealed: SealedKey, *, owner: str, kind: str, object_id: str
) -> str:
    key = await keyring.data_key(conn, sealed.data_key_id, owner)
    return open_sealed(key, sealed.ciphertext, private_key_aad(owner, kind, object_id)).decode()
