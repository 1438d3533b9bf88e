"""DNS providers read model (inline: written in the transaction that appends the DnsProvider events)."""

from __future__ import annotations

from typing import Any

import asyncpg

from scaivault.domain.dns_providers import DnsProvider

DNS_PROVIDER_EVENTS = (DnsProvider.Created, DnsProvider.Updated, DnsProvider.CredentialsReplaced, DnsProvider.Deleted)


async def project_dns_provider_event(conn: asyncpg.Connection, domain_event: Any) -> None:
    e = domain_event
    if isinstance(e, DnsProvider.Created):
        await conn.execute(
            """INSERT INTO scaivault_dns_providers (provider_id, stream_id, tenant_id, partner_id, name, provider_type,
                   description, config, managed_zones, is_active, credential_fields, credentials_ciphertext,
                   credentials_key_id, created_at, created_by, updated_at, updated_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $14, $15)""",
            e.provider_id, e.originator_id, e.tenant_id, e.partner_id, e.name, e.provider_type, e.description,
            e.config, e.managed_zones, e.is_active, e.credential_fields, e.credentials_ciphertext,
            e.credentials_key_id, e.at, e.actor,
        )
    elif isinstance(e, DnsProvider.Updated):
        await conn.execute(
            """UPDATE scaivault_dns_providers SET name = $2, description = $3, config = $4, managed_zones = $5,
                   is_active = $6, updated_at = $7, updated_by = $8 WHERE stream_id = $1""",
            e.originator_id, e.name, e.description, e.config, e.managed_zones, e.is_active, e.at, e.actor,
        )
    elif isinstance(e, DnsProvider.CredentialsReplaced):
        await conn.execute(
            """UPDATE scaivault_dns_providers SET credential_fields = $2, credentials_ciphertext = $3,
                   credentials_key_id = $4, updated_at = $5, updated_by = $6 WHERE stream_id = $1""",
            e.originator_id, e.credential_fields, e.credentials_ciphertext, e.credentials_key_id, e.at, e.actor,
        )
    elif isinstance(e, DnsProvider.Deleted):
        await conn.execute("DELETE FROM scaivault_dns_providers WHERE stream_id = $1", e.originator_id)
