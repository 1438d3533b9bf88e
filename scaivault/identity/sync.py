"""Sync runs: copy ScaiKey's directory (all of it, one partner's, or one tenant's) into the mirror.

``start`` confines the run to the actor's reach (``within_reach``), records it (``IdentitySync.Started``) and answers
at once; the work runs as a task of this process: partners first (ScaiKey's view of each), then each tenant in one
transaction (registered in ScaiVault's tenancy if new, then users, groups and memberships reconciled: what ScaiKey no
longer reports is removed from the mirror).
The run ends with ``Completed`` (with its counts) or ``Failed`` (what went wrong; never a credential). Partners and
tenants are never removed by a sync: their secrets and keys live on; ScaiKey's status for them is mirrored.
Identities created through ScaiVault (source ``scaivault``) are not ScaiKey's and a sync leaves them alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from commands.actor import Actor
from commands.identities import IdentityCommands
from commands.tenancy import TenancyCommands
from projections.tenancy.directory import TenantDirectory
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.domain.errors import InvalidRequest, ScaiVaultError, TenantAccessDenied
from scaivault.domain.identities import IdentitySync, profile_of_partner, profile_of_tenant
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.identity.scaikey import ScaiKeyClient, ScaiKeyUnavailable, Skipped, reported_state, skip_reason
from scaivault.tasks import cancel_and_wait

log = logging.getLogger(__name__)

SYNC_ACTOR = "system:identity-sync"


@dataclass(frozen=True)
class SyncScope:
    """Everything (both None), one partner, or one tenant (of ``partner_id``, when known)."""

    partner_id: str | None = None
    tenant_id: str | None = None


class IdentitySynchronizer:
    def __init__(
        self,
        commands: IdentityCommands,
        tenancy: TenancyCommands,
        tenants: TenantDirectory,
        client: ScaiKeyClient | None,
    ) -> None:
        self._commands = commands
        self._tenancy = tenancy
        self._tenants = tenants
        self._client = client
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def configured(self) -> bool:
        return self._client is not None

    async def start(
        self, requested: SyncScope, actor: Actor, *, trigger: str = "manual", access: AccessRecord | None = None
    ) -> IdentitySync:
        """Start a sync of what was ``requested``: for an API caller (``actor.caller``), as much of it as is within
        its reach (``within_reach``); for the server or an operator (no caller), all of it."""
        scope = requested if actor.caller is None else await self.within_reach(actor.caller, requested)
        if self._client is None:
            raise InvalidRequest(
                "No ScaiKey is configured (SCAIKEY_URL): identities are managed through the API and the CLI"
            )
        run = await self._commands.start_sync(
            partner_id=scope.partner_id, tenant_id=scope.tenant_id, trigger=trigger, actor=actor, access=access
        )
        task = asyncio.create_task(self.run(run.sync_id, scope), name=f"identity-sync-{run.sync_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return run

    async def within_reach(self, caller: Caller, requested: SyncScope) -> SyncScope:
        """What the caller may sync: anything (super_admin), its partner or one of its tenants (partner admins), its
        own tenant (anyone else). Naming something outside that is ``tenant_access_denied``; a tenant of another
        partner than the one named, ``invalid_request`` (parameter ``tenant_id``)."""
        partner_id, tenant_id, principal = requested.partner_id, requested.tenant_id, caller.principal
        tenant_partner = await self._tenants.partner_of(tenant_id) if tenant_id is not None else None
        if tenant_id is not None and partner_id is not None and tenant_partner not in (None, partner_id):
            raise InvalidRequest("The tenant does not belong to that partner", parameter="tenant_id")
        if principal.has_role("super_admin"):
            return SyncScope(partner_id=partner_id or tenant_partner, tenant_id=tenant_id)
        own_partner = caller.require_partner()
        if partner_id not in (None, own_partner):
            raise TenantAccessDenied("The partner is not yours", partner_id=partner_id)
        if principal.is_partner_admin:
            if tenant_id is not None and tenant_partner != own_partner:
                raise TenantAccessDenied("The tenant is not one of your partner's tenants", tenant_id=tenant_id)
            return SyncScope(partner_id=own_partner, tenant_id=tenant_id)
        own_tenant = caller.require_tenant()
        if tenant_id not in (None, own_tenant) or (partner_id is not None and tenant_id is None):
            raise TenantAccessDenied("Only partner admins may sync beyond their own tenant", tenant_id=tenant_id)
        return SyncScope(partner_id=own_partner, tenant_id=own_tenant)

    async def wait(self) -> None:
        """Until every sync this process started has finished."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        await cancel_and_wait(list(self._tasks))

    async def run(self, sync_id: str, scope: SyncScope) -> dict[str, Any]:
        """Do the sync and record its outcome; return its stats."""
        counts: Counter[str] = Counter()
        skipped = Skipped()
        error: str | None = None
        try:
            await self._sync(sync_id, scope, counts, skipped)
        except ScaiKeyUnavailable as exc:
            error = str(exc)
        except ScaiVaultError as exc:
            error = exc.message
        except asyncio.CancelledError:
            await asyncio.shield(self._finish(sync_id, counts, skipped, "The server stopped during the sync"))
            raise
        except Exception as exc:  # recorded as failed; the traceback stays in our log
            log.exception("identity sync failed", extra={"sync_id": sync_id})
            error = f"Internal error ({type(exc).__name__})"
        return await self._finish(sync_id, counts, skipped, error)

    async def _finish(self, sync_id: str, counts: Counter[str], skipped: Skipped, error: str | None) -> dict[str, Any]:
        stats: dict[str, Any] = {**dict(sorted(counts.items())), "skipped": skipped.count}
        if skipped.listed:
            stats["skipped_records"] = skipped.listed
        await self._commands.finish_sync(sync_id, stats=stats, error=error)
        return stats

    async def _sync(self, sync_id: str, scope: SyncScope, counts: Counter[str], skipped: Skipped) -> None:
        assert self._client is not None
        actor = Actor(identity_id=SYNC_ACTOR, request_id=None)
        tenants = await self._client.tenants(scope.partner_id)
        if scope.tenant_id is not None:
            tenants = [t for t in tenants if isinstance(t, Mapping) and t.get("id") == scope.tenant_id]
            if not tenants:
                raise ScaiKeyUnavailable(f"ScaiKey does not report the tenant {scope.tenant_id}")
        partners_wanted = None if scope.partner_id is None and scope.tenant_id is None else {
            t.get("partner_id") for t in tenants if isinstance(t, Mapping)
        } | ({scope.partner_id} if scope.partner_id else set())
        for raw in await self._client.partners():
            if not isinstance(raw, Mapping) or (partners_wanted is not None and raw.get("id") not in partners_wanted):
                continue
            try:
                partner_id, profile = parse_partner_id(raw.get("id")), profile_of_partner(raw)
            except ScaiVaultError as exc:
                skipped.add("partner", raw.get("id"), skip_reason(exc))
                continue
            await self._commands.mirror_partner(partner_id, profile, actor, sync_id=sync_id)
            counts["partners"] += 1
        for raw in tenants:
            if not isinstance(raw, Mapping):
                skipped.add("tenant", "?", "not a JSON object")
                continue
            try:
                tenant_id, partner_id = parse_tenant_id(raw.get("id")), parse_partner_id(raw.get("partner_id"))
                profile = profile_of_tenant(raw)
                # Registered in ScaiVault's tenancy (keys and all) so that its users can use ScaiVault at once.
                await self._tenancy.register_tenant(partner_id, tenant_id, name=profile["name"], actor=SYNC_ACTOR)
            except ScaiVaultError as exc:
                skipped.add("tenant", raw.get("id"), skip_reason(exc))
                continue
            users, groups = await self._client.users(tenant_id), await self._client.groups(tenant_id)
            reported = reported_state(users, groups, skipped)
            counts.update(
                await self._commands.apply_report(
                    tenant_id, reported, actor, complete=True, tenant=(partner_id, profile), sync_id=sync_id
                )
            )
            counts["tenants"] += 1
