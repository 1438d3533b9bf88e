"""Audit export use cases: request an export (the API), then start, complete or fail it (the background worker).

Each is one short transaction through the unit of work; the export itself (reading the log, writing files,
uploading) happens outside any transaction, in ``scaivault/audit/exports.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from commands.secrets import Actor
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome, utcnow
from scaivault.audit.access_records import AccessRecord
from scaivault.domain.audit_exports import AuditExport, audit_export_stream_id
from scaivault.ids import new_id

def new_export_id() -> str:
    """Time-ordered, which the listing's keyset pagination relies on."""
    return new_id("exp_")


@dataclass(frozen=True)
class RequestExport:
    tenant_id: str
    partner_id: str | None
    format: str
    since: datetime
    until: datetime
    filters: dict[str, Any]
    destination: dict[str, Any]
    estimated_records: int


class AuditExportCommands:
    def __init__(self, runner: UnitOfWorkRunner, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._runner = runner
        self._clock = clock

    async def request(self, cmd: RequestExport, actor: Actor, access: AccessRecord | None = None) -> AuditExport:
        export_id = new_export_id()

        async def work(uow: UnitOfWork) -> AuditExport:
            export = AuditExport(
                export_id=export_id,
                tenant_id=cmd.tenant_id,
                partner_id=cmd.partner_id,
                format=cmd.format,
                since=cmd.since,
                until=cmd.until,
                filters=cmd.filters,
                destination=cmd.destination,
                estimated_records=cmd.estimated_records,
                at=self._clock(),
                actor=actor.identity_id,
                request_id=actor.request_id,
            )
            record_outcome(access, 202, export_id=export_id)
            uow.add(export)
            return export

        return await self._runner.run(work, access=access)

    async def start(self, export_id: str) -> AuditExport | None:
        """Mark the job running (another attempt if it was running already); None when it has finished or does not
        exist."""

        async def work(uow: UnitOfWork) -> AuditExport | None:
            export = await uow.get(audit_export_stream_id(export_id))
            if export is None or not export.start(at=self._clock()):
                return None
            uow.add(export)
            return export

        return await self._runner.run(work)

    async def complete(self, export_id: str, manifest: dict[str, Any]) -> bool:
        """Record the manifest, stamped with ``completed_at`` (the API's timestamp form: it is stored as JSON)."""

        async def work(uow: UnitOfWork) -> bool:
            export = await uow.get(audit_export_stream_id(export_id))
            at = self._clock()
            stamped = {**manifest, "completed_at": at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
            if export is None or not export.complete(manifest=stamped, at=at):
                return False
            uow.add(export)
            return True

        return await self._runner.run(work)

    async def fail(self, export_id: str, error: str) -> bool:
        async def work(uow: UnitOfWork) -> bool:
            export = await uow.get(audit_export_stream_id(export_id))
            if export is None or not export.fail(error=error, at=self._clock()):
                return False
            uow.add(export)
            return True

        return await self._runner.run(work)

    def now(self) -> datetime:
        return self._clock()
