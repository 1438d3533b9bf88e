"""Webhook use cases: create, change (and rotate the signing secret), delete, and housekeeping's forgetting of
previous signing secrets whose overlap ended. One command = one transaction.

Webhooks belong to a tenant; the edge requires the ``admin`` scope. A webhook of another tenant answers exactly like
a missing one (``webhook_not_found``). Signing secrets are sealed here, in the command's transaction, under a new
data key of the tenant; the data keys of secrets no longer kept are destroyed in the same transaction. A tenant
holds at most ``SCAIVAULT_MAX_WEBHOOKS_PER_TENANT`` webhooks (409 ``quota_exceeded``): creators of one tenant take
turns on the quota's lock, so two of them never both take the last place.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from commands.actor import Actor
from commands.ports import QuotaLookup, WebhookLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.signing_secrets import (
    CURRENT,
    PREVIOUS,
    SealedSigningSecret,
    open_signing_secret,
    seal_signing_secret,
)
from scaivault.domain.errors import ValidationFailed, WebhookNotFound
from scaivault.domain.outcomes import Outcome
from scaivault.domain.quotas import Quota
from scaivault.domain.webhooks import Webhook, check_secret, webhook_stream_id
from scaivault.egress import IPNetwork
from scaivault.ids import new_id

UNSET: Any = object()  # a PATCH field that was not given
# How long a replaced signing secret stays valid for receivers when the rotation does not say (the spec's example).
DEFAULT_PREVIOUS_SECRET_TTL = timedelta(hours=24)
HOUSEKEEPING_ACTOR = "system:housekeeping"


@dataclass(frozen=True)
class WebhookChanges:
    """New values; UNSET keeps the current one. ``secret``: rotate to it; the replaced one stays valid for
    ``previous_secret_ttl`` (default 24 h); ``previous_secret``: the secret to keep as the previous one instead of
    the current (when the receiver was already given another)."""

    name: Any = UNSET
    url: Any = UNSET
    events: Any = UNSET
    filters: Any = UNSET
    enabled: Any = UNSET
    secret: Any = UNSET
    previous_secret: Any = UNSET
    previous_secret_ttl: timedelta | None = None

    @property
    def rotates(self) -> bool:
        return self.secret is not UNSET

    @property
    def updates(self) -> bool:
        return any(v is not UNSET for v in (self.name, self.url, self.events, self.filters, self.enabled))


class WebhookCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, lookup: WebhookLookup, counts: QuotaLookup, *,
        per_tenant: Quota, http_allowed: Sequence[IPNetwork] = (), clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``per_tenant``: the quota of webhooks per tenant (SCAIVAULT_MAX_WEBHOOKS_PER_TENANT); ``http_allowed``: the
        networks of SCAIVAULT_EGRESS_ALLOW, the only addresses a plain-http URL may name."""
        self._runner = runner
        self._keyring = keyring
        self._lookup = lookup
        self._counts = counts
        self._per_tenant = per_tenant
        self._http_allowed = tuple(http_allowed)
        self._clock = clock

    async def create(
        self, *, tenant_id: str, partner_id: str, name: object, url: object, events: object, filters: object,
        enabled: object, secret: object, actor: Actor, access: AccessRecord | None = None,
    ) -> Webhook:
        webhook_id = new_id("wh_")
        plain = check_secret(secret)

        async def work(uow: UnitOfWork) -> Webhook:
            await uow.lock(f"quota:webhooks:{tenant_id}")
            sealed = await seal_signing_secret(self._keyring, uow.conn, plain, owner=tenant_id, target_id=webhook_id)
            webhook = Webhook.create(
                webhook_id=webhook_id, tenant_id=tenant_id, partner_id=partner_id, name=name, url=url, events=events,
                filters=filters, enabled=enabled, secret_ciphertext=sealed.ciphertext,
                secret_key_id=sealed.data_key_id, at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id, http_allowed=self._http_allowed,
            )
            # Counted under the lock (a bad request is still told what is wrong with it first).
            self._per_tenant.check_room_for_one(await self._counts.webhooks(uow.conn, tenant_id))
            uow.add(webhook)
            record_outcome(access, Outcome.CREATED, webhook_id=webhook_id)
            return webhook

        return await self._runner.run(work, access=access)

    async def change(
        self, tenant_id: str, webhook_id: str, changes: WebhookChanges, actor: Actor,
        access: AccessRecord | None = None,
    ) -> Webhook:
        new_secret = check_secret(changes.secret) if changes.rotates else None
        given_previous = (
            None if changes.previous_secret is UNSET else check_secret(changes.previous_secret, "previous_secret")
        )
        if not changes.rotates and (given_previous is not None or changes.previous_secret_ttl is not None):
            field = "previous_secret" if given_previous is not None else "previous_secret_ttl"
            raise ValidationFailed(fields=[{"field": field, "message": "only with a new secret"}])

        async def work(uow: UnitOfWork) -> Webhook:
            webhook = await self._load(uow, tenant_id, webhook_id, access)
            at = self._clock()
            if changes.updates:
                webhook.update(
                    name=webhook.name if changes.name is UNSET else changes.name,
                    url=webhook.url if changes.url is UNSET else changes.url,
                    events=webhook.events if changes.events is UNSET else changes.events,
                    filters=webhook.filters if changes.filters is UNSET else changes.filters,
                    enabled=webhook.enabled if changes.enabled is UNSET else changes.enabled,
                    at=at, actor=actor.identity_id, request_id=actor.request_id, http_allowed=self._http_allowed,
                )
            if new_secret is not None:
                await self._rotate(uow, webhook, new_secret, given_previous, changes.previous_secret_ttl, at, actor)
            uow.add(webhook)
            return webhook

        return await self._runner.run(work, access=access)

    async def _rotate(
        self, uow: UnitOfWork, webhook: Webhook, new_secret: str, given_previous: str | None,
        ttl: timedelta | None, at: datetime, actor: Actor,
    ) -> None:
        """The current secret moves to the previous slot: opened and sealed again (its associated data names the
        slot), under a new data key; the keys of what is replaced are destroyed."""
        owner, target = webhook.tenant_id, webhook.webhook_id
        previous = given_previous
        if previous is None:
            previous = await open_signing_secret(
                self._keyring, uow.conn, SealedSigningSecret(webhook.secret_ciphertext, webhook.secret_key_id),
                owner=owner, target_id=target,
            )
        sealed_previous = await seal_signing_secret(
            self._keyring, uow.conn, previous, owner=owner, target_id=target, slot=PREVIOUS
        )
        sealed = await seal_signing_secret(self._keyring, uow.conn, new_secret, owner=owner, target_id=target,
                                           slot=CURRENT)
        replaced = webhook.rotate_secret(
            secret_ciphertext=sealed.ciphertext, secret_key_id=sealed.data_key_id,
            previous_secret_ciphertext=sealed_previous.ciphertext, previous_secret_key_id=sealed_previous.data_key_id,
            previous_secret_expires_at=at + (ttl or DEFAULT_PREVIOUS_SECRET_TTL), at=at, actor=actor.identity_id,
            request_id=actor.request_id,
        )
        await self._keyring.destroy_data_keys(uow.conn, replaced)

    async def delete(
        self, tenant_id: str, webhook_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(uow: UnitOfWork) -> None:
            webhook = await self._load(uow, tenant_id, webhook_id, access)
            keys = webhook.delete(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            await self._keyring.destroy_data_keys(uow.conn, keys)
            uow.add(webhook)

        await self._runner.run(work, access=access)

    async def forget_expired_previous_secrets(self, *, limit: int = 500) -> int:
        """Destroy the data keys of previous signing secrets whose overlap has ended, and forget them (a background
        job; safe to run anywhere, in any number of processes): one transaction per webhook, under its stream lock,
        so a rotation or delete of the same webhook takes turns with it. Returns how many were forgotten."""
        async with self._runner.pool.acquire() as conn:
            due = await self._lookup.previous_secrets_expired(conn, self._clock(), limit)
        forgotten = 0
        for stream_id in due:

            async def work(uow: UnitOfWork, stream_id: UUID = stream_id) -> bool:
                webhook: Webhook | None = await uow.get(stream_id)
                if webhook is None or webhook.deleted:
                    return False
                key = webhook.forget_expired_previous_secret(at=self._clock(), actor=HOUSEKEEPING_ACTOR)
                if key is None:  # rotated again meanwhile: a new overlap runs
                    return False
                await self._keyring.destroy_data_keys(uow.conn, [key])
                uow.add(webhook)
                return True

            forgotten += await self._runner.run(work)
        return forgotten

    @staticmethod
    async def _load(uow: UnitOfWork, tenant_id: str, webhook_id: str, access: AccessRecord | None) -> Webhook:
        webhook: Webhook | None = await uow.get(webhook_stream_id(webhook_id))
        if webhook is None or webhook.deleted or webhook.tenant_id != tenant_id:
            raise WebhookNotFound(webhook_id=webhook_id[:64])
        if access is not None:
            access.extra["webhook_id"] = webhook_id
        return webhook
