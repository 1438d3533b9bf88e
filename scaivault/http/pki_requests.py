"""/v1/pki/csrs (the CSR workflow) and /v1/pki/trust-anchors (spec core-concepts/pki). Decisions where the spec is
silent: docs/pki.md, "CSR requests" and "Trust anchors".

Scopes: submitting a CSR request needs ``pki:issue``; deciding one (approve, reject) and adding or deleting trust
anchors need ``pki:admin`` (and an admin role for the tenant: ``commands/pki_requests.py``). Reading needs either
scope; which CSR requests a caller sees is the reader's to say (``projections/pki_requests/reader.py``).
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web
from pydantic import Field

from commands.pki_requests import CsrRequestCommands, NewCsrRequest, NewTrustAnchor, TrustAnchorCommands
from projections.pki_requests.reader import PkiRequestReader
from scaivault.domain.errors import CsrNotFound, TrustAnchorNotFound
from scaivault.domain.labels import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH
from scaivault.domain.pki_requests import MAX_REASON_LENGTH
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.pki import ADMIN, BASES, ISSUE, MAX_PEM, PageQuery
from scaivault.http.query import Flag, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body


class CsrListQuery(PageQuery):
    status: Literal["pending", "approved", "rejected"] | None = None


class BundleQuery(QueryModel):
    include_internal: Flag = False
    include_expired: Flag = False


class CsrIn(Strict):
    csr_pem: str = Field(max_length=MAX_PEM)
    role: str = Field(max_length=128)
    ttl: str | None = Field(default=None, max_length=32)
    common_name: str | None = Field(default=None, max_length=253)
    alt_names: list[str] = Field(default_factory=list, max_length=100)
    ip_sans: list[str] = Field(default_factory=list, max_length=100)
    note: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)


class ApproveIn(Strict):
    ttl: str | None = Field(default=None, max_length=32)


class RejectIn(Strict):
    reason: str = Field(max_length=MAX_REASON_LENGTH)


class TrustAnchorIn(Strict):
    name: str = Field(max_length=MAX_NAME_LENGTH)
    certificate_pem: str = Field(max_length=MAX_PEM)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION_LENGTH)


def _csr_id(request: web.Request) -> str:
    return path_id(request, "csr_id", CsrNotFound, max_length=64)


def _anchor_id(request: web.Request) -> str:
    return path_id(request, "anchor_id", TrustAnchorNotFound, key="trust_anchor_id", max_length=64)


class PkiRequestsApi:
    def __init__(
        self, callers: Callers, csr_commands: CsrRequestCommands, anchor_commands: TrustAnchorCommands,
        reader: PkiRequestReader,
    ) -> None:
        self._callers = callers
        self._csrs = csr_commands
        self._anchors = anchor_commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            table.add("GET", base + "/csrs", self.list_csrs, action="pki_read")
            table.add("POST", base + "/csrs", self.submit_csr, action="pki_csr_submit")
            table.add("GET", base + "/csrs/{csr_id}", self.get_csr, action="pki_read")
            table.add("POST", base + "/csrs/{csr_id}/approve", self.approve_csr, action="pki_csr_approve")
            table.add("POST", base + "/csrs/{csr_id}/reject", self.reject_csr, action="pki_csr_reject")
            table.add("GET", base + "/trust-anchors", self.list_anchors, action="pki_read")
            table.add("POST", base + "/trust-anchors", self.add_anchor, action="pki_trust_anchor_create")
            # Before /{anchor_id}, which would take "bundle" for an id.
            table.add("GET", base + "/trust-anchors/bundle", self.bundle, action="pki_read")
            table.add("GET", base + "/trust-anchors/{anchor_id}", self.get_anchor, action="pki_read")
            table.add("DELETE", base + "/trust-anchors/{anchor_id}", self.delete_anchor,
                      action="pki_trust_anchor_delete")

    # ---- CSR requests ---------------------------------------------------------------------------------------------

    async def list_csrs(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(CsrListQuery, request)
        return json_response(await self._reader.csr_requests(
            who, status=query.status, limit=query.limit, cursor=query.cursor
        ))

    async def get_csr(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.csr_request(who, _csr_id(request)))

    async def submit_csr(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ISSUE)
        body = parse_body(CsrIn, await read_json_object(request))
        new = NewCsrRequest(
            csr_pem=body.csr_pem, role=body.role, ttl=body.ttl, common_name=body.common_name,
            alt_names=body.alt_names, ip_sans=body.ip_sans, note=body.note,
        )
        submitted = await self._csrs.submit(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.csr_request(who, submitted.csr_id)
        return committed_response(request, document, headers={"Location": f"/v1/pki/csrs/{submitted.csr_id}"})

    async def approve_csr(self, request: web.Request) -> web.Response:
        """The body is optional: ``{"ttl": ...}`` replaces the lifetime the request asked for."""
        who = await self._callers.with_scope(request, ADMIN)
        csr_id = _csr_id(request)
        body = parse_body(ApproveIn, await read_json_object(request) if request.body_exists else {})
        await self._csrs.approve(csr_id, body.ttl, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.csr_request(who, csr_id))

    async def reject_csr(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        csr_id = _csr_id(request)
        body = parse_body(RejectIn, await read_json_object(request))
        await self._csrs.reject(csr_id, body.reason, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.csr_request(who, csr_id))

    # ---- trust anchors --------------------------------------------------------------------------------------------

    async def list_anchors(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(PageQuery, request)
        return json_response(await self._reader.trust_anchors(who, limit=query.limit, cursor=query.cursor))

    async def get_anchor(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.trust_anchor(who, _anchor_id(request)))

    async def bundle(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(BundleQuery, request)
        bundle = await self._reader.trust_bundle(
            who, include_internal=query.include_internal, include_expired=query.include_expired
        )
        return web.Response(text=bundle, content_type="application/x-pem-file")

    async def add_anchor(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        body = parse_body(TrustAnchorIn, await read_json_object(request))
        anchor = await self._anchors.add(
            NewTrustAnchor(name=body.name, certificate_pem=body.certificate_pem, description=body.description),
            actor_of(request, who), request[ACCESS],
        )
        document = await self._reader.trust_anchor(who, anchor.anchor_id)
        return committed_response(
            request, document, headers={"Location": f"/v1/pki/trust-anchors/{anchor.anchor_id}"}
        )

    async def delete_anchor(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        await self._anchors.remove(_anchor_id(request), actor_of(request, who), request[ACCESS])
        return committed_response(request)
