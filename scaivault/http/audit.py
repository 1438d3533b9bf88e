"""/v1/audit: the tenant's audit log, per-secret and per-identity trails, summaries and chain verification
(spec reference/audit, api-guides/audit-logs). Every endpoint needs the ``audit:read`` scope and acts in the caller's
tenant; the queries are the audit log reader's (``projections/audit/reader.py``), here requests are parsed and
answers written.

The log is a projection: an entry appears once the projection has applied its event, and the projection's lag is
shown in ``/v1/health/detailed``."""

from __future__ import annotations

from typing import Annotated

from aiohttp import web
from pydantic import BeforeValidator, Field

from projections.audit.queries import AuditFilter
from projections.audit.reader import AuditLogReader
from scaivault.domain.audit import ACTIONS, IdentityType, parse_actions
from scaivault.domain.errors import InvalidRequest
from scaivault.domain.paths import parse_path, parse_prefix
from scaivault.http.context import Callers
from scaivault.http.query import Flag, Limit, QueryModel, Timestamp, parse_query
from scaivault.http.responses import json_response
from scaivault.http.routing import RouteTable

AUDIT_SCOPE = "audit:read"
DEFAULT_LIMIT = 100
MAX_IDENTITY_ID_LENGTH = 320


def _actions(raw: object) -> list[str]:
    try:
        return parse_actions(str(raw))
    except ValueError:
        raise InvalidRequest("Unknown action", parameter="action", allowed=sorted(ACTIONS)) from None


class WindowQuery(QueryModel):
    since: Timestamp | None = Field(default=None, alias="from")
    until: Timestamp | None = Field(default=None, alias="to")


class LogQuery(WindowQuery):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None
    action: Annotated[list[str], BeforeValidator(_actions)] | None = None
    identity_type: IdentityType | None = None
    identity_id: str | None = None
    path_prefix: Annotated[str, BeforeValidator(parse_prefix)] | None = None
    success: Flag | None = None
    source_ip: str | None = None
    request_id: str | None = None

    def audit_filter(self) -> AuditFilter:
        return AuditFilter(
            since=self.since,
            until=self.until,
            actions=self.action,
            identity_id=self.identity_id,
            identity_type=self.identity_type,
            path_prefix=self.path_prefix,
            success=self.success,
            source_ip=self.source_ip,
            request_id=self.request_id,
        )


def _identity_id(raw: str) -> str:
    if not 3 <= len(raw) <= MAX_IDENTITY_ID_LENGTH or ":" not in raw:
        raise InvalidRequest("An identity is kind:name, e.g. user:alice@acme.example or sa:reporting")
    return raw


class AuditApi:
    def __init__(self, callers: Callers, reader: AuditLogReader) -> None:
        self._callers = callers
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        for base in ("/v1/audit", "/v1/t/{tenant_id}/audit"):
            table.add("GET", base + "/logs", self.logs, action="audit_read")
            table.add("GET", base + "/secrets/{path:.+}", self.secret_trail, action="audit_read")
            table.add("GET", base + "/identities/{identity_id}", self.identity_trail, action="audit_read")
            table.add("GET", base + "/summary", self.summary, action="audit_read")
            table.add("GET", base + "/verify", self.verify, action="audit_verify")

    async def logs(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, AUDIT_SCOPE)
        query = parse_query(LogQuery, request)
        return json_response(
            await self._reader.log(tenant, query.audit_filter(), limit=query.limit, cursor=query.cursor)
        )

    async def secret_trail(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, AUDIT_SCOPE)
        path = parse_path(request.match_info["path"])
        query = parse_query(LogQuery, request)
        return json_response(
            await self._reader.secret_trail(tenant, path, query.audit_filter(), limit=query.limit, cursor=query.cursor)
        )

    async def identity_trail(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, AUDIT_SCOPE)
        identity_id = _identity_id(request.match_info["identity_id"])
        query = parse_query(LogQuery, request)
        return json_response(await self._reader.identity_trail(
            tenant, identity_id, query.audit_filter(), limit=query.limit, cursor=query.cursor
        ))

    async def summary(self, request: web.Request) -> web.Response:
        _, tenant = await self._callers.in_tenant(request, AUDIT_SCOPE)
        window = parse_query(WindowQuery, request)
        return json_response(await self._reader.summary(tenant, since=window.since, until=window.until))

    async def verify(self, request: web.Request) -> web.Response:
        """Recompute the tenant's chain; report the first entry altered, removed or reordered."""
        _, tenant = await self._callers.in_tenant(request, AUDIT_SCOPE)
        return json_response(await self._reader.verify(tenant))

