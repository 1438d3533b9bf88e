"""DNS provider use cases: create, change (and replace the credentials), delete, verify. One command = one
transaction.

DNS providers belong to a tenant; changing one needs an admin role for it (``tenant_admin`` of it, or a partner
admin), as secret policies do: whoever holds a provider's DNS write access can obtain certificates for its zones.
A provider of another tenant answers exactly like a missing one (``dns_provider_not_found``).

Credentials are checked, then (with ``verify``) tried against the provider BEFORE the transaction, in memory only: a
verification takes seconds and must hold no lock and no connection. They are sealed in the transaction under a new
data key of the tenant; the data key of replaced or deleted credentials is destroyed in the same transaction.

Under the tenant's lock (``dns_providers:<tenant>``) a name must be free and an active provider's zones must not be
another active provider's: the provider ACME uses for a name must be one, whichever process asks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from commands.actor import Actor
from commands.policies import managed_tenant
from commands.ports import DnsProviderLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.dns_credentials import SealedCredentials, open_credentials, seal_credentials
from scaivault.crypto.keyring import KeyRing
from scaivault.domain.dns_providers import (
    DnsProvider,
    check_config,
    check_credentials,
    check_managed_zones,
    check_name,
    check_provider_type,
    credential_fields,
    dns_provider_stream_id,
    zones_of,
)
from scaivault.domain.errors import DnsProviderExists, DnsProviderNotFound, ValidationFailed
from scaivault.domain.outcomes import Outcome
from scaivault.egress import IPNetwork
from scaivault.ids import new_id

UNSET: Any = object()  # a PATCH field that was not given
NAME_KEY = "scaivault_dns_providers_name_key"
# provider_type, credentials, config, managed_zones -> the managed zones found (InvalidConfig otherwise).
Verifier = Callable[[str, Mapping[str, Any], Mapping[str, Any], Sequence[str]], Awaitable[list[str]]]


@dataclass(frozen=True)
class NewDnsProvider:
    name: object
    provider_type: object
    credentials: object
    managed_zones: object
    config: object = None
    description: object = None
    is_active: object = True
    verify: bool = False


@dataclass(frozen=True)
class DnsProviderChanges:
    """New values; UNSET keeps the current one. ``credentials`` replace the stored ones whole. ``verify``: try the
    provider (with the new credentials, config and zones) before anything is stored."""

    name: Any = UNSET
    description: Any = UNSET
    managed_zones: Any = UNSET
    config: Any = UNSET
    credentials: Any = UNSET
    is_active: Any = UNSET
    verify: bool = False




class DnsProviderCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, lookup: DnsProviderLookup, verifier: Verifier, *,
        http_allowed: Sequence[IPNetwork] = (), clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``verifier``: lists the zones with plaintext credentials (``scaivault.dns.factory.verify_provider``, with
        the egress allow list); ``http_allowed``: the networks of SCAIVAULT_EGRESS_ALLOW, the only addresses a
        plain-http URL (PowerDNS ``api_url``, an ``api_base_url``) may name."""
        self._runner = runner
        self._keyring = keyring
        self._lookup = lookup
        self._verifier = verifier
        self._http_allowed = tuple(http_allowed)
        self._clock = clock

    async def create(self, new: NewDnsProvider, actor: Actor, access: AccessRecord | None = None) -> DnsProvider:
        tenant_id = managed_tenant(actor, "DNS providers")
        partner_id = actor.caller.partner_id if actor.caller is not None else None
        provider_type = check_provider_type(new.provider_type)
        name = check_name(new.name)
        credentials = check_credentials(provider_type, new.credentials, self._http_allowed)
        config = check_config(provider_type, new.config, self._http_allowed)
        zones = check_managed_zones(new.managed_zones)
        if new.verify:
            await self._verifier(provider_type, credentials, config, zones)
        provider_id = new_id("dnsp_")

        async def work(uow: UnitOfWork) -> DnsProvider:
            await uow.lock(f"dns_providers:{tenant_id}")
            await self._check_unique(uow.conn, tenant_id, name, zones if new.is_active is True else None, None)
            sealed = await seal_credentials(self._keyring, uow.conn, credentials, owner=tenant_id,
                                            provider_id=provider_id)
            provider = DnsProvider.create(
                provider_id=provider_id, tenant_id=tenant_id, partner_id=partner_id or "", name=name,
                provider_type=provider_type, description=new.description, config=config, managed_zones=zones,
                is_active=new.is_active, credential_fields=credential_fields(credentials),
                credentials_ciphertext=sealed.ciphertext, credentials_key_id=sealed.data_key_id, at=self._clock(),
                actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(provider)
            record_outcome(access, Outcome.CREATED, dns_provider_id=provider_id)
            return provider

        return await self._unique(self._runner.run(work, access=access), name)

    async def change(
        self, provider_id: str, changes: DnsProviderChanges, actor: Actor, access: AccessRecord | None = None
    ) -> DnsProvider:
        tenant_id = managed_tenant(actor, "DNS providers")
        current = await self._current(tenant_id, provider_id)
        provider_type = current.provider_type
        name = current.name if changes.name is UNSET else check_name(changes.name)
        config = current.config if changes.config is UNSET else check_config(
            provider_type, changes.config, self._http_allowed)
        zones = current.managed_zones if changes.managed_zones is UNSET else check_managed_zones(
            changes.managed_zones)
        new_credentials = None if changes.credentials is UNSET else check_credentials(
            provider_type, changes.credentials, self._http_allowed)
        moved = sorted(key for key in set(config) | set(current.config)
                       if key.endswith(("_url", "_endpoint")) and config.get(key) != current.config.get(key))
        if moved and new_credentials is None:
            # Stored credentials go only where they were given for: pointing them at another endpoint (where
            # whoever runs it would receive them) takes giving them again.
            raise ValidationFailed(fields=[{
                "field": "credentials", "message": f"required when {moved[0]} changes",
            }])
        verified_key = None
        if changes.verify:
            credentials = new_credentials
            if credentials is None:
                verified_key = current.credentials_key_id
                credentials = await self._open(current)
            await self._verifier(provider_type, credentials, config, zones)

        async def work(uow: UnitOfWork) -> DnsProvider:
            await uow.lock(f"dns_providers:{tenant_id}")
            provider = await self._load(uow, tenant_id, provider_id, access)
            if verified_key is not None and provider.credentials_key_id != verified_key:
                raise ValidationFailed(fields=[{
                    "field": "verify", "message": "the credentials were replaced meanwhile; verify again",
                }])
            is_active = provider.is_active if changes.is_active is UNSET else changes.is_active
            await self._check_unique(
                uow.conn, tenant_id, name, zones if is_active is True else None, provider_id,
                check_name_taken=name != provider.name,
            )
            at = self._clock()
            provider.update(
                name=name, description=provider.description if changes.description is UNSET else changes.description,
                config=config, managed_zones=zones, is_active=is_active, at=at, actor=actor.identity_id,
                request_id=actor.request_id,
            )
            if new_credentials is not None:
                sealed = await seal_credentials(self._keyring, uow.conn, new_credentials, owner=tenant_id,
                                                provider_id=provider_id)
                replaced = provider.replace_credentials(
                    credential_fields=credential_fields(new_credentials), credentials_ciphertext=sealed.ciphertext,
                    credentials_key_id=sealed.data_key_id, at=at, actor=actor.identity_id,
                    request_id=actor.request_id,
                )
                await self._keyring.destroy_data_keys(uow.conn, [replaced])
            uow.add(provider)
            return provider

        return await self._unique(self._runner.run(work, access=access), name)

    async def delete(self, provider_id: str, actor: Actor, access: AccessRecord | None = None) -> None:
        tenant_id = managed_tenant(actor, "DNS providers")

        async def work(uow: UnitOfWork) -> None:
            provider = await self._load(uow, tenant_id, provider_id, access)
            key = provider.delete(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            # Crypto-shredding: the sealed credentials stay in the log but can never be opened again.
            await self._keyring.destroy_data_keys(uow.conn, [key])
            uow.add(provider)
            record_outcome(access, Outcome.REMOVED)

        await self._runner.run(work, access=access)

    async def verify(self, provider_id: str, actor: Actor, access: AccessRecord | None = None) -> list[str]:
        """Try the stored credentials now: the managed zones found, or ``InvalidConfig``. Nothing is stored."""
        tenant_id = managed_tenant(actor, "DNS providers")
        provider = await self._current(tenant_id, provider_id)
        if access is not None:
            access.extra["dns_provider_id"] = provider_id
        credentials = await self._open(provider)
        return await self._verifier(provider.provider_type, credentials, provider.config, provider.managed_zones)

    # ---- helpers --------------------------------------------------------------------------------------------------

    async def _current(self, tenant_id: str, provider_id: str) -> DnsProvider:
        """The provider as it is now, read outside any transaction (for work done before one)."""
        async with self._runner.pool.acquire() as conn:
            provider = await self._runner.repository.get(conn, dns_provider_stream_id(provider_id))
        if not isinstance(provider, DnsProvider) or provider.deleted or provider.tenant_id != tenant_id:
            raise DnsProviderNotFound(dns_provider_id=provider_id[:64])
        return provider

    async def _open(self, provider: DnsProvider) -> dict[str, Any]:
        async with self._runner.pool.acquire() as conn:
            return await open_credentials(
                self._keyring, conn, SealedCredentials(provider.credentials_ciphertext, provider.credentials_key_id),
                owner=provider.tenant_id, provider_id=provider.provider_id,
            )

    async def _check_unique(
        self, conn: asyncpg.Connection, tenant_id: str, name: str, active_zones: list[str] | None,
        provider_id: str | None, *, check_name_taken: bool = True,
    ) -> None:
        if check_name_taken and await self._lookup.name_taken(conn, tenant_id, name, other_than=provider_id):
            raise DnsProviderExists(name=name)
        if active_zones is None:
            return
        mine = set(zones_of(active_zones))
        for other_id, other_zones in (await self._lookup.active_zones(conn, tenant_id, other_than=provider_id)).items():
            shared = sorted(mine & set(zones_of(other_zones)))
            if shared:
                raise ValidationFailed(
                    "An active DNS provider of the tenant already manages that zone",
                    fields=[{"field": "managed_zones", "message": f"{shared[0]} is managed by {other_id}"}],
                )

    @staticmethod
    async def _unique(running: Awaitable[DnsProvider], name: str) -> DnsProvider:
        try:
            return await running
        except asyncpg.UniqueViolationError as exc:  # the index backs the check made under the lock
            if exc.constraint_name == NAME_KEY:
                raise DnsProviderExists(name=name) from None
            raise

    @staticmethod
    async def _load(uow: UnitOfWork, tenant_id: str, provider_id: str, access: AccessRecord | None) -> DnsProvider:
        provider: DnsProvider | None = await uow.get(dns_provider_stream_id(provider_id))
        if provider is None or provider.deleted or provider.tenant_id != tenant_id:
            raise DnsProviderNotFound(dns_provider_id=provider_id[:64])
        if access is not None:
            access.extra["dns_provider_id"] = provider_id
        return provider
