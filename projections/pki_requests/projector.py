"""The CSR requests and trust anchors read models (inline: written in the transaction that appends the events).

An approval's row names the certificate signed with it; the certificate itself is in the certificates read model
(projections/pki), written by the same transaction.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.pki_requests import APPROVED, PENDING, REJECTED, CsrRequest, TrustAnchor

CSR_REQUEST_EVENTS = (CsrRequest.Submitted, CsrRequest.Approved, CsrRequest.Rejected)
TRUST_ANCHOR_EVENTS = (TrustAnchor.Added, TrustAnchor.Removed)
PKI_REQUEST_EVENTS = CSR_REQUEST_EVENTS + TRUST_ANCHOR_EVENTS


async def project_pki_request_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, CsrRequest.Submitted):
        await conn.execute(
            """INSERT INTO scaivault_pki_csr_requests (csr_id, stream_id, owner, partner_id, role_name, role_id,
                   status, csr_pem, common_name, alt_names, ip_sans, key_type, key_bits, ttl, note, requested_by,
                   requested_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)""",
            e.csr_id, e.originator_id, e.owner, e.partner_id, e.role_name, e.role_id, PENDING, e.csr_pem,
            e.common_name, e.alt_names, e.ip_sans, e.key_type, e.key_bits, e.ttl, e.note, e.actor, e.at,
        )
    elif isinstance(e, CsrRequest.Approved):
        await conn.execute(
            """UPDATE scaivault_pki_csr_requests SET status = $2, certificate_id = $3, ttl = $4, decided_by = $5,
                   decided_at = $6 WHERE stream_id = $1""",
            e.originator_id, APPROVED, e.certificate_id, e.ttl, e.actor, e.at,
        )
    elif isinstance(e, CsrRequest.Rejected):
        await conn.execute(
            """UPDATE scaivault_pki_csr_requests SET status = $2, rejection_reason = $3, decided_by = $4,
                   decided_at = $5 WHERE stream_id = $1""",
            e.originator_id, REJECTED, e.reason, e.actor, e.at,
        )
    elif isinstance(e, TrustAnchor.Added):
        await conn.execute(
            """INSERT INTO scaivault_pki_trust_anchors (anchor_id, stream_id, owner, partner_id, name, description,
                   certificate_pem, subject, issuer, serial_number, not_before, not_after, fingerprint_sha256,
                   created_at, created_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)""",
            e.anchor_id, e.originator_id, e.owner, e.partner_id, e.name, e.description, e.certificate_pem,
            e.subject, e.issuer, e.serial_number, e.not_before, e.not_after, e.fingerprint_sha256, e.at, e.actor,
        )
    elif isinstance(e, TrustAnchor.Removed):
        await conn.execute("DELETE FROM scaivault_pki_trust_anchors WHERE stream_id = $1", e.originator_id)
