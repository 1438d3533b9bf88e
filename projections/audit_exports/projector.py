"""The audit exports read model (inline: written in the transaction that appends the AuditExport events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.audit_exports import AuditExport

AUDIT_EXPORT_EVENTS = (AuditExport.Requested, AuditExport.Started, AuditExport.Completed, AuditExport.Failed)


async def project_audit_export(conn: asyncpg.Connection, domain_event: Any) -> None:
    if isinstance(domain_event, AuditExport.Requested):
        e = domain_event
        await conn.execute(
            """INSERT INTO scaivault_audit_exports (export_id, stream_id, tenant_id, partner_id, status, format,
                   range_from, range_to, filters, destination, estimated_records, created_at, created_by,
                   request_id, updated_at)
               VALUES ($1, $2, $3, $4, 'pending', $5, $6, $7, $8, $9, $10, $11, $12, $13, $11)""",
            e.export_id,
            e.originator_id,
            e.tenant_id,
            e.partner_id,
            e.format,
            e.since,
            e.until,
            e.filters,
            e.destination,
            e.estimated_records,
            e.at,
            e.actor,
            e.request_id,
        )
    elif isinstance(domain_event, AuditExport.Started):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'running', attempts = $2, started_at = $3, updated_at = $3
               WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.attempt,
            domain_event.at,
        )
    elif isinstance(domain_event, AuditExport.Completed):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'completed', manifest = $2, completed_at = $3,
                   updated_at = $3 WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.manifest,
            domain_event.at,
        )
    elif isinstance(domain_event, AuditExport.Failed):
        await conn.execute(
            """UPDATE scaivault_audit_exports SET status = 'failed', error = $2, failed_at = $3, updated_at = $3
               WHERE stream_id = $1""",
            domain_event.originator_id,
            domain_event.error,
            domain_event.at,
        )
