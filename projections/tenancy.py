"""Partners and tenants read model (inline: written in the transaction that appends the events)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from scaivault.database import Queryable
from scaivault.domain.tenancy import Partner, Tenant


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


async def tenant_partner(conn: Queryable, tenant_id: str) -> str | None:
    return await conn.fetchval("SELECT partner_id FROM scaivault_tenants WHERE tenant_id = $1", tenant_id)


async def partner_exists(conn: Queryable, partner_id: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM scaivault_partners WHERE partner_id = $1", partner_id))


class TenancyReadModel:
    """The tenancy lookups commands ask for (``commands.ports.TenancyLookup``), read in their transaction."""

    async def partner_of(self, conn: asyncpg.Connection, tenant_id: str) -> str | None:
        return await tenant_partner(conn, tenant_id)

    async def partner_exists(self, conn: asyncpg.Connection, partner_id: str) -> bool:
        return await partner_exists(conn, partner_id)


class TenancyProjection(Projection):
    name = "tenancy"
    topics = frozenset({get_topic(Partner.Registered), get_topic(Tenant.Registered)})
    tables = ("scaivault_partners", "scaivault_tenants")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_tenancy(conn, domain_event)
