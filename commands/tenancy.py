"""Registering partners and tenants (idempotent), with their keys, in one transaction."""

from __future__ import annotations

from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.domain.errors import InvalidRequest
from scaivault.domain.tenancy import Partner, Tenant, parse_partner_id, parse_tenant_id


class TenancyCommands:
    def __init__(self, runner: UnitOfWorkRunner, keyring: KeyRing) -> None:
        self._runner = runner
        self._keyring = keyring

    async def register_tenant(
        self, partner_id: str, tenant_id: str, *, name: str | None = None, actor: str = "system:cli"
    ) -> bool:
        """Register the partner (if new) and the tenant (if new); True when anything was created."""

        async def work(uow: UnitOfWork) -> bool:
            return await self.register_tenant_in(uow, partner_id, tenant_id, name=name, actor=actor)

        return await self._runner.run(work)

    async def register_tenant_in(
        self, uow: UnitOfWork, partner_id: str, tenant_id: str, *, name: str | None = None, actor: str
    ) -> bool:
        """``register_tenant`` as part of a larger transaction (e.g. a ScaiKey delivery that also mirrors it)."""
        partner_id, tenant_id = parse_partner_id(partner_id), parse_tenant_id(tenant_id)
        created = False
        if await uow.get(Partner.create_id(partner_id)) is None:
            uow.add(Partner(partner_id=partner_id, name=partner_id, at=utcnow(), actor=actor))
            await self._keyring.ensure_partner_key(uow.conn, partner_id)
            created = True
        tenant = await uow.get(Tenant.create_id(tenant_id))
        if tenant is None:
            uow.add(
                Tenant(tenant_id=tenant_id, partner_id=partner_id, name=name or tenant_id, at=utcnow(), actor=actor)
            )
            await self._keyring.ensure_tenant_key(uow.conn, partner_id, tenant_id)
            created = True
        elif tenant.partner_id != partner_id:
            raise InvalidRequest("The tenant belongs to another partner", tenant_id=tenant_id)
        return created
