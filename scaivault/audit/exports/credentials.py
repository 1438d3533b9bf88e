"""An S3 export's upload credentials, read on its requester's behalf when the job runs.

The job acts for whoever requested the export, with that identity's rights as they are *now*: the requester recorded
on the export (``caller_of``) must hold a token a request would still accept (not
expired, with the authenticator's leeway; not revoked, by a revocation list no staler than requests accept:
``TokenAuthenticator.recheck``), its roles are derived from its token's own roles through the identity mirror as it
is now (a role taken away since, or given by a record removed since, does not count), it needs the ``secrets:read``
scope, and the secret is read through the secret reader a GET goes through (``projections/secrets/reader.py``: the
policy decision, with the identity mirror's groups and standing as they are now and conditions evaluated now,
before anything is looked up; decryption; the access note). An export recorded without a requester, or without its
token's own roles (``scaivault/domain/audit_exports.py: _token_roles_unknown``), can read no credentials.

The read is in the audit log as a ``read`` by the requester, ``method`` ``JOB``, route ``audit-export``, with
``extra_data.via = "audit-export"`` and the export id, whether it was allowed or refused; it is durable before the
credentials are used. A refusal fails the export with a message that names nothing of the secret.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from projections.secrets.reader import SecretReader
from scaivault.audit.access_records import AccessRecord, AccessRecorder
from scaivault.audit.exports.destinations import S3Credentials
from scaivault.audit.exports.errors import ExportFailed
from scaivault.auth.caller import Caller
from scaivault.auth.effective_principals import EffectivePrincipals
from scaivault.auth.principal import Principal
from scaivault.clock import utcnow
from scaivault.domain.audit_exports import CREDENTIALS_SCOPE, AuditExport, Requester, credentials_address
from scaivault.domain.errors import AccessDenied, ScaiVaultError
from scaivault.domain.policies import parse_ip
from scaivault.ids import new_request_id

# The access record of a job whose export recorded no requester (stored before requesters were).
UNKNOWN_REQUESTER = "system:audit-export"
VIA = "audit-export"
DEFAULT_REGION = "us-east-1"
REGION_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
REQUIRED_FIELDS = ("access_key_id", "secret_access_key")
OPTIONAL_FIELDS = ("region", "endpoint_url", "session_token")

NOT_ALLOWED = "The export's requester may not read its credentials secret; nothing was uploaded"
UNREADABLE = "The credentials secret could not be read (missing, deleted or destroyed); nothing was uploaded"
UNAVAILABLE = "The credentials could not be read or their read recorded in the audit log; create the export again later"
_REFUSALS = frozenset(
    {"access_denied", "insufficient_scope", "mfa_required", "ip_not_allowed", "time_window_violation",
     "tenant_access_denied", "token_revoked", "token_expired"}
)
_NOT_FOUND = frozenset({"secret_not_found", "version_not_found"})


def _status(error: ScaiVaultError) -> int:
    """The status the access record gives a refused read: what a GET would have answered."""
    if error.code in ("token_revoked", "token_expired"):
        return 401
    if error.code in _REFUSALS:
        return 403
    if error.code in _NOT_FOUND:
        return 404
    return 503 if error.code == "service_unavailable" else 500


def _message(error: ScaiVaultError) -> str:
    if error.code in _REFUSALS:
        return NOT_ALLOWED
    if error.code == "service_unavailable":
        return UNAVAILABLE
    return UNREADABLE


def caller_of(export: AuditExport) -> Caller | None:
    """The export's requester as a caller in the export's tenant, with its token as recorded when it was requested
    (``commands/audit_exports.py: requester_of``; its roles are the token's: derive the roles it holds before
    deciding anything); None when no requester, or not its token's roles, was recorded."""
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


class RequesterCredentials:
    def __init__(self, reader: SecretReader, principals: EffectivePrincipals, access_recorder: AccessRecorder) -> None:
        self._reader = reader
        self._principals = principals
        self._access_recorder = access_recorder

    async def s3(self, export: AuditExport) -> S3Credentials:
        """The export's S3 credentials, if its requester may read them now; else ``ExportFailed``."""
        address = credentials_address(export.tenant_id, export.partner_id, export.destination["credentials_path"])
        requester = caller_of(export)
        record = _access_record(export, export.requested_by, address.path)
        try:
            if requester is None:
                raise AccessDenied("The export recorded no requester, or not its token's roles")
            caller = replace(requester, principal=await self._principals.recheck(requester.principal))
            caller.require_scope(CREDENTIALS_SCOPE)
            document = await self._reader.read(caller, address, access=record)
        except ScaiVaultError as exc:
            record.status, record.error_code = _status(exc), exc.code
            await self._durable(record)
            raise ExportFailed(_message(exc)) from None
        record.status = 200
        await self._durable(record)
        return _s3_credentials(document["data"])

    async def _durable(self, record: AccessRecord) -> None:
        try:
            await self._access_recorder.record(record)
        except ScaiVaultError:
            raise ExportFailed(UNAVAILABLE) from None


def _access_record(export: AuditExport, requester: Requester | None, path: str) -> AccessRecord:
    return AccessRecord(
        recorded_at=utcnow(),
        request_id=new_request_id(),
        method="JOB",
        route="audit-export",
        action="read",
        partner_id=export.partner_id,
        tenant_id=export.tenant_id,
        identity_id=requester.identity_id if requester is not None else UNKNOWN_REQUESTER,
        identity_type=requester.identity_type if requester is not None else None,
        secret_path=path,
        extra={"via": VIA, "export_id": export.export_id},
    )


def _s3_credentials(data: dict[str, Any]) -> S3Credentials:
    """The documented fields of the secret (named in messages: the requester may read it); values are never
    quoted."""
    for name in REQUIRED_FIELDS:
        if not isinstance(data.get(name), str) or not data[name]:
            raise ExportFailed(f"The credentials secret has no {name}")
    for name in OPTIONAL_FIELDS:
        if data.get(name) is not None and not isinstance(data[name], str):
            raise ExportFailed(f"The credentials secret's {name} must be a string")
    region = data.get("region") or DEFAULT_REGION
    if not REGION_PATTERN.fullmatch(region):
        raise ExportFailed("The credentials secret's region is not valid")
    return S3Credentials(
        access_key_id=data["access_key_id"],
        secret_access_key=data["secret_access_key"],
        region=region,
        endpoint_url=data.get("endpoint_url") or None,
        session_token=data.get("session_token") or None,
    )
