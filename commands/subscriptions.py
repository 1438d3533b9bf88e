"""Subscription use cases: create, change (paths, events, delivery), delete. One command = one transaction.

Who may do what (docs/subscriptions.md): anyone holding ``subscriptions:write`` creates subscriptions, which are
then its own; the owner, and the tenant's administrators, change and delete them (to anyone else a subscription
answers like a missing one). Push delivery (``webhook``) is for administrators only: pushed events are not filtered
by the owner's policies (there is no caller at delivery time), while polled ones are, at every poll.

A push subscription's signing secret is sealed under a data key of the tenant in the command's transaction
(``scaivault/crypto/signing_secrets.py``); the key of a secret replaced or of a deleted subscription is destroyed
in the same transaction.

Quotas: an identity owns at most ``SCAIVAULT_MAX_SUBSCRIPTIONS_PER_IDENTITY`` subscriptions in a tenant, and a tenant
holds at most ``SCAIVAULT_MAX_SUBSCRIPTIONS_PER_TENANT`` (409 ``quota_exceeded``). Creators in one tenant take turns
on the tenant's quota lock, so two of them never both take the last place.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from commands.actor import Actor
from commands.ports import QuotaLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.signing_secrets import seal_signing_secret
from scaivault.domain.errors import AccessDenied, SubscriptionNotFound
from scaivault.domain.outcomes import Outcome
from scaivault.domain.quotas import Quota
from scaivault.domain.subscriptions import (
    WEBHOOK,
    DeliveryRequest,
    IPNetwork,
    SealedSecret,
    Subscription,
    administers,
    check_delivery,
    same_identity,
    subscription_stream_id,
)
from scaivault.ids import new_id

UNSET: Any = object()  # a PATCH field that was not given


def caller_administers(caller: Caller) -> bool:
    principal = caller.principal
    return administers(principal.roles, principal.tenant_id, caller.tenant_id)


@dataclass(frozen=True)
class SubscriptionChanges:
    """New values; UNSET keeps the current one."""

    paths: Any = UNSET
    events: Any = UNSET
    delivery: Any = UNSET


class SubscriptionCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, counts: QuotaLookup, *, per_identity: Quota,
        per_tenant: Quota, egress_allow: Sequence[IPNetwork] = (), clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``per_identity``, ``per_tenant``: the quotas (SCAIVAULT_MAX_SUBSCRIPTIONS_PER_IDENTITY, _PER_TENANT);
        ``egress_allow``: the networks a push delivery may reach over plain http (SCAIVAULT_EGRESS_ALLOW)."""
        self._runner = runner
        self._keyring = keyring
        self._counts = counts
        self._per_identity = per_identity
        self._per_tenant = per_tenant
        self._egress_allow = tuple(egress_allow)
        self._clock = clock

    async def create(
        self, caller: Caller, *, name: object, paths: object, events: object, filters: object,
        delivery: Mapping[str, Any], actor: Actor, access: AccessRecord | None = None,
    ) -> Subscription:
        tenant_id = caller.require_tenant()
        request = check_delivery(delivery, self._egress_allow)
        self._may_push(caller, request)
        subscription_id = new_id("sub_")

        async def work(uow: UnitOfWork) -> Subscription:
            await uow.lock(f"quota:subscriptions:{tenant_id}")
            sealed = await self._seal(uow, request, tenant_id, subscription_id)
            subscription = Subscription.create(
                subscription_id=subscription_id, tenant_id=tenant_id, partner_id=caller.partner_id or "",
                identity_id=caller.identity_id, name=name, paths=paths, events=events, filters=filters,
                delivery=request, sealed=sealed, at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id,
            )
            # Counted under the lock (a bad request is still told what is wrong with it first); the caller's own
            # quota first: that one it can make room in itself.
            in_tenant, owned = await self._counts.subscriptions(uow.conn, tenant_id, caller.identity_id)
            self._per_identity.check_room_for_one(owned)
            self._per_tenant.check_room_for_one(in_tenant)
            uow.add(subscription)
            record_outcome(access, Outcome.CREATED, subscription_id=subscription_id)
            return subscription

        return await self._runner.run(work, access=access)

    async def change(
        self, caller: Caller, subscription_id: str, changes: SubscriptionChanges, actor: Actor,
        access: AccessRecord | None = None,
    ) -> Subscription:
        async def work(uow: UnitOfWork) -> Subscription:
            subscription = await self._load(uow, caller, subscription_id, access)
            if changes.delivery is UNSET:
                request = DeliveryRequest(
                    subscription.delivery_type, subscription.url, None, subscription.buffer_size
                )
            else:
                request = check_delivery(changes.delivery, self._egress_allow, current=subscription)
                self._may_push(caller, request)
            sealed = await self._seal(uow, request, subscription.tenant_id, subscription_id)
            replaced = subscription.update(
                paths=subscription.paths if changes.paths is UNSET else changes.paths,
                events=subscription.events if changes.events is UNSET else changes.events,
                delivery=request, sealed=sealed, at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id,
            )
            if replaced is not None:
                await self._keyring.destroy_data_keys(uow.conn, [replaced])
            uow.add(subscription)
            return subscription

        return await self._runner.run(work, access=access)

    async def delete(
        self, caller: Caller, subscription_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(uow: UnitOfWork) -> None:
            subscription = await self._load(uow, caller, subscription_id, access)
            key = subscription.delete(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            if key is not None:
                await self._keyring.destroy_data_keys(uow.conn, [key])
            uow.add(subscription)

        await self._runner.run(work, access=access)

    @staticmethod
    def _may_push(caller: Caller, request: DeliveryRequest) -> None:
        if request.type == WEBHOOK and not caller_administers(caller):
            raise AccessDenied(
                "Push (webhook) delivery needs the tenant_admin or partner_admin role; use polling delivery",
                reason="push_requires_admin",
            )

    async def _seal(
        self, uow: UnitOfWork, request: DeliveryRequest, tenant_id: str, subscription_id: str
    ) -> SealedSecret | None:
        if request.secret is None:
            return None
        sealed = await seal_signing_secret(
            self._keyring, uow.conn, request.secret, owner=tenant_id, target_id=subscription_id
        )
        return SealedSecret(sealed.ciphertext, sealed.data_key_id)

    @staticmethod
    async def _load(
        uow: UnitOfWork, caller: Caller, subscription_id: str, access: AccessRecord | None
    ) -> Subscription:
        """The subscription, if the caller owns it or administers its tenant; to anyone else it does not exist."""
        subscription = await uow.get(subscription_stream_id(subscription_id))
        if (
            subscription is None or subscription.deleted or subscription.tenant_id != caller.tenant_id
            or not (same_identity(subscription.identity_id, caller.identity_id) or caller_administers(caller))
        ):
            raise SubscriptionNotFound(subscription_id=subscription_id[:64])
        if access is not None:
            access.extra["subscription_id"] = subscription_id
        return subscription
