"""/v1/audit/export and /v1/audit/exports: audit export jobs (spec reference/audit, api-guides/audit-logs).

Creating an export records the request (an event) and answers 202 at once; a background worker
(``scaivault/audit/exports.py``) writes the files. Everything is confined to the caller's tenant."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, field_validator, model_validator

from commands.audit_exports import RequestExport
from commands.secrets import Actor
from projections.audit import queries as audit_queries
from projections.audit_exports import export_row, export_rows
from projections.secrets.queries import secret_metadata_row
from scaivault.audit.exports import MAX_PREFIX_LENGTH, valid_bucket, valid_prefix
from scaivault.domain.errors import ExportNotFound, InvalidConfig, InvalidCursor, ValidationFailed
from scaivault.domain.paths import parse_path, parse_prefix
from scaivault.domain.timestamps import in_utc
from scaivault.http.audit import ACTIONS, IDENTITY_TYPES, _limit
from scaivault.http.cursors import decode_cursor, encode_cursor
from scaivault.http.context import Caller, caller
from scaivault.http.keys import ACCESS, CONTAINER, REQUEST_ID
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.schemas import Strict, parse_body

EXPORT_ID = re.compile(r"exp_[0-9a-z]{26}")
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
    identity_type: str | None = None
    path_prefix: str | None = None
    success: bool | None = None
    source_ip: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=64)

    @field_validator("action")
    @classmethod
    def _actions(cls, value: list[str] | str | None) -> list[str] | None:
        if value is None:
            return None
        actions = [a.strip() for a in value.split(",")] if isinstance(value, str) else [a.strip() for a in value]
        actions = [a for a in actions if a]
        if not actions or any(a not in ACTIONS for a in actions):
            raise ValueError(f"each action must be one of {', '.join(sorted(ACTIONS))}")
        return list(dict.fromkeys(actions))

    @field_validator("identity_type")
    @classmethod
    def _identity_type(cls, value: str | None) -> str | None:
        if value is not None and value not in IDENTITY_TYPES:
            raise ValueError(f"must be one of {', '.join(sorted(IDENTITY_TYPES))}")
        return value


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


def _destination(raw: dict[str, Any]) -> dict[str, Any]:
    """The destination as stored: validated names only. Problems with it are ``invalid_config`` (400); unknown
    fields are ``validation_error`` (422) like everywhere else; inline credentials are refused without echoing them."""
    kind = raw.get("type")
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


async def _exporter(request: web.Request) -> tuple[Caller, str]:
    who = await caller(request)
    who.require_scope("audit:export")
    return who, who.require_tenant()


async def create_export(request: web.Request) -> web.Response:
    who, tenant = await _exporter(request)
    body = parse_body(ExportIn, await read_json_object(request))
    destination = _destination(body.destination)
    filters = _filters(body.filters)
    container = request.app[CONTAINER]
    if destination["type"] == "s3":
        # Fail fast on a missing secret; the value itself is read (and that read audited) only by the job.
        row = await secret_metadata_row(container.pool, tenant, destination["credentials_path"])
        if row is None or row["deleted_at"] is not None:
            raise InvalidConfig("No secret at destination.credentials_path", field="destination.credentials_path")
    audit_filter = audit_queries.AuditFilter.of(filters, since=body.since, until=body.until)
    estimated = await audit_queries.audit_count(container.pool, tenant, audit_filter)
    command = RequestExport(
        tenant_id=tenant,
        partner_id=who.partner_id,
        format=body.format,
        since=body.since,
        until=body.until,
        filters=filters,
        destination=destination,
        estimated_records=estimated,
    )
    actor = Actor(identity_id=who.principal.identity_id, request_id=request[REQUEST_ID])
    export = await container.audit_exports.request(command, actor, request[ACCESS])
    container.export_worker.wake()
    return json_response(
        {"export_id": export.export_id, "status": export.status, "estimated_records": estimated},
        status=202,
        headers={"Location": f"/v1/audit/exports/{export.export_id}"},
    )


def _document(row: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "export_id": row["export_id"],
        "status": row["status"],
        "format": row["format"],
        "from": row["range_from"],
        "to": row["range_to"],
        "filters": row["filters"],
        "destination": row["destination"],
        "estimated_records": row["estimated_records"],
        "attempts": row["attempts"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "started_at": row["started_at"],
        "completed_at": row["completed_at"],
        "failed_at": row["failed_at"],
    }
    if row["status"] == "completed":
        document["manifest"] = row["manifest"]
    if row["status"] == "failed":
        document["error"] = row["error"]
    return document


def _encode_cursor(export_id: str) -> str:
    return encode_cursor({"before": export_id})


def _decode_cursor(request: web.Request) -> str | None:
    raw = request.query.get("cursor")
    if raw is None:
        return None
    before = decode_cursor(raw).get("before")
    if not isinstance(before, str) or not EXPORT_ID.fullmatch(before):
        raise InvalidCursor()
    return before


async def list_exports(request: web.Request) -> web.Response:
    _, tenant = await _exporter(request)
    limit = _limit(request)
    rows = await export_rows(request.app[CONTAINER].pool, tenant, before=_decode_cursor(request), limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return json_response(
        {
            "exports": [_document(row) for row in rows],
            "cursor": _encode_cursor(rows[-1]["export_id"]) if has_more else None,
            "has_more": has_more,
        }
    )


async def get_export(request: web.Request) -> web.Response:
    _, tenant = await _exporter(request)
    export_id = request.match_info["export_id"]
    row = await export_row(request.app[CONTAINER].pool, tenant, export_id) if EXPORT_ID.fullmatch(export_id) else None
    if row is None:  # another tenant's export answers exactly like a missing one
        raise ExportNotFound(export_id=export_id[:64])
    return json_response(_document(row))


create_export.audit_action = "export_created"  # type: ignore[attr-defined]
list_exports.audit_action = "audit_read"  # type: ignore[attr-defined]
get_export.audit_action = "audit_read"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    for base in ("/v1/audit", "/v1/t/{tenant_id}/audit"):
        app.router.add_post(base + "/export", create_export)
        app.router.add_get(base + "/exports", list_exports)
        app.router.add_get(base + "/exports/{export_id}", get_export)
