"""The AuditExport aggregate: one stream per export job.

Lifecycle: pending (Requested) -> running (Started; again after a crash, counting attempts) -> completed (with its
manifest) or failed (with an error message safe to show: never a credential). Every mutator takes the time ``at``
from the caller, so the domain reads no clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import InvalidRequest

FORMATS = frozenset({"jsonl", "csv"})
DESTINATION_TYPES = frozenset({"s3", "local"})
STATUSES = ("pending", "running", "completed", "failed")
MAX_ERROR_LENGTH = 1000
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/audit-export")


def audit_export_stream_id(export_id: str) -> UUID:
    return uuid5(_NAMESPACE, export_id)


class AuditExport(Aggregate):
    @staticmethod
    def create_id(export_id: str) -> UUID:  # type: ignore[override]
        return audit_export_stream_id(export_id)

    @event("Requested")
    def __init__(
        self,
        export_id: str,
        tenant_id: str,
        partner_id: str | None,
        format: str,  # noqa: A002 - the API's name
        since: datetime,
        until: datetime,
        filters: dict[str, Any],
        destination: dict[str, Any],
        estimated_records: int,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        if format not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(sorted(FORMATS))}")
        if destination.get("type") not in DESTINATION_TYPES:
            raise InvalidRequest(f"destination type must be one of {', '.join(sorted(DESTINATION_TYPES))}")
        if not since < until:
            raise InvalidRequest("'from' must be before 'to'")
        self.export_id = export_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.format = format
        self.since = since
        self.until = until
        self.filters = filters
        self.destination = destination
        self.estimated_records = estimated_records
        self.created_at = at
        self.created_by = actor
        self.status = "pending"
        self.attempts = 0
        self.started_at: datetime | None = None
        self.completed_at: datetime | None = None
        self.manifest: dict[str, Any] | None = None
        self.error: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "failed")

    def start(self, *, at: datetime) -> bool:
        """Start (or, after a crash left it running, restart) the job; False when it already finished."""
        if self.finished:
            return False
        self._started(at=at, attempt=self.attempts + 1)
        return True

    @event("Started")
    def _started(self, *, at: datetime, attempt: int) -> None:
        self.status = "running"
        self.attempts = attempt
        self.started_at = at

    def complete(self, *, manifest: dict[str, Any], at: datetime) -> bool:
        if self.status != "running":
            return False
        self._completed(manifest=manifest, at=at)
        return True

    @event("Completed")
    def _completed(self, *, manifest: dict[str, Any], at: datetime) -> None:
        self.status = "completed"
        self.manifest = manifest
        self.completed_at = at

    def fail(self, *, error: str, at: datetime) -> bool:
        if self.finished:
            return False
        self._failed(error=error[:MAX_ERROR_LENGTH], at=at)
        return True

    @event("Failed")
    def _failed(self, *, error: str, at: datetime) -> None:
        self.status = "failed"
        self.error = error
        self.completed_at = at
