"""``PkiLookup`` (commands/ports.py) over the PKI read models."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from scaivault.database import Queryable


class PostgresPkiLookup:
    async def ca(self, conn: Queryable, owner: str, ca_id: str) -> Mapping[str, Any] | None:
        return await conn.fetchrow(
            """SELECT ca_id, stream_id, status, not_after, key_type, key_bits, certificate_pem, chain_pems,
                   key_ciphertext, key_data_key_id FROM scaivault_pki_cas WHERE owner = $1 AND ca_id = $2""",
            owner, ca_id,
        )

    async def ca_name_taken(self, conn: Queryable, owner: str, name: str) -> bool:
        return bool(await conn.fetchval(
            "SELECT 1 FROM scaivault_pki_cas WHERE owner = $1 AND name = $2", owner, name
        ))

    async def role(self, conn: Queryable, owner: str, name: str) -> Mapping[str, Any] | None:
        return await conn.fetchrow(
            """SELECT role_id, stream_id, ca_id, settings, updated_at FROM scaivault_pki_roles
               WHERE owner = $1 AND name = $2""",
            owner, name,
        )

    async def certificate_stream(self, conn: Queryable, owner: str, certificate_id: str) -> UUID | None:
        stream_id: UUID | None = await conn.fetchval(
            "SELECT stream_id FROM scaivault_pki_certificates WHERE owner = $1 AND certificate_id = $2",
            owner, certificate_id,
        )
        return stream_id

    async def revoked_entries(
        self, conn: Queryable, ca_id: str, partition: str | None, at: datetime
    ) -> list[tuple[str, datetime, str]]:
        """The complete CRL (``partition`` None) lists revoked intermediates the CA signed too."""
        rows = await conn.fetch(
            """SELECT serial_number, revoked_at, revocation_reason FROM scaivault_pki_certificates
               WHERE ca_id = $1 AND revoked_at IS NOT NULL AND not_after > $3
                 AND ($2::text IS NULL OR crl_partition = $2)
               UNION ALL
               SELECT serial_number, revoked_at, 'ca_compromise' FROM scaivault_pki_cas
               WHERE $2::text IS NULL AND parent_ca_id = $1 AND status = 'revoked' AND serial_number IS NOT NULL
                 AND not_after > $3""",
            ca_id, partition, at,
        )
        return [(r["serial_number"], r["revoked_at"], r["revocation_reason"]) for r in rows]

    async def published_partitions(self, conn: Queryable, ca_id: str) -> list[str]:
        return [r["partition"] for r in await conn.fetch(
            "SELECT partition FROM scaivault_pki_crls WHERE ca_id = $1 AND partition <> '' ORDER BY partition", ca_id
        )]

    async def child_cas(self, conn: Queryable, ca_id: str) -> list[str]:
        return [r["ca_id"] for r in await conn.fetch(
            "SELECT ca_id FROM scaivault_pki_cas WHERE parent_ca_id = $1 AND status <> 'revoked'", ca_id
        )]

    async def live_certificates(self, conn: Queryable, ca_id: str) -> int:
        count: int = await conn.fetchval(
            "SELECT count(*) FROM scaivault_pki_certificates WHERE ca_id = $1 AND revoked_at IS NULL", ca_id
        )
        return count

    async def due(self, conn: Queryable, at: datetime, limit: int) -> list[tuple[str, UUID]]:
        rows = await conn.fetch(
            """(SELECT DISTINCT 'crl' AS kind, c.stream_id FROM scaivault_pki_crls l
                 JOIN scaivault_pki_cas c USING (ca_id)
                WHERE l.next_update <= $1::timestamptz + (l.next_update - l.this_update) / 3 AND c.status = 'active'
                  AND c.not_after > $1 LIMIT $2)
               UNION ALL
               (SELECT 'renew', stream_id FROM scaivault_pki_certificates WHERE renew_at <= $1 LIMIT $2)
               UNION ALL
               (SELECT 'warn', stream_id FROM scaivault_pki_certificates WHERE warn_at <= $1 LIMIT $2)""",
            at, limit,
        )
        return [(r["kind"], r["stream_id"]) for r in rows]
