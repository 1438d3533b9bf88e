"""/v1/audit/export and /v1/audit/exports: audit export jobs (spec reference/audit, api-guides/audit-logs).

Creating an export records the request (an event) and answers 202 at once; a background worker
(``scaivault/audit/exports/``) writes the files. Everything is confined to the caller's tenant. An S3 export's
credentials secret must be readable by the caller (``commands/audit_exports.py``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, field_validator, model_validator

from commands.audit_exports import AuditExportCommands, RequestExport
from projections.audit_exports.reader import AuditExportReader
from scaivault.domain.audit import IdentityType, parse_actions
from scaivault.domain.audit_exports import MAX_PREFIX_LENGTH, valid_bucket, valid_prefix
from scaivault.domain.errors import InvalidConfig, ValidationFailed
from scaivault.domain.paths import parse_path, parse_prefix
from scaivault.domain.timestamps import in_utc
from scaivault.http.context import Callers
from scaivault.http.keys import ACCESS, REQUEST_ID
from scaivault.http.query import Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body

EXPORT_SCOPE = "audit:export"
DEFAULT_LIST_LIMIT = 100
# Keys that mean someone tried to pass cloud credentials inline (refused: they belong in a secret).
INLINE_CREDENTIAL_KEYS = frozenset(
    {
        "credentials", "access_key_id", "secret_access_key", "aws_access_key_id", "aws_secret_access_key",
        "session_token", "aws_session_token", "access_key", "secret_key", "secret", "password", "token",
        "account_key", "sas_token", "connection_string", "service_account_key", "private_key",
    }
)
DESTINATION_FIELDS = {"s3": {"type", "bucket", "prefix", "credentials_path"}, "local": {"type", "prefix"}}
NOT_IN_THIS_BUILD = frozenset({"gcs", "azure_blob"})


class ExportFiltersIn(Strict):
    action: list[str] | str | None = None
    identity_id: str | None = Field(default=None, max_length=320)
    identity_type: IdentityType | None = None
    path_prefix: str | None = None
    success: bool | None = None
    source_ip: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=64)

    @field_validator("action")
    @classmethod
    def _actions(cls, value: list[str] | str | None) -> list[str] | None:
        return None if value is None else list(dict.fromkeys(parse_actions(value)))


class ExportIn(Strict):
    since: datetime = Field(alias="from")
    until: datetime = Field(alias="to")
    format: Literal["jsonl", "csv"]
    filters: ExportFiltersIn = ExportFiltersIn()
    destination: dict[str, Any]

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return in_utc(value)

    @model_validator(mode="after")
    def _ordered(self) -> ExportIn:
        if not self.since < self.until:
            raise ValueError("'from' must be before 'to'")
        return self


class ListQuery(QueryModel):
    limit: Limit = DEFAULT_LIST_LIMIT
    cursor: str | None = None


def _destination(raw: dict[str, Any]) -> dict[str, Any]:
    """The destination as stored: validated names only. Problems with it are ``invalid_config`` (400); unknown
    fields are ``validation_error`` (422) like everywhere else; inline credentials are refused without echoing them."""
    kind = raw.get("type")
    if not isinstance(kind, str):  # a list or an object cannot even be looked up among the types
        kind = None
    if kind in NOT_IN_THIS_BUILD:
        raise InvalidConfig(
            f"Destination type {kind} is not available in this build; use s3 or local", field="destination.type"
        )
    if kind not in DESTINATION_FIELDS:
        raise InvalidConfig("destination.type must be s3 or local", field="destination.type")
    inline = sorted(key for key in raw if isinstance(key, str) and key.lower() in INLINE_CREDENTIAL_KEYS)
    if inline:
        raise InvalidConfig(
            "Inline credentials are not accepted: store them in a secret and name it in destination.credentials_path",
            field="destination",
        )
    unknown = sorted(str(key)[:64] for key in raw if key not in DESTINATION_FIELDS[kind])
    if unknown:
        raise ValidationFailed(
            fields=[{"field": f"destination.{key}", "message": "Extra inputs are not permitted"} for key in unknown]
        )
    prefix = raw.get("prefix", "")
    if prefix is None:
        prefix = ""
    if not isinstance(prefix, str) or not valid_prefix(prefix):
        raise InvalidConfig(
            "destination.prefix must be segments of a-z, 0-9, '_' and '-' separated by '/'"
            f" (at most {MAX_PREFIX_LENGTH} characters)",
            field="destination.prefix",
        )
    if kind == "local":
        return {"type": "local", "prefix": prefix}
    bucket = raw.get("bucket")
    if not isinstance(bucket, str) or not valid_bucket(bucket):
        raise InvalidConfig("destination.bucket must be a valid S3 bucket name", field="destination.bucket")
    credentials_path = raw.get("credentials_path")
    if not isinstance(credentials_path, str):
        raise InvalidConfig(
            "destination.credentials_path must name the secret holding the upload credentials",
            field="destination.credentials_path"
        )
    return {"type": "s3", "bucket": bucket, "prefix": prefix, "credentials_path": parse_path(credentials_path)}


def _filters(body: ExportFiltersIn) -> dict[str, Any]:
    filters = {
        "actions": body.action,
        "identity_id": body.identity_id,
        "identity_type": body.identity_type,
        "path_prefix": parse_prefix(body.path_prefix) if body.path_prefix is not None else None,
        "success": body.success,
        "source_ip": body.source_ip,
        "request_id": body.request_id,
    }
    return {name: value for name, value in filters.items() if value is not None}


class AuditExportsApi:
    def __init__(
        self,
        callers: Callers,
        commands: AuditExportCommands,
        reader: AuditExportReader,
        worker_wakeup: Callable[[], None] = lambda: None,
    ) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader
        self._worker_wakeup = worker_wakeup

    def add_routes(self, table: RouteTable) -> None:
        for base in ("/v1/audit", "/v1/t/{tenant_id}/audit"):
            table.add("POST", base + "/export", self.create_export, action="export_created")
            table.add("GET", base + "/exports", self.list_exports, action="audit_read")
            table.add("GET", base + "/exports/{export_id}", self.get_export, action="audit_read")

    async def create_export(self, request: web.Request) -> web.Response:
        who, tenant = await self._callers.in_tenant(request, EXPORT_SCOPE)
        body = parse_body(ExportIn, await read_json_object(request))
        command = RequestExport(
            tenant_id=tenant,
            partner_id=who.partner_id,
            format=body.format,
            since=body.since,
            until=body.until,
            filters=_filters(body.filters),
            destination=_destination(body.destination),
        )
        export = await self._commands.request(command, who, request[REQUEST_ID], request[ACCESS])
        self._worker_wakeup()
        return committed_response(
            request,
            {"export_id": export.export_id, "status": export.status, "estimated_records": export.estimated_records},
            headers={"Location": f"/v1/audit/exports/{export.export_id}"},
        )

    async def list_exports(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, EXPORT_SCOPE)
        query = parse_query(ListQuery, request)
        return json_response(await self._reader.listing(tenant, cursor=query.cursor, limit=query.limit))

    async def get_export(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, EXPORT_SCOPE)
        return json_response(await self._reader.get(tenant, request.match_info["export_id"]))
