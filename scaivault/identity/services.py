"""The identity mirror's collaborators, built once by the composition root (scaivault/bootstrap.py)."""

from __future__ import annotations

from dataclasses import dataclass

import aiohttp
import asyncpg

from commands.identities import (
    IdentityCommands,
    TenantHook,
    TransactionHook,
    no_tenant_hook,
    no_transaction_hook,
)
from commands.tenancy import TenancyCommands
from commands.unit_of_work import UnitOfWorkRunner
from projections.identity.directory import IdentityDirectory
from projections.identity.lookup import PostgresIdentityLookup
from projections.identity.roles import MirroredRoles
from projections.tenancy.directory import TenantDirectory
from scaivault.config import Settings
from scaivault.identity.scaikey import ScaiKeyClient
from scaivault.identity.sync import IdentitySynchronizer
from scaivault.identity.webhooks import WebhookReceiver


@dataclass
class IdentityServices:
    commands: IdentityCommands
    directory: IdentityDirectory
    synchronizer: IdentitySynchronizer
    webhooks: WebhookReceiver
    webhook_secrets: tuple[str, ...]  # current first; empty: the receiver refuses every delivery

    async def close(self) -> None:
        await self.synchronizer.close()


def build_identity_services(
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    runner: UnitOfWorkRunner,
    tenancy: TenancyCommands,
    tenants: TenantDirectory,
    http_session: aiohttp.ClientSession | None,
    roles: MirroredRoles,
    on_authorization_changed: TenantHook = no_tenant_hook,
    authorization_changed_in_transaction: TransactionHook = no_transaction_hook,
) -> IdentityServices:
    """``roles``: the one mirrored-roles cache (callers' roles, and who the authorizer cuts off), which the identity
    commands tell to forget a tenant they changed."""
    commands = IdentityCommands(
        runner,
        PostgresIdentityLookup(),
        on_authorization_changed=on_authorization_changed,
        authorization_changed_in_transaction=authorization_changed_in_transaction,
        on_roles_changed=roles.forget,
    )
    client = None
    if settings.scaikey_url and http_session is not None:
        client = ScaiKeyClient(
            settings.scaikey_url,
            http_session,
            client_id=settings.scaikey_client_id,
            client_secret=settings.scaikey_client_secret,
        )
    secrets = tuple(s for s in (settings.scaikey_webhook_secret, settings.scaikey_webhook_previous_secret) if s)
    return IdentityServices(
        commands=commands,
        directory=IdentityDirectory(pool),
        synchronizer=IdentitySynchronizer(commands, tenancy, tenants, client),
        webhooks=WebhookReceiver(commands, tenancy, tenants),
        webhook_secrets=secrets,
    )
