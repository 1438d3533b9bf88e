"""Deliveries are signed exactly as the spec's receiver verifies them (advanced/webhook-signatures): the reference
receiver's steps are implemented here from the spec's text, not from our signer, and every signed request must pass
them; any change to the body, timestamp or secret must not."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scaivault.webhooks.signing import USER_AGENT, sign

SECRET = "whsec_0123456789abcdef0123456789abcdef"
MAX_AGE_SECONDS = 300
ENVELOPE = {
    "event_id": "evt_01hk7x9z0000000000000000", "event_type": "secret.rotated",
    "timestamp": "2026-04-23T14:00:00.123456Z", "tenant_id": "tnt_acme", "partner_id": "ptn_acme",
    "identity_id": "system:rotation-scheduler", "path": "prod/db/password",
    "data": {"old_version": 3, "new_version": 4, "note": "ünïcode ✓"}, "request_id": "req_1",
}


def reference_receiver(headers: Mapping[str, str], raw_body: bytes, secret: str, now: float) -> tuple[int, str]:
    """The spec's reference verification: 400 without a timestamp or a ``sha256=`` signature, 401 when stale (over
    300 s either way) or when the HMAC of ``"{timestamp}." + raw body`` differs (constant-time compare)."""
    timestamp = headers.get("X-ScaiVault-Timestamp")
    signature = headers.get("X-ScaiVault-Signature")
    if not timestamp or not signature or not signature.startswith("sha256="):
        return 400, "missing signature"
    if abs(now - int(timestamp)) > MAX_AGE_SECONDS:
        return 401, "stale signature"
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw_body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature.removeprefix("sha256=")):
        return 401, "bad signature"
    orjson.loads(raw_body)
    return 200, "ok"


def test_a_signed_delivery_passes_the_reference_receiver_with_the_spec_headers() -> None:
    now = int(time.time())
    request = sign(ENVELOPE, SECRET, now)
    assert reference_receiver(request.headers, request.body, SECRET, now) == (200, "ok")
    assert request.headers["X-ScaiVault-Event-Id"] == ENVELOPE["event_id"]
    assert request.headers["X-ScaiVault-Event-Type"] == "secret.rotated"
    assert request.headers["X-ScaiVault-Timestamp"] == str(now)
    assert request.headers["User-Agent"] == USER_AGENT == "ScaiVault-Webhook/1.0"
    assert request.headers["Content-Type"] == "application/json"
    signature = request.headers["X-ScaiVault-Signature"]
    assert signature.startswith("sha256=") and len(signature) == 7 + 64 and signature[7:] == signature[7:].lower()


def test_the_body_is_the_envelope_in_the_spec_order() -> None:
    shuffled = dict(reversed(list(ENVELOPE.items())))
    body = sign(shuffled, SECRET, 1).body
    assert orjson.loads(body) == ENVELOPE
    assert list(orjson.loads(body)) == list(ENVELOPE)


@pytest.mark.parametrize("tamper", ["body", "timestamp", "secret", "stale", "prefix"])
def test_the_reference_receiver_refuses_what_was_not_signed_so(tamper: str) -> None:
    now = int(time.time())
    request = sign(ENVELOPE, SECRET, now)
    headers, body, secret, clock = dict(request.headers), request.body, SECRET, float(now)
    if tamper == "body":
        body = body.replace(b"4", b"5")
    elif tamper == "timestamp":
        headers["X-ScaiVault-Timestamp"] = str(now - 1)
    elif tamper == "secret":
        secret = SECRET + "x"
    elif tamper == "stale":
        clock = now + MAX_AGE_SECONDS + 1
    else:
        headers["X-ScaiVault-Signature"] = headers["X-ScaiVault-Signature"].removeprefix("sha256=")
    status, _ = reference_receiver(headers, body, secret, clock)
    assert status in (400, 401)


@given(
    data=st.dictionaries(st.text(max_size=10), st.one_of(st.integers(-(2**53), 2**53), st.text(), st.booleans())),
    secret=st.text(min_size=16, max_size=64),
    timestamp=st.integers(0, 2**40),
)
def test_any_envelope_and_secret_verify(data: dict[str, object], secret: str, timestamp: int) -> None:
    request = sign({**ENVELOPE, "data": data}, secret, timestamp)
    assert reference_receiver(request.headers, request.body, secret, timestamp) == (200, "ok")
