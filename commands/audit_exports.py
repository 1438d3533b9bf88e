"""Audit export use cases: request an export (the API), then start, complete or fail it (the background worker).

Each is one short transaction through the unit of work; the export itself (reading the log, writing files,
uploading) happens outside any transaction, in ``scaivault/audit/exports/``.

An S3 export names a secret holding its upload credentials, which its job reads on the requester's behalf. So the
requester must hold ``secrets:read`` and the policy ``read`` permission on that secret, decided by the authorizer a
GET of it goes through, before anything about the path is looked up: a caller who may not read it gets the answer a
GET would give, whether or not the secret exists. The export records who requested it (``Requester``: the token's
own roles, not the roles the identity mirror made of them, and its expiry) so that the job decides again, when it
runs, with the requester's rights as they are then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.ports import AuditExportLookup, SecretPermissions
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.audit_exports import (
    CREDENTIALS_PERMISSION,
    CREDENTIALS_SCOPE,
    AuditExport,
    Requester,
    audit_export_stream_id,
    credentials_address,
)
from scaivault.domain.errors import InvalidConfig
from scaivault.domain.outcomes import Outcome
from scaivault.ids import new_id
from scaivault.serialization import format_timestamp


def new_export_id() -> str:
    """Time-ordered, which the listing's keyset pagination relies on."""
    return new_id("exp_")


def requester_of(caller: Caller) -> Requester:
    """What the export records of its requester (``scaivault/audit/exports/credentials.py: caller_of`` rebuilds the
    caller from it when the job runs)."""
    principal = caller.principal
    return Requester(
        identity_id=principal.identity_id,
        identity_type=principal.identity_type,
        tenant_id=principal.tenant_id,
        partner_id=principal.partner_id,
        scopes=tuple(sorted(principal.scopes)),
        token_roles=tuple(sorted(principal.claimed_roles)),
        groups=principal.groups,
        mfa_verified_at=principal.mfa_verified_at,
        expires_at=principal.expires_at,
        source_ip=str(caller.source_ip) if caller.source_ip is not None else None,
        token_kind=principal.token_kind,
        token_id=principal.token_id,
    )


@dataclass(frozen=True)
class RequestExport:
    tenant_id: str
    partner_id: str | None
    format: str
    since: datetime
    until: datetime
    filters: dict[str, Any]
    destination: dict[str, Any]  # validated names only (the API checks them)


class AuditExportCommands:
    def __init__(
        self,
        runner: UnitOfWorkRunner,
        permissions: SecretPermissions,
        lookup: AuditExportLookup,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._runner = runner
        self._permissions = permissions
        self._lookup = lookup
        self._clock = clock

    async def request(
        self, cmd: RequestExport, requester: Caller, request_id: str | None, access: AccessRecord | None = None
    ) -> AuditExport:
        """Record the export (status ``pending``); the worker runs it. Raises the authorization error a GET of the
        credentials secret would, then ``InvalidConfig`` when no live secret is there."""
        credentials = None
        if cmd.destination["type"] == "s3":
            credentials = credentials_address(cmd.tenant_id, cmd.partner_id, cmd.destination["credentials_path"])
            requester.require_scope(CREDENTIALS_SCOPE)
            await self._permissions.require(requester, credentials, CREDENTIALS_PERMISSION)
        export_id = new_export_id()

        async def work(uow: UnitOfWork) -> AuditExport:
            if credentials is not None and not await self._lookup.live_secret_exists(uow.conn, credentials):
                raise InvalidConfig("No secret at destination.credentials_path", field="destination.credentials_path")
            estimated = await self._lookup.matching_entries(uow.conn, cmd.tenant_id, cmd.filters, cmd.since, cmd.until)
            export = AuditExport(
                export_id=export_id,
                tenant_id=cmd.tenant_id,
                partner_id=cmd.partner_id,
                format=cmd.format,
                since=cmd.since,
                until=cmd.until,
                filters=cmd.filters,
                destination=cmd.destination,
                estimated_records=estimated,
                at=self._clock(),
                actor=requester.identity_id,
                request_id=request_id,
                requester=requester_of(requester).state(),
            )
            record_outcome(access, Outcome.ACCEPTED, export_id=export_id)
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
            stamped = {**manifest, "completed_at": format_timestamp(at)}
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
