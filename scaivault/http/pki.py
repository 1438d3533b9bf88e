"""/v1/pki: internal CAs, roles, issuing and signing, certificates, revocation, CRLs and OCSP (spec reference/pki).
Decisions where the spec is silent: docs/pki.md.

Scopes: ``pki:admin`` manages CAs and roles and revokes; ``pki:issue`` issues and signs; reading needs either.
What relying parties fetch (a CA's certificate, its CRLs, its OCSP answers) needs no token: TLS clients and
``openssl`` fetch them from the URLs in certificates, without credentials. Those routes leave no access record (a
busy CRL or OCSP endpoint would drown the audit log in reads of public data).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from pydantic import Field, StrictBool, StrictInt

from commands.pki import LeafRequest, NewCa, PkiCommands
from projections.pki.reader import PkiReader
from scaivault.domain.errors import CaNotFound, CertificateNotFound, InvalidRequest, RoleNotFound
from scaivault.domain.labels import field_error
from scaivault.domain.pki_roles import SETTINGS
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import ExpiringWithin, Flag, Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import UNAUDITED, RouteTable
from scaivault.http.schemas import Strict, parse_body
from scaivault.ratelimit.http import RequestCharges

BASES = ("/v1/pki", "/v1/t/{tenant_id}/pki")
ADMIN = "pki:admin"
ISSUE = "pki:issue"
DEFAULT_LIMIT = 100
MAX_PEM = 64 * 1024
MAX_OCSP_REQUEST = 16 * 1024
PEM_TYPES = ("application/x-pem-file", "application/pem-certificate-chain", "text/plain")


class PageQuery(QueryModel):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class CertificateListQuery(PageQuery):
    ca_id: str | None = Field(default=None, max_length=64)
    expiring_within: ExpiringWithin | None = None
    include_revoked: Flag = False


class CaIn(Strict):
    name: str
    common_name: str
    ca_type: str
    parent_ca_id: str | None = Field(default=None, max_length=64)
    key_type: str = "rsa"
    key_size: StrictInt | None = None
    validity_days: StrictInt | None = None
    signed_externally: StrictBool = False


class SignedCertificateIn(Strict):
    certificate_pem: str = Field(max_length=MAX_PEM)
    chain_pem: str | None = Field(default=None, max_length=MAX_PEM)


class RevokeIn(Strict):
    reason: str | None = Field(default=None, max_length=512)


class IssueIn(Strict):
    common_name: str | None = Field(default=None, max_length=253)
    alt_names: list[str] = Field(default_factory=list, max_length=100)
    ip_sans: list[str] = Field(default_factory=list, max_length=100)
    ttl: str | None = Field(default=None, max_length=32)


class SignIn(IssueIn):
    csr_pem: str = Field(max_length=MAX_PEM)


def _ca_id(request: web.Request) -> str:
    return path_id(request, "ca_id", CaNotFound, max_length=64)


def _public_ca_id(request: web.Request) -> str:
    """The CA id of a public route (no access record to note it on)."""
    value = request.match_info["ca_id"]
    if "\x00" in value or len(value) > 64:
        raise CaNotFound(ca_id=value.replace("\x00", "")[:64])
    return value


def _role(request: web.Request) -> str:
    return path_id(request, "role", RoleNotFound, max_length=128)


def _certificate_id(request: web.Request) -> str:
    return path_id(request, "certificate_id", CertificateNotFound, max_length=64)


def _wants_pem(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(kind in accept for kind in PEM_TYPES)


def _crl_response(request: web.Request, crl: dict[str, Any]) -> web.Response:
    headers = {"Cache-Control": "no-cache"}
    if _wants_pem(request):
        pem = x509.load_der_x509_crl(crl["der"]).public_bytes(serialization.Encoding.PEM)
        return web.Response(body=pem, content_type="application/x-pem-file", headers=headers)
    return web.Response(body=crl["der"], content_type="application/pkix-crl", headers=headers)


class PkiApi:
    def __init__(self, callers: Callers, commands: PkiCommands, reader: PkiReader, charges: RequestCharges) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader
        self._charges = charges

    def add_routes(self, table: RouteTable) -> None:
        # Public (no token): fetched by relying parties from the URLs certificates carry.
        table.add("GET", "/v1/pki/ca/{ca_id}/certificate/der", self.ca_certificate_der, action=UNAUDITED)
        table.add("GET", "/v1/pki/ca/{ca_id}/crl/{partition}", self.crl_partition, action=UNAUDITED)
        table.add("POST", "/v1/pki/ca/{ca_id}/ocsp", self.ocsp_post, action=UNAUDITED)
        # Base64 has '/': the request is the rest of the path (RFC 6960 A.1).
        table.add("GET", "/v1/pki/ca/{ca_id}/ocsp/{request:.+}", self.ocsp_get, action=UNAUDITED)
        for base in BASES:
            table.add("GET", base + "/ca", self.list_cas, action="pki_ca_read")
            table.add("POST", base + "/ca", self.create_ca, action="pki_ca_create")
            table.add("GET", base + "/ca/{ca_id}", self.get_ca, action="pki_ca_read")
            table.add("GET", base + "/ca/{ca_id}/certificate", self.ca_certificate, action=UNAUDITED)
            table.add("GET", base + "/ca/{ca_id}/csr", self.ca_csr, action="pki_ca_read")
            table.add("POST", base + "/ca/{ca_id}/signed-certificate", self.import_signed,
                      action="pki_ca_import")
            table.add("POST", base + "/ca/{ca_id}/revoke", self.revoke_ca, action="pki_revoke")
            table.add("POST", base + "/ca/{ca_id}/crl", self.publish_crl, action="pki_crl_publish")
            table.add("GET", base + "/ca/{ca_id}/crl", self.crl, action=UNAUDITED)
            table.add("GET", base + "/roles", self.list_roles, action="pki_role_read")
            table.add("POST", base + "/roles", self.create_role, action="pki_role_create")
            table.add("GET", base + "/roles/{role}", self.get_role, action="pki_role_read")
            table.add("PATCH", base + "/roles/{role}", self.patch_role, action="pki_role_update")
            table.add("DELETE", base + "/roles/{role}", self.delete_role, action="pki_role_delete")
            table.add("POST", base + "/issue/{role}", self.issue, action="pki_issue")
            table.add("POST", base + "/sign/{role}", self.sign, action="pki_sign")
            table.add("GET", base + "/certificates", self.list_certificates, action="pki_read")
            table.add("GET", base + "/certificates/{certificate_id}", self.get_certificate, action="pki_read")
            table.add("GET", base + "/certificates/{certificate_id}/pem", self.certificate_pem, action="pki_read")
            table.add("POST", base + "/certificates/{certificate_id}/revoke", self.revoke_certificate,
                      action="pki_revoke")

    # ---- CAs ------------------------------------------------------------------------------------------------------

    async def list_cas(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(PageQuery, request)
        return json_response(await self._reader.cas(who, limit=query.limit, cursor=query.cursor))

    async def get_ca(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.ca(who, _ca_id(request)))

    async def create_ca(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        body = parse_body(CaIn, await read_json_object(request))
        new = NewCa(
            name=body.name, common_name=body.common_name, ca_type=body.ca_type, parent_ca_id=body.parent_ca_id,
            key_type=body.key_type, key_size=body.key_size, validity_days=body.validity_days,
            signed_externally=body.signed_externally,
        )
        ca = await self._commands.create_ca(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.ca(who, ca.ca_id)
        return committed_response(request, document, headers={"Location": f"/v1/pki/ca/{ca.ca_id}"})

    async def ca_certificate(self, request: web.Request) -> web.Response:
        """JSON (``certificate_pem``, ``ca_chain``) by default; the PEM alone for ``Accept: application/x-pem-file``,
        DER for ``application/pkix-cert``."""
        await self._charges.charge_anonymous(request)
        document = await self._reader.ca_certificate(_public_ca_id(request))
        accept = request.headers.get("Accept", "")
        if "application/pkix-cert" in accept:
            return self._der(document["certificate_pem"])
        if _wants_pem(request):
            return web.Response(text=document["certificate_pem"], content_type="application/x-pem-file")
        return json_response(document)

    async def ca_certificate_der(self, request: web.Request) -> web.Response:
        """For the authority-information-access URL in certificates (RFC 5280 4.2.2.1: DER)."""
        await self._charges.charge_anonymous(request)
        return self._der((await self._reader.ca_certificate(_public_ca_id(request)))["certificate_pem"])

    @staticmethod
    def _der(pem: str) -> web.Response:
        der = x509.load_pem_x509_certificate(pem.encode()).public_bytes(serialization.Encoding.DER)
        return web.Response(body=der, content_type="application/pkix-cert")

    async def ca_csr(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        document = await self._reader.ca(who, _ca_id(request))
        if "csr_pem" not in document:
            raise InvalidRequest("Only an intermediate waiting for an external signature has a CSR")
        return json_response({"ca_id": document["id"], "csr_pem": document["csr_pem"]})

    async def import_signed(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        ca_id = _ca_id(request)
        body = parse_body(SignedCertificateIn, await read_json_object(request))
        await self._commands.import_signed_certificate(
            ca_id, body.certificate_pem, body.chain_pem, actor_of(request, who), request[ACCESS]
        )
        return json_response(await self._reader.ca(who, ca_id))

    async def revoke_ca(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        ca_id = _ca_id(request)
        body = parse_body(RevokeIn, await read_json_object(request))
        revoked = await self._commands.revoke_ca(ca_id, body.reason, actor_of(request, who), request[ACCESS])
        return json_response({**await self._reader.ca(who, ca_id), "certificates_revoked": revoked})

    async def publish_crl(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        published = await self._commands.publish_crl(_ca_id(request), actor_of(request, who), request[ACCESS])
        pem = x509.load_der_x509_crl(published.der).public_bytes(serialization.Encoding.PEM).decode()
        return json_response({
            "ca_id": published.ca_id, "crl_pem": pem, "crl_number": published.crl_number,
            "this_update": published.this_update, "next_update": published.next_update,
            "entries": published.entries,
        })

    async def crl(self, request: web.Request) -> web.Response:
        await self._charges.charge_anonymous(request)
        return _crl_response(request, await self._reader.crl(_public_ca_id(request)))

    async def crl_partition(self, request: web.Request) -> web.Response:
        await self._charges.charge_anonymous(request)
        partition = request.match_info["partition"]
        if len(partition) > 16:
            raise CaNotFound(ca_id=request.match_info["ca_id"][:64])
        return _crl_response(request, await self._reader.crl(_public_ca_id(request), partition))

    async def ocsp_post(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_OCSP_REQUEST:
            return await self._ocsp(request, b"")
        return await self._ocsp(request, await request.read())

    async def ocsp_get(self, request: web.Request) -> web.Response:
        """RFC 6960 A.1: the DER request, base64 then URL-encoded, as the last path segment."""
        encoded = request.match_info["request"]
        try:
            der = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_" if "-" in encoded
                                   or "_" in encoded else None, validate=False)
        except (binascii.Error, ValueError):
            der = b""
        return await self._ocsp(request, der)

    async def _ocsp(self, request: web.Request, der: bytes) -> web.Response:
        await self._charges.charge_anonymous(request)
        answer = await self._reader.ocsp(_public_ca_id(request), der)
        return web.Response(body=answer, content_type="application/ocsp-response",
                            headers={"Cache-Control": "max-age=60, public"})

    # ---- roles ----------------------------------------------------------------------------------------------------

    async def list_roles(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(PageQuery, request)
        return json_response(await self._reader.roles(who, limit=query.limit, cursor=query.cursor))

    async def get_role(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.role(who, _role(request)))

    async def create_role(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        body = await read_json_object(request)
        name, ca_id = body.pop("name", None), body.pop("ca_id", None)
        role = await self._commands.create_role(name, ca_id, _role_settings(body), actor_of(request, who),
                                                request[ACCESS])
        document = await self._reader.role(who, role.name)
        return committed_response(request, document, headers={"Location": f"/v1/pki/roles/{role.name}"})

    async def patch_role(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        name = _role(request)
        body = await read_json_object(request)
        if body.get("name", name) != name:
            raise InvalidRequest("A role's name cannot be changed: create a new role")
        body.pop("name", None)
        ca_id = body.pop("ca_id", None)
        if ca_id is not None and not isinstance(ca_id, str):
            raise field_error("ca_id", "must be a string")
        await self._commands.update_role(name, ca_id, _role_settings(body), actor_of(request, who),
                                         request[ACCESS])
        return json_response(await self._reader.role(who, name))

    async def delete_role(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        await self._commands.delete_role(_role(request), actor_of(request, who), request[ACCESS])
        return web.Response(status=204)

    # ---- issuing and certificates ---------------------------------------------------------------------------------

    async def issue(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ISSUE)
        role = _role(request)
        body = parse_body(IssueIn, await read_json_object(request))
        issued = await self._commands.issue(role, _leaf_request(body), actor_of(request, who), request[ACCESS])
        return json_response(_issued_document(issued))

    async def sign(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ISSUE)
        role = _role(request)
        body = parse_body(SignIn, await read_json_object(request))
        leaf = LeafRequest(common_name=body.common_name, alt_names=body.alt_names, ip_sans=body.ip_sans,
                           ttl=body.ttl, csr_pem=body.csr_pem)
        issued = await self._commands.sign(role, leaf, actor_of(request, who), request[ACCESS])
        return json_response(_issued_document(issued))

    async def list_certificates(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(CertificateListQuery, request)
        return json_response(await self._reader.certificates(
            who, ca_id=query.ca_id, expiring_within=query.expiring_within, include_revoked=query.include_revoked,
            limit=query.limit, cursor=query.cursor,
        ))

    async def get_certificate(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.certificate(who, _certificate_id(request)))

    async def certificate_pem(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        document = await self._reader.certificate(who, _certificate_id(request))
        return web.Response(text=document["certificate"], content_type="application/x-pem-file")

    async def revoke_certificate(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        certificate_id = _certificate_id(request)
        body = parse_body(RevokeIn, await read_json_object(request))
        await self._commands.revoke_certificate(certificate_id, body.reason, actor_of(request, who),
                                                request[ACCESS])
        return json_response(await self._reader.certificate(who, certificate_id))


def _role_settings(body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(SETTINGS))
    if unknown:
        # 422 naming the field, as every unknown body field is (docs/api-decisions.md, Conventions)
        raise field_error(unknown[0][:64], "is not a role setting")
    return body


def _leaf_request(body: IssueIn) -> LeafRequest:
    return LeafRequest(common_name=body.common_name, alt_names=body.alt_names, ip_sans=body.ip_sans, ttl=body.ttl)


def _issued_document(issued: Any) -> dict[str, Any]:
    document = {
        "id": issued.certificate_id,
        "certificate": issued.certificate_pem,
        "issuing_ca": issued.issuing_ca_pem,
        "ca_chain": issued.ca_chain,
        "serial_number": issued.serial_number,
        "not_before": issued.not_before,
        "not_after": issued.not_after,
    }
    if issued.private_key_pem is not None:
        document["private_key"] = issued.private_key_pem
        document["private_key_type"] = issued.private_key_type
    return document
