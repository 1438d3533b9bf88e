"""Encryption at rest: AES-256-GCM data keys wrapped by tenant, partner and root keys (envelope encryption).

    data key (one per secret version) -> tenant key -> partner key -> root key (RootKeyProvider: local file, env,
    AWS KMS, GCP KMS, Azure Key Vault)

Partner-owned secrets skip the tenant level. Every wrapped key is bound by AAD to its place in the hierarchy.
"""

from scaivault.crypto.aead import DecryptionFailed, generate_key, open_sealed, seal
from scaivault.crypto.keyring import DataKey, KeyDestroyed, KeyNotFound, KeyRing
from scaivault.crypto.root_keys import (
    EnvRootKeyProvider,
    LocalRootKeyProvider,
    RootKeyProvider,
    RootKeyRotationNotSupported,
    root_key_provider,
)

__all__ = [
    "DataKey",
    "DecryptionFailed",
    "EnvRootKeyProvider",
    "KeyDestroyed",
    "KeyNotFound",
    "KeyRing",
    "LocalRootKeyProvider",
    "RootKeyProvider",
    "RootKeyRotationNotSupported",
    "generate_key",
    "open_sealed",
    "root_key_provider",
    "seal",
]
