"""Reading CSR requests and trust anchors, and the tenant's trust bundle.

A caller sees its tenant's objects; another tenant's answer exactly like missing ones. A caller holding
``pki:admin`` sees every CSR request of the tenant (it reviews them); one holding only ``pki:issue`` sees the
requests it submitted, and anybody else's answers like a missing one. Listings page by id (ids sort by creation
time); a CSR listing's cursor is bound to its ``status`` filter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.errors import CsrNotFound, TrustAnchorNotFound
from scaivault.domain.pki_requests import APPROVED
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]
REVIEWER_SCOPE = "pki:admin"


class CsrListCursor(CursorState):
    v: Literal[1]
    status: str | None = Field(default=None, max_length=16)
    after: str = Field(max_length=64)


class TrustAnchorListCursor(CursorState):
    v: Literal[1]
    after: str = Field(max_length=64)


def csr_document(row: Row) -> dict[str, Any]:
    return {
        "id": row["csr_id"],
        "status": row["status"],
        "role": row["role_name"],
        "common_name": row["common_name"],
        "alt_names": list(row["alt_names"]),
        "ip_sans": list(row["ip_sans"]),
        "key_type": row["key_type"],
        "key_bits": row["key_bits"],
        "ttl": row["ttl"],
        "note": row["note"],
        "requested_by": row["requested_by"],
        "requested_at": row["requested_at"],
        "decided_by": row["decided_by"],
        "decided_at": row["decided_at"],
        "rejection_reason": row["rejection_reason"],
        "certificate_id": row["certificate_id"],
        "csr_pem": row["csr_pem"],
    }


def anchor_status(row: Row, at: datetime) -> str:
    if row["not_after"] <= at:
        return "expired"
    return "not_yet_valid" if row["not_before"] > at else "valid"


def anchor_document(row: Row, at: datetime) -> dict[str, Any]:
    return {
        "id": row["anchor_id"],
        "name": row["name"],
        "description": row["description"],
        "subject": row["subject"],
        "issuer": row["issuer"],
        "serial_number": row["serial_number"],
        "not_before": row["not_before"],
        "not_after": row["not_after"],
        "status": anchor_status(row, at),
        "fingerprint_sha256": row["fingerprint_sha256"],
        "certificate_pem": row["certificate_pem"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
    }


_CSR_COLUMNS = """r.csr_id, r.status, r.role_name, r.common_name, r.alt_names, r.ip_sans, r.key_type, r.key_bits,
    r.ttl, r.note, r.requested_by, r.requested_at, r.decided_by, r.decided_at, r.rejection_reason, r.certificate_id,
    r.csr_pem"""
_ANCHOR_COLUMNS = """anchor_id, name, description, subject, issuer, serial_number, not_before, not_after,
    fingerprint_sha256, certificate_pem, created_at, created_by"""


def _requester_filter(caller: Caller) -> str | None:
    """Whose requests the caller may see: None for a reviewer (everyone's), else its own identity."""
    return None if caller.principal.has_scope(REVIEWER_SCOPE) else caller.identity_id


class PkiRequestReader:
    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._clock = clock

    # ---- CSR requests ---------------------------------------------------------------------------------------------

    async def csr_requests(
        self, caller: Caller, *, status: str | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        state = decode_cursor(cursor, CsrListCursor, expected={"status": status})
        rows = await self._pool.fetch(
            f"""SELECT {_CSR_COLUMNS} FROM scaivault_pki_csr_requests r
                WHERE owner = $1 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR requested_by = $3)
                  AND ($4::text IS NULL OR csr_id > $4)
                ORDER BY csr_id LIMIT $5""",
            caller.require_tenant(), status, _requester_filter(caller), state.after if state else None, limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(CsrListCursor(v=1, status=status, after=row["csr_id"])))
        return page.document("csrs", csr_document)

    async def csr_request(self, caller: Caller, csr_id: str) -> dict[str, Any]:
        """One request; an approved one with its certificate and the chain up to the CA's root."""
        row = await self._pool.fetchrow(
            f"""SELECT {_CSR_COLUMNS}, c.certificate_pem, a.certificate_pem AS ca_pem, a.chain_pems AS ca_chain
                FROM scaivault_pki_csr_requests r
                LEFT JOIN scaivault_pki_certificates c ON c.certificate_id = r.certificate_id
                LEFT JOIN scaivault_pki_cas a ON a.ca_id = c.ca_id
                WHERE r.owner = $1 AND r.csr_id = $2 AND ($3::text IS NULL OR r.requested_by = $3)""",
            caller.require_tenant(), csr_id, _requester_filter(caller),
        )
        if row is None:
            raise CsrNotFound(csr_id=csr_id[:64])
        document = csr_document(row)
        if row["status"] == APPROVED and row["certificate_pem"] is not None:
            document["certificate"] = row["certificate_pem"]
            document["ca_chain"] = [row["ca_pem"], *row["ca_chain"]] if row["ca_pem"] is not None else []
        return document

    # ---- trust anchors --------------------------------------------------------------------------------------------

    async def trust_anchors(self, caller: Caller, *, limit: int, cursor: str | None) -> dict[str, Any]:
        state = decode_cursor(cursor, TrustAnchorListCursor)
        rows = await self._pool.fetch(
            f"""SELECT {_ANCHOR_COLUMNS} FROM scaivault_pki_trust_anchors
                WHERE owner = $1 AND ($2::text IS NULL OR anchor_id > $2) ORDER BY anchor_id LIMIT $3""",
            caller.require_tenant(), state.after if state else None, limit + 1,
        )
        at = self._clock()
        page = page_of(rows, limit, lambda row: encode_cursor(TrustAnchorListCursor(v=1, after=row["anchor_id"])))
        return page.document("trust_anchors", lambda row: anchor_document(row, at))

    async def trust_anchor(self, caller: Caller, anchor_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {_ANCHOR_COLUMNS} FROM scaivault_pki_trust_anchors WHERE owner = $1 AND anchor_id = $2",
            caller.require_tenant(), anchor_id,
        )
        if row is None:
            raise TrustAnchorNotFound(trust_anchor_id=anchor_id[:64])
        return anchor_document(row, self._clock())

    async def trust_bundle(self, caller: Caller, *, include_internal: bool, include_expired: bool) -> str:
        """The PEM bundle of the tenant's trust anchors in the order they were added (without the expired ones
        unless ``include_expired``), then, with ``include_internal``, its internal root CAs that can sign now
        (active, unexpired: a revoked root is exactly what must no longer be trusted)."""
        tenant_id = caller.require_tenant()
        at = self._clock()
        rows = await self._pool.fetch(
            """SELECT certificate_pem FROM (
                   SELECT 0 AS part, anchor_id AS id, certificate_pem FROM scaivault_pki_trust_anchors
                   WHERE owner = $1 AND ($2 OR not_after > $3)
                   UNION ALL
                   SELECT 1, ca_id, certificate_pem FROM scaivault_pki_cas
                   WHERE $4 AND owner = $1 AND ca_type = 'root' AND status = 'active' AND certificate_pem IS NOT NULL
                     AND not_after > $3
               ) bundle ORDER BY part, id""",
            tenant_id, include_expired, at, include_internal,
        )
        return "".join(row["certificate_pem"].rstrip("\n") + "\n" for row in rows)
