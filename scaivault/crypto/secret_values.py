"""Sealing secret values: the associated data binds each ciphertext to its owner, path and version, so a
ciphertext moved to another row (another tenant, path or version) fails to open instead of returning its value."""

from __future__ import annotations

from typing import Any

import orjson

from scaivault.crypto.aead import open_sealed, seal


def value_aad(owner: str, path: str, version: int) -> bytes:
    return f"scaivault/secret-value/v1\x00{owner}\x00{path}\x00{version}".encode()


def seal_value(key: bytes, data: dict[str, Any], *, owner: str, path: str, version: int) -> bytes:
    return seal(key, orjson.dumps(data), value_aad(owner, path, version))


def open_value(key: bytes, ciphertext: bytes, *, owner: str, path: str, version: int) -> dict[str, Any]:
    return orjson.loads(open_sealed(key, ciphertext, value_aad(owner, path, version)))
