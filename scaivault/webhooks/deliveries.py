"""A delivery as the API shows it (the deliveries list, a redelivery's answer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DELIVERY_COLUMNS = """delivery_id, target_id, event_id, event_type, is_test, status, attempts, next_attempt_at,
    last_attempt_at, response_code, error, duration_ms, created_at, completed_at"""


def delivery_document(row: Mapping[str, Any]) -> dict[str, Any]:
    """``timestamp``: the last try (creation until tried); ``next_attempt_at`` only while pending."""
    return {
        "id": row["delivery_id"],
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "timestamp": row["last_attempt_at"] or row["created_at"],
        "status": row["status"],
        "attempts": row["attempts"],
        "response_code": row["response_code"],
        "duration_ms": row["duration_ms"],
        "error": row["error"],
        "next_attempt_at": row["next_attempt_at"] if row["status"] == "pending" else None,
        "is_test": row["is_test"],
        "created_at": row["created_at"],
        "completed_at": row["completed_at"],
    }
