"""Which partner each tenant belongs to, cached: asked on every request, changed almost never.

Only positive answers are cached (a tenant never moves between partners), so a tenant registered by another
process is found on its first request."""

from __future__ import annotations

import asyncpg

from projections.tenancy.queries import partner_exists, tenant_partner


class TenantDirectory:
    def __init__(self, pool: asyncpg.Pool, *, max_entries: int = 100_000) -> None:
        self._pool = pool
        self._partners: dict[str, str] = {}
        self._known_partners: set[str] = set()
        self._max_entries = max_entries

    async def partner_of(self, tenant_id: str) -> str | None:
        partner = self._partners.get(tenant_id)
        if partner is None:
            partner = await tenant_partner(self._pool, tenant_id)
            if partner is not None:
                if len(self._partners) >= self._max_entries:
                    self._partners.clear()
                self._partners[tenant_id] = partner
        return partner

    async def partner_exists(self, partner_id: str) -> bool:
        if partner_id not in self._known_partners:
            if not await partner_exists(self._pool, partner_id):
                return False
            if len(self._known_partners) >= self._max_entries:
                self._known_partners.clear()
            self._known_partners.add(partner_id)
        return True
