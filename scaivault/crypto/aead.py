"""AES-256-GCM sealing: ``nonce (12 bytes) || ciphertext || tag (16 bytes)``, from the ``cryptography`` package.

A fresh random 96-bit nonce per seal is safe here because every key seals few messages (a data key seals one
secret version; a wrapping key seals one key per child).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from scaivault.domain.errors import ScaiVaultError

KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16


class DecryptionFailed(ScaiVaultError):
    """The blob was not sealed with this key and AAD (wrong key, tampered, truncated or moved elsewhere).

    The message never names the key or the plaintext. It maps to a 500: clients cannot cause it with valid input.
    """

    code = "internal_error"
    default_message = "Decryption failed: the ciphertext does not match its key or context"


def generate_key() -> bytes:
    """A new random 256-bit key."""
    return AESGCM.generate_key(bit_length=256)


def _cipher(key: bytes) -> AESGCM:
    if not isinstance(key, bytes | bytearray) or len(key) != KEY_SIZE:
        raise ValueError("an AES-256-GCM key must be 32 bytes")
    return AESGCM(bytes(key))


def seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_SIZE)
    return nonce + _cipher(key).encrypt(nonce, bytes(plaintext), bytes(aad))


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    cipher = _cipher(key)
    if not isinstance(blob, bytes | bytearray | memoryview) or len(blob) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionFailed()
    blob = bytes(blob)
    try:
        return cipher.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], bytes(aad))
    except InvalidTag:
        raise DecryptionFailed() from None


def context(label: str, *parts: str | bytes) -> bytes:
    """An unambiguous AAD: ``scaivault/<label>`` then each part length-prefixed, so ("ab","c") != ("a","bc")."""
    return b"".join(_frame(p) for p in _items(f"scaivault/{label}", parts))


def _items(label: str, parts: Iterable[str | bytes]) -> Iterable[bytes]:
    yield label.encode()
    for part in parts:
        yield part.encode() if isinstance(part, str) else bytes(part)


def _frame(item: bytes) -> bytes:
    return struct.pack(">I", len(item)) + item
