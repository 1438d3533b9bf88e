"""Partners and tenants read model (inline: written in the transaction that appends the events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.tenancy import Partner, Tenant

TENANCY_EVENTS = (Partner.Registered, Tenant.Registered)


async def project_tenancy(conn: asyncpg.Connection, domain_event: Any) -> None:
    if isinstance(domain_event, Partner.Registered):
        await conn.execute(
            "INSERT INTO scaivault_partners (partner_id, name, created_at) VALUES ($1, $2, $3)"
            " ON CONFLICT (partner_id) DO NOTHING",
            domain_event.partner_id,
            domain_event.name,
            domain_event.at,
        )
    elif isinstance(domain_event, Tenant.Registered):
        await conn.execute(
            "INSERT INTO scaivault_tenants (tenant_id, partner_id, name, created_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (tenant_id) DO NOTHING",
            domain_event.tenant_id,
            domain_event.partner_id,
            domain_event.name,
            domain_event.at,
        )
