"""``PkiRequestLookup`` (commands/ports.py) over the PKI read models."""

from __future__ import annotations

from uuid import UUID

from scaivault.database import Queryable


class PostgresPkiRequestLookup:
    async def role_id(self, conn: Queryable, owner: str, role_name: str) -> str | None:
        role_id: str | None = await conn.fetchval(
            "SELECT role_id FROM scaivault_pki_roles WHERE owner = $1 AND name = $2", owner, role_name
        )
        return role_id

    async def trust_anchor_stream(self, conn: Queryable, owner: str, anchor_id: str) -> UUID | None:
        stream_id: UUID | None = await conn.fetchval(
            "SELECT stream_id FROM scaivault_pki_trust_anchors WHERE owner = $1 AND anchor_id = $2", owner, anchor_id
        )
        return stream_id

    async def trust_anchor_taken(self, conn: Queryable, owner: str, name: str, fingerprint_sha256: str) -> str | None:
        taken: str | None = await conn.fetchval(
            """SELECT CASE WHEN name = $2 THEN 'name' ELSE 'certificate' END FROM scaivault_pki_trust_anchors
               WHERE owner = $1 AND (name = $2 OR fingerprint_sha256 = $3) ORDER BY name = $2 DESC LIMIT 1""",
            owner, name, fingerprint_sha256,
        )
        return taken
