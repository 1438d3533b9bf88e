"""The audit log's entries as the API and audit exports show them (spec reference/audit): one shape for both."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def audit_entry_document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": f"log_{row['seq']}",
        "sequence": row["seq"],
        "timestamp": row["recorded_at"],
        "action": row["action"],
        "identity_type": row["identity_type"],
        "identity_id": row["identity_id"],
        "secret_path": row["secret_path"],
        "source_ip": row["source_ip"],
        "user_agent": row["user_agent"],
        "success": row["success"],
        "status": row["status"],
        "error_code": row["error_code"],
        "duration_ms": row["duration_ms"],
        "request_id": row["request_id"],
        "method": row["method"],
        "route": row["route"],
        "extra_data": row["extra"],
        "hash": bytes(row["hash"]).hex(),
    }
