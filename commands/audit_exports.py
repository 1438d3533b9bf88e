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
from datetime import UTC, datetime
from typing import Any, Protocol

import asyncpg

from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome, utcnow
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.domain.audit_exports import (
    AuditExport,
    Requester,
    audit_export_stream_id,
)
from scaivault.domain.errors import InvalidConfig
from scaivault.domain.outcomes import Outcome
from scaivault.domain.policies import parse_ip
from scaivault.domain.secrets import SecretAddress
from scaivault.ids import new_id

CREDENTIALS_SCOPE = "secrets:read"
CREDENTIALS_PERMISSION = "read"


class SecretAuthorization(Protocol):
    """The policy decision on a secret for a caller (``scaivault/auth/authorization.py: Authorizer``)."""

    async def require_on_secret(self, caller: Caller, address: SecretAddress, permission: str) -> None: ...


class ExportLookup(Protocol):
    """The read models an export request consults, in its transaction (``projections/audit_exports.py``)."""

    async def live_secret_exists(self, conn: asyncpg.Connection, address: SecretAddress) -> bool: ...

    async def matching_entries(
        self, conn: asyncpg.Connection, tenant_id: str, filters: dict[str, Any], since: datetime, until: datetime
    ) -> int:
        """How many audit-log entries of the tenant the export's filters and range match now."""


def new_export_id() -> str:
    """Time-ordered, which the listing's keyset pagination relies on."""
    return new_id("exp_")


def requester_of(caller: Caller) -> Requester:
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


def caller_of(export: AuditExport) -> Caller | None:
    """The export's requester as a caller in the export's tenant, with its token as recorded when it was requested
    (its roles are the token's: derive the roles it holds before deciding anything); None when no requester, or not
    its token's roles, was recorded."""
    requester = export.requested_by
    if requester is None or requester.token_roles is None:
        return None
    principal = Principal(
        identity_id=requester.identity_id,
        identity_type=requester.identity_type,
        display_name=None,
        tenant_id=requester.tenant_id,
        partner_id=requester.partner_id,
        scopes=frozenset(requester.scopes),
        roles=frozenset(requester.token_roles),
        groups=requester.groups,
        mfa_verified_at=requester.mfa_verified_at,
        expires_at=requester.expires_at,
        issued_at=None,
        token_kind=requester.token_kind,
        token_id=requester.token_id,
    )
    return Caller(principal, export.tenant_id, export.partner_id, parse_ip(requester.source_ip))


def credentials_address(export_tenant: str, partner_id: str | None, path: str) -> SecretAddress:
    """Where an export's credentials live: a secret of the export's own tenant."""
    return SecretAddress(owner=export_tenant, partner_id=partner_id or "", tenant_id=export_tenant, path=path)


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
        authorization: SecretAuthorization,
        lookup: ExportLookup,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._runner = runner
        self._authorization = authorization
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
            await self._authorization.require_on_secret(requester, credentials, CREDENTIALS_PERMISSION)
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
            stamped = {**manifest, "completed_at": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
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
