"""Reading the internal PKI: CAs, their certificates and CRLs, roles, issued certificates; and OCSP answers.

A caller sees its tenant's objects; another tenant's answer exactly like missing ones. What relying parties fetch
without a token (a CA's certificate, its CRLs, OCSP) is looked up by the CA's id alone: those are public by nature
(docs/pki.md). Listings page by id (ids sort by creation time), or by expiry when ``expiring_within`` is given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import Field

from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.crypto.ca_keys import CaKeys
from scaivault.crypto.sealed_keys import SealedKey
from scaivault.domain.errors import CaNotFound, CertificateNotFound, RoleNotFound
from scaivault.domain.pki import FULL_CRL, serial_text
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of
from scaivault.pki import revocation
from scaivault.pki.certificates import load_certificate

Row = Mapping[str, Any]
OCSP_VALIDITY = timedelta(hours=1)


class CaListCursor(CursorState):
    v: Literal[1]
    after: str = Field(max_length=64)


class CertificateListCursor(CursorState):
    v: Literal[1]
    ca_id: str | None = Field(default=None, max_length=64)
    include_revoked: bool
    expiring_within: int | None = None
    after: str = Field(max_length=64)
    after_not_after: datetime | None = None


class RoleListCursor(CursorState):
    v: Literal[1]
    after: str = Field(max_length=128)


def ca_document(row: Row, issued: int) -> dict[str, Any]:
    document = {
        "id": row["ca_id"],
        "name": row["name"],
        "common_name": row["common_name"],
        "ca_type": row["ca_type"],
        "parent_ca_id": row["parent_ca_id"],
        "key_type": row["key_type"],
        "key_size": row["key_bits"],
        "serial_number": row["serial_number"],
        "valid_from": row["not_before"],
        "valid_until": row["not_after"],
        "is_active": row["status"] == "active",
        "status": row["status"],
        "certificates_issued": issued,
        "revoked_at": row["revoked_at"],
        "revocation_reason": row["revocation_reason"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
    }
    if row["csr_pem"] is not None and row["status"] == "pending_signature":
        document["csr_pem"] = row["csr_pem"]
    return document


def role_document(row: Row) -> dict[str, Any]:
    return {
        "name": row["name"],
        "ca_id": row["ca_id"],
        **row["settings"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


def certificate_status(row: Row, at: datetime) -> str:
    if row["revoked_at"] is not None:
        return "revoked"
    return "expired" if row["not_after"] <= at else "valid"


def certificate_document(row: Row, at: datetime) -> dict[str, Any]:
    return {
        "id": row["certificate_id"],
        "serial_number": row["serial_number"],
        "ca_id": row["ca_id"],
        "role": row["role_name"],
        "common_name": row["common_name"],
        "alt_names": list(row["dns_names"]),
        "ip_sans": list(row["ip_sans"]),
        "not_before": row["not_before"],
        "not_after": row["not_after"],
        "status": certificate_status(row, at),
        "revoked_at": row["revoked_at"],
        "revocation_reason": row["revocation_reason"],
        "key_type": row["key_type"],
        "key_bits": row["key_bits"],
        "fingerprint_sha256": row["fingerprint_sha256"],
        "source": row["source"],
        "private_key_stored": row["key_data_key_id"] is not None,
        "renewal_of": row["renewal_of"],
        "renewed_by": row["renewed_by"],
        "issued_at": row["issued_at"],
        "issued_by": row["issued_by"],
        "certificate": row["certificate_pem"],
    }


_CA_COLUMNS = """ca_id, name, common_name, ca_type, parent_ca_id, key_type, key_bits, serial_number, not_before,
    not_after, status, revoked_at, revocation_reason, created_at, created_by, csr_pem"""
_ISSUED = "(SELECT coalesce(sum(issued), 0)::bigint FROM scaivault_pki_ca_counters k WHERE k.ca_id = c.ca_id)"
_CERTIFICATE_COLUMNS = """certificate_id, serial_number, ca_id, role_name, common_name, dns_names, ip_sans,
    not_before, not_after, revoked_at, revocation_reason, key_type, key_bits, fingerprint_sha256, source,
    key_data_key_id, renewal_of, renewed_by, issued_at, issued_by, certificate_pem"""


class PkiReader:
    def __init__(self, pool: asyncpg.Pool, ca_keys: CaKeys, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._ca_keys = ca_keys
        self._clock = clock

    # ---- CAs ------------------------------------------------------------------------------------------------------

    async def cas(self, caller: Caller, *, limit: int, cursor: str | None) -> dict[str, Any]:
        state = decode_cursor(cursor, CaListCursor)
        rows = await self._pool.fetch(
            f"""SELECT {_CA_COLUMNS}, {_ISSUED} AS issued FROM scaivault_pki_cas c
                WHERE owner = $1 AND ($2::text IS NULL OR ca_id > $2) ORDER BY ca_id LIMIT $3""",
            caller.require_tenant(), state.after if state else None, limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(CaListCursor(v=1, after=row["ca_id"])))
        return page.document("certificate_authorities", lambda row: ca_document(row, row["issued"]))

    async def ca(self, caller: Caller, ca_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {_CA_COLUMNS}, {_ISSUED} AS issued FROM scaivault_pki_cas c WHERE owner = $1 AND ca_id = $2",
            caller.require_tenant(), ca_id,
        )
        if row is None:
            raise CaNotFound(ca_id=ca_id[:64])
        return ca_document(row, row["issued"])

    async def ca_certificate(self, ca_id: str) -> dict[str, Any]:
        """The CA's certificate and the chain above it (public: relying parties fetch it without a token)."""
        row = await self._pool.fetchrow(
            "SELECT ca_id, certificate_pem, chain_pems, status FROM scaivault_pki_cas WHERE ca_id = $1", ca_id
        )
        if row is None or row["certificate_pem"] is None:
            raise CaNotFound(ca_id=ca_id[:64])
        return {"ca_id": ca_id, "certificate_pem": row["certificate_pem"], "ca_chain": row["chain_pems"],
                "status": row["status"]}

    async def crl(self, ca_id: str, partition: str = FULL_CRL) -> dict[str, Any]:
        """A published CRL (DER and its dates). A partition that never had a revocation has no CRL of its own: the
        complete CRL answers for it, which RFC 5280 lets a relying party use for any of the CA's certificates."""
        row = await self._pool.fetchrow(
            """SELECT crl_number, this_update, next_update, entries, der FROM scaivault_pki_crls
               WHERE ca_id = $1 AND partition = ANY($2::text[]) ORDER BY partition DESC LIMIT 1""",
            ca_id, list({partition, FULL_CRL}),
        )
        if row is None:
            raise CaNotFound(ca_id=ca_id[:64])
        return {"crl_number": row["crl_number"], "this_update": row["this_update"],
                "next_update": row["next_update"], "entries": row["entries"], "der": bytes(row["der"])}

    # ---- roles ----------------------------------------------------------------------------------------------------

    async def roles(self, caller: Caller, *, limit: int, cursor: str | None) -> dict[str, Any]:
        state = decode_cursor(cursor, RoleListCursor)
        rows = await self._pool.fetch(
            """SELECT * FROM scaivault_pki_roles WHERE owner = $1 AND ($2::text IS NULL OR name > $2)
               ORDER BY name LIMIT $3""",
            caller.require_tenant(), state.after if state else None, limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(RoleListCursor(v=1, after=row["name"])))
        return page.document("roles", role_document)

    async def role(self, caller: Caller, name: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            "SELECT * FROM scaivault_pki_roles WHERE owner = $1 AND name = $2", caller.require_tenant(), name
        )
        if row is None:
            raise RoleNotFound(role=name[:128])
        return role_document(row)

    # ---- certificates ---------------------------------------------------------------------------------------------

    async def certificates(
        self, caller: Caller, *, ca_id: str | None, expiring_within: timedelta | None, include_revoked: bool,
        limit: int, cursor: str | None,
    ) -> dict[str, Any]:
        within = int(expiring_within.total_seconds()) if expiring_within is not None else None
        state = decode_cursor(cursor, CertificateListCursor, expected={
            "ca_id": ca_id, "include_revoked": include_revoked, "expiring_within": within,
        })
        at = self._clock()
        tenant_id = caller.require_tenant()
        if expiring_within is None:
            rows = await self._pool.fetch(
                f"""SELECT {_CERTIFICATE_COLUMNS} FROM scaivault_pki_certificates
                    WHERE owner = $1 AND ($2::text IS NULL OR ca_id = $2) AND ($3 OR revoked_at IS NULL)
                      AND ($4::text IS NULL OR certificate_id > $4)
                    ORDER BY certificate_id LIMIT $5""",
                tenant_id, ca_id, include_revoked, state.after if state else None, limit + 1,
            )
        else:  # the soonest to expire first, from now to now + within (live ones: revoked ones do not expire)
            rows = await self._pool.fetch(
                f"""SELECT {_CERTIFICATE_COLUMNS} FROM scaivault_pki_certificates
                    WHERE owner = $1 AND revoked_at IS NULL AND not_after > $2 AND not_after <= $3
                      AND ($4::text IS NULL OR ca_id = $4)
                      AND ($5::timestamptz IS NULL OR (not_after, certificate_id) > ($5, $6::text))
                    ORDER BY not_after, certificate_id LIMIT $7""",
                tenant_id, at, at + expiring_within, ca_id, state.after_not_after if state else None,
                state.after if state else "", limit + 1,
            )
        page = page_of(rows, limit, lambda row: encode_cursor(CertificateListCursor(
            v=1, ca_id=ca_id, include_revoked=include_revoked, expiring_within=within, after=row["certificate_id"],
            after_not_after=row["not_after"] if within is not None else None,
        )))
        return page.document("certificates", lambda row: certificate_document(row, at))

    async def certificate(self, caller: Caller, certificate_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {_CERTIFICATE_COLUMNS} FROM scaivault_pki_certificates WHERE owner = $1 AND certificate_id = $2",
            caller.require_tenant(), certificate_id,
        )
        if row is None:
            raise CertificateNotFound(certificate_id=certificate_id[:64])
        return certificate_document(row, self._clock())

    # ---- OCSP -----------------------------------------------------------------------------------------------------

    async def ocsp(self, ca_id: str, request_der: bytes) -> bytes:
        """The CA's signed answer about one certificate (RFC 6960), or an OCSP error response. Serials the CA never
        issued are ``unknown``; a revoked CA answers ``revoked`` for everything under it."""
        try:
            query = revocation.parse_ocsp_request(request_der)
        except revocation.InvalidOcspRequest:
            return revocation.ocsp_error_response("malformed_request")
        ca = await self._pool.fetchrow(
            """SELECT ca_id, owner, status, certificate_pem, key_ciphertext, key_data_key_id, revoked_at
               FROM scaivault_pki_cas WHERE ca_id = $1""", ca_id,
        )
        if ca is None or ca["certificate_pem"] is None:
            return revocation.ocsp_error_response("unauthorized")
        issuer = load_certificate(ca["certificate_pem"])
        if not revocation.issuer_matches(query, issuer):
            return revocation.ocsp_error_response("unauthorized")
        row = await self._pool.fetchrow(
            """SELECT certificate_pem, revoked_at, revocation_reason FROM scaivault_pki_certificates
               WHERE ca_id = $1 AND serial_number = $2""",
            ca_id, serial_text(query.serial),
        )
        at = self._clock().replace(microsecond=0)
        status, revoked_at, reason = "unknown", None, None
        if row is not None:
            if row["revoked_at"] is not None:
                status, revoked_at, reason = "revoked", row["revoked_at"], row["revocation_reason"]
            else:
                status = "good"
        key = await self._ca_keys.private_key(
            self._pool, ca["owner"], ca_id, SealedKey(bytes(ca["key_ciphertext"]), ca["key_data_key_id"])
        )
        # Signing is CPU (milliseconds with an RSA-4096 CA key) that anonymous callers ask for: off the event loop.
        return await asyncio.to_thread(
            revocation.build_ocsp_response, query, issuer, key, status=status, revoked_at=revoked_at, reason=reason,
            this_update=at, next_update=at + OCSP_VALIDITY,
            certificate=load_certificate(row["certificate_pem"]) if row is not None else None,
        )
