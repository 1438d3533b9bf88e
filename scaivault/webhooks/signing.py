"""How a delivery is signed (spec advanced/webhook-signatures): ``X-ScaiVault-Signature: sha256=<hex>`` where the hex
is HMAC-SHA256(secret, ``"{timestamp}." + raw body``) and the timestamp is ``X-ScaiVault-Timestamp``, unix seconds
at dispatch. Receivers verify the raw bytes, so the body is serialized once, here, and sent exactly so."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

USER_AGENT = "ScaiVault-Webhook/1.0"
SIGNATURE_PREFIX = "sha256="
# The envelope's fields in the order the spec shows them (the feed stores it as jsonb, which keeps no order).
ENVELOPE_ORDER = (
    "event_id", "event_type", "timestamp", "tenant_id", "partner_id", "identity_id", "path", "data", "request_id",
)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return SIGNATURE_PREFIX + digest


def envelope_body(envelope: Mapping[str, Any]) -> bytes:
    ordered = {key: envelope[key] for key in ENVELOPE_ORDER if key in envelope}
    ordered.update((key, value) for key, value in envelope.items() if key not in ordered)
    return orjson.dumps(ordered)


@dataclass(frozen=True)
class SignedRequest:
    body: bytes
    headers: dict[str, str]


def sign(envelope: Mapping[str, Any], secret: str, timestamp: int) -> SignedRequest:
    """The request a receiver gets for ``envelope``: its exact body and headers."""
    body = envelope_body(envelope)
    return SignedRequest(body, {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-ScaiVault-Event-Id": str(envelope["event_id"]),
        "X-ScaiVault-Event-Type": str(envelope["event_type"]),
        "X-ScaiVault-Timestamp": str(timestamp),
        "X-ScaiVault-Signature": signature(secret, timestamp, body),
    })
