"""Verifying ScaiKey's webhook deliveries (``POST /v1/identity/webhooks/scaikey``).

The scheme is the one ScaiVault itself uses for its outbound webhooks (spec advanced/webhook-signatures), with
ScaiKey's header names: ``X-ScaiKey-Timestamp`` (Unix seconds) and ``X-ScaiKey-Signature: sha256=<hex>``, the
HMAC-SHA256 under the shared secret of ``"{timestamp}." + raw body``. The raw bytes are verified before anything is
parsed; a timestamp more than 5 minutes from the server's clock is refused, so a captured delivery is useless after
that (and within it, each event id is accepted once: scaivault/identity/webhooks.py). During a secret rotation the
previous secret is accepted too. Every candidate is compared in constant time, and all of them always are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from scaivault.domain.errors import InvalidRequest, SignatureExpired, SignatureInvalid

SIGNATURE_HEADER = "X-ScaiKey-Signature"
TIMESTAMP_HEADER = "X-ScaiKey-Timestamp"
PREFIX = "sha256="
MAX_AGE_SECONDS = 300
_MAX_TIMESTAMP_DIGITS = 12


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The header value a sender computes."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def verify_delivery(
    *,
    secrets: Sequence[str],
    signature_header: str | None,
    timestamp_header: str | None,
    body: bytes,
    now: float,
    max_age: int = MAX_AGE_SECONDS,
) -> int:
    """Return the delivery's timestamp, or raise: a missing or malformed header is ``invalid_request`` (400, as the
    spec's reference receiver answers), a stale timestamp ``signature_expired``, a wrong signature (or no secret
    configured) ``signature_invalid`` (401)."""
    if not signature_header or not timestamp_header or not signature_header.startswith(PREFIX):
        raise InvalidRequest(f"A ScaiKey delivery needs {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}: sha256=<hex>")
    if not (timestamp_header.isascii() and timestamp_header.isdigit()) or len(timestamp_header) > _MAX_TIMESTAMP_DIGITS:
        raise InvalidRequest(f"{TIMESTAMP_HEADER} must be Unix time in seconds")
    timestamp = int(timestamp_header)
    if abs(now - timestamp) > max_age:
        raise SignatureExpired(f"The delivery's timestamp is more than {max_age} seconds from the server's clock")
    provided = signature_header.encode("utf-8", "replace")
    matched = False
    for secret in secrets:  # no early exit: how many secrets were tried must not show in the timing
        matched |= hmac.compare_digest(signature(secret, timestamp_header, body).encode(), provided)
    if not matched:
        raise SignatureInvalid()
    return timestamp
