"""Applying ScaiKey's webhook deliveries to the mirror, once each.

A delivery (already verified: scaivault/identity/signatures.py) is a JSON object ``{"event_id", "event_type",
"data": {...}}``. Event types:

- ``partner.created|updated`` (data: a partner), ``tenant.created|updated`` (data: a tenant with ``partner_id``);
- ``user.created|updated`` (data: a user with ``tenant_id``; its ``groups``, when present, set its memberships),
  ``user.deleted`` (``tenant_id``, ``id``);
- ``group.created|updated`` (data: a group with ``tenant_id``), ``group.deleted``;
- ``group.member_added|member_removed`` (``tenant_id``, ``group_id``, ``user_id``).

Each ``event_id`` is applied at most once: it is claimed (``scaivault_identity_webhook_deliveries``) in the
transaction that applies it, so the claim and the changes commit together or not at all (a failure, or a crash,
leaves no claim: ScaiKey's retry gets through). A concurrent identical delivery waits on the claim's key and then
finds it taken. A repeat is acknowledged and not applied again, so a captured delivery replayed inside the 5-minute
window cannot undo a later change. Unknown event types, and events about a tenant ScaiVault does not know, are
acknowledged and ignored (the next sync brings them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from commands.actor import Actor
from commands.identities import IdentityCommands, IdentityTransaction
from commands.tenancy import TenancyCommands
from projections.tenancy.directory import TenantDirectory
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.domain.errors import IdentityNotFound, ValidationFailed
from scaivault.domain.identities import (
    ReportedState,
    parse_group_id,
    parse_user_id,
    profile_of_group,
    profile_of_partner,
    profile_of_tenant,
)
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.identity.scaikey import reported_user

WEBHOOK_ACTOR = "system:scaikey"
_EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
# Claims older than this are of deliveries whose timestamps are refused anyway.
CLAIM_RETENTION = timedelta(minutes=30)
# Deliveries about ScaiKey's directory itself; every other type is about one tenant's users or groups.
_DIRECTORY_EVENTS = frozenset({"partner.created", "partner.updated", "tenant.created", "tenant.updated"})


@dataclass(frozen=True)
class Delivery:
    event_id: str
    event_type: str
    data: Mapping[str, Any]

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> Delivery:
        event_id, event_type, data = body.get("event_id"), body.get("event_type"), body.get("data")
        problems = []
        if not isinstance(event_id, str) or not _EVENT_ID.fullmatch(event_id):
            problems.append({"field": "event_id", "message": "1-128 of A-Z, a-z, 0-9, '_', '.', ':', '-'"})
        if not isinstance(event_type, str) or not 0 < len(event_type) <= 64:
            problems.append({"field": "event_type", "message": "a string such as user.updated"})
        if not isinstance(data, Mapping):
            problems.append({"field": "data", "message": "an object"})
        if problems:
            raise ValidationFailed(fields=problems)
        return cls(str(event_id), str(event_type), data)  # type: ignore[arg-type]


async def claim(conn: asyncpg.Connection, event_id: str, now: datetime) -> bool:
    """True the first time an event id is seen (within the retention), in the caller's transaction. Expired claims
    go first; those another delivery is removing right now are left to it (no waiting on each other)."""
    await conn.execute(
        """DELETE FROM scaivault_identity_webhook_deliveries WHERE event_id IN (
               SELECT event_id FROM scaivault_identity_webhook_deliveries WHERE received_at < $1
               FOR UPDATE SKIP LOCKED)""",
        now - CLAIM_RETENTION,
    )
    return bool(await conn.fetchval(
        """INSERT INTO scaivault_identity_webhook_deliveries (event_id, received_at) VALUES ($1, $2)
           ON CONFLICT (event_id) DO NOTHING RETURNING 1""",
        event_id, now,
    ))


@dataclass(frozen=True)
class Receipt:
    """What became of a delivery: applied, a duplicate (applied before), or ignored (and why)."""

    duplicate: bool = False
    ignored: str | None = None

    @property
    def applied(self) -> bool:
        return not self.duplicate and self.ignored is None


DUPLICATE = Receipt(duplicate=True)


class WebhookReceiver:
    def __init__(
        self,
        commands: IdentityCommands,
        tenancy: TenancyCommands,
        tenants: TenantDirectory,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._commands = commands
        self._tenancy = tenancy
        self._tenants = tenants
        self._clock = clock

    async def receive(self, delivery: Delivery, access: AccessRecord | None) -> Receipt:
        """Claim and apply the delivery in one transaction (with the request's access record)."""
        actor = Actor(identity_id=WEBHOOK_ACTOR, request_id=access.request_id if access is not None else None)
        tenant: tuple[str, str | None] | None = None
        if delivery.event_type not in _DIRECTORY_EVENTS:  # about a tenant's users or groups: which tenant
            tenant_id = parse_tenant_id(delivery.data.get("tenant_id"))
            tenant = tenant_id, await self._tenants.partner_of(tenant_id)

        async def work(tx: IdentityTransaction) -> Receipt:
            if not await claim(tx.uow.conn, delivery.event_id, self._clock()):
                return DUPLICATE
            if tenant is None:
                await self._apply_directory(tx, delivery)
                return Receipt()
            tenant_id, partner_id = tenant
            if partner_id is None:
                return Receipt(ignored="unknown tenant")
            if access is not None:  # the delivery goes to that tenant's audit trail
                access.tenant_id, access.partner_id = tenant_id, partner_id
            return Receipt(ignored=await self._apply_in_tenant(tx, tenant_id, delivery))

        return await self._commands.reported(work, actor, access=access)

    async def _apply_directory(self, tx: IdentityTransaction, delivery: Delivery) -> None:
        """A partner or a tenant (which is registered in ScaiVault's tenancy too, in the same transaction)."""
        data = delivery.data
        if delivery.event_type.startswith("partner."):
            await tx.mirror_partner(parse_partner_id(data.get("id")), profile_of_partner(data))
            return
        tenant_id, partner_id = parse_tenant_id(data.get("id")), parse_partner_id(data.get("partner_id"))
        profile = profile_of_tenant(data)
        await self._tenancy.register_tenant_in(tx.uow, partner_id, tenant_id, name=profile["name"], actor=WEBHOOK_ACTOR)
        await tx.apply_report(tenant_id, ReportedState(), complete=False, tenant=(partner_id, profile))

    async def _apply_in_tenant(self, tx: IdentityTransaction, tenant_id: str, delivery: Delivery) -> str | None:
        """Apply a delivery about the tenant's users and groups; return why it was ignored, or None when applied."""
        data, kind = delivery.data, delivery.event_type
        if kind in ("user.created", "user.updated"):
            user_id, user = reported_user(data)
            await tx.apply_report(tenant_id, ReportedState(users={user_id: user}), complete=False)
        elif kind in ("group.created", "group.updated"):
            group_id = parse_group_id(data.get("id"))
            await tx.apply_report(tenant_id, ReportedState(groups={group_id: profile_of_group(data)}), complete=False)
        elif kind == "user.deleted":
            await tx.remove_reported(tenant_id, user_ids=[parse_user_id(data.get("id"))])
        elif kind == "group.deleted":
            await tx.remove_reported(tenant_id, group_ids=[parse_group_id(data.get("id"))])
        elif kind in ("group.member_added", "group.member_removed"):
            group_id = parse_group_id(data.get("group_id"), "group_id")
            user_id = parse_user_id(data.get("user_id"), "user_id")
            try:
                await tx.mirror_membership(tenant_id, group_id, user_id, adding=kind == "group.member_added")
            except IdentityNotFound:  # raised before anything changed: the claim alone commits
                return "unknown user or group"
        else:
            return "unknown event type"
        return None
