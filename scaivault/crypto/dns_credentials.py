"""Sealing the credentials of DNS providers.

A provider's credentials (an API token, an IAM key pair, a service-account key) are stored like a secret value: the
JSON document of the fields, sealed with AES-256-GCM under a data key of its own (wrapped by the tenant key, so
destroying it when the credentials are replaced or the provider deleted shreds them), with associated data binding
the ciphertext to the tenant and the provider, so a ciphertext copied onto another provider fails to open. Events
carry only the ciphertext and the data key's id.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from scaivault.crypto.aead import open_sealed, seal
from scaivault.crypto.keyring import KeyRing


def dns_credentials_aad(owner: str, provider_id: str) -> bytes:
    return f"scaivault/dns-provider-credentials/v1\x00{owner}\x00{provider_id}".encode()


@dataclass(frozen=True)
class SealedCredentials:
    ciphertext: bytes
    data_key_id: str


async def seal_credentials(
    keyring: KeyRing, conn: asyncpg.Connection, credentials: dict[str, Any], *, owner: str, provider_id: str
) -> SealedCredentials:
    """Seal under a new data key of ``owner`` (the tenant), inserted in the caller's transaction."""
    data_key = await keyring.new_data_key(conn, owner)
    ciphertext = seal(data_key.key, orjson.dumps(credentials), dns_credentials_aad(owner, provider_id))
    return SealedCredentials(ciphertext, data_key.id)


async def open_credentials(
    keyring: KeyRing, conn: asyncpg.Connection, sealed: SealedCredentials, *, owner: str, provider_id: str
) -> dict[str, Any]:
    key = await keyring.data_key(conn, sealed.data_key_id, owner)
    document = orjson.loads(open_sealed(key, sealed.ciphertext, dns_credentials_aad(owner, provider_id)))
    if not isinstance(document, dict):
        raise ValueError("sealed DNS credentials are not an object")
    return document
