"""What ACME DNS-01 calls: ``DnsProviderService.open_for_zone(tenant_id, fqdn)`` finds the tenant's active provider
whose managed zones contain the name (the most specific zone wins), opens its credentials in memory and returns a
client of the port (``DnsRecords``), which the caller closes (``aclose``) when done.

It reads the DNS providers' read model and the keyring; the credentials exist in plaintext only inside the client.
"""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from projections.dns_providers import queries
from scaivault.crypto.dns_credentials import SealedCredentials, open_credentials
from scaivault.crypto.keyring import KeyRing
from scaivault.dns.factory import open_client
from scaivault.dns.port import DnsRecords, fqdn_of
from scaivault.domain.dns_providers import zone_for
from scaivault.domain.errors import DnsProviderNotFound
from scaivault.egress import IPNetwork


class DnsProviderService:
    def __init__(
        self, pool: asyncpg.Pool, keyring: KeyRing, *, allow: Sequence[IPNetwork] = (),
        ambient_aws_credentials: bool = False,
    ) -> None:
        self._pool = pool
        self._keyring = keyring
        self._allow = tuple(allow)
        self._ambient_aws = ambient_aws_credentials

    async def provider_for(self, tenant_id: str, fqdn: str) -> str:
        """The id of the active provider that manages ``fqdn``; ``DnsProviderNotFound`` when none does."""
        async with self._pool.acquire() as conn:
            row = await self._row_for(conn, tenant_id, fqdn)
        return str(row["provider_id"])

    async def open_for_zone(self, tenant_id: str, fqdn: str) -> DnsRecords:
        async with self._pool.acquire() as conn:
            row = await self._row_for(conn, tenant_id, fqdn)
            credentials = await open_credentials(
                self._keyring, conn, SealedCredentials(row["credentials_ciphertext"], row["credentials_key_id"]),
                owner=tenant_id, provider_id=row["provider_id"],
            )
        return open_client(row["provider_type"], credentials, row["config"], allow=self._allow,
                           ambient_aws_credentials=self._ambient_aws)

    @staticmethod
    async def _row_for(conn: asyncpg.Connection, tenant_id: str, fqdn: str) -> asyncpg.Record:
        best: tuple[int, asyncpg.Record] | None = None
        for row in await queries.active_sealed_rows(conn, tenant_id):
            zone = zone_for(row["managed_zones"], fqdn)
            if zone is not None and (best is None or len(zone) > best[0]):
                best = (len(zone), row)
        if best is None:
            raise DnsProviderNotFound(
                "No active DNS provider of the tenant manages that name", name=fqdn_of(fqdn)[:253]
            )
        return best[1]
