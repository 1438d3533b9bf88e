"""Applying ScaiKey's webhook deliveries to the mirror, once each.

A delivery (already verified: scaivault/identity/signatures.py) is a JSON object ``{"event_id", "event_type",
"data": {...}}``. Event types:

- ``partner.created|updated`` (data: a partner), ``tenant.created|updated`` (data: a tenant with ``partner_id``);
- ``user.created|updated`` (data: a user with ``tenant_id``; its ``groups``, when present, set its memberships),
  ``user.deleted`` (``tenant_id``, ``id``);
- ``group.created|updated`` (data: a group with ``tenant_id``), ``group.deleted``;
- ``group.member_added|member_removed`` (``tenant_id``, ``group_id``, ``user_id``).

Each ``event_id`` is applied at most once: it is claimed (``scaivault_identity_webhook_deliveries``) before it is
applied and released if applying fails, so ScaiKey's retry can succeed. A repeat is acknowledged and not applied
again, so a captured delivery replayed inside the 5-minute window cannot undo a later change. Unknown event types,
and events about a tenant ScaiVault does not know, are acknowledged and ignored (the next sync brings them).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from commands.identities import IdentityCommands
from commands.secrets import Actor
from commands.tenancy import TenancyCommands
from projections.tenant_directory import TenantDirectory
from scaivault.audit.access_records import AccessRecord
from scaivault.domain.errors import IdentityNotFound, ValidationFailed
from scaivault.domain.identities import (
    SCAIKEY,
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


async def claim(pool: asyncpg.Pool, event_id: str, now: datetime) -> bool:
    """True the first time an event id is seen (within the retention)."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM scaivault_identity_webhook_deliveries WHERE received_at < $1", now - CLAIM_RETENTION
        )
        return bool(await conn.fetchval(
            """INSERT INTO scaivault_identity_webhook_deliveries (event_id, received_at) VALUES ($1, $2)
               ON CONFLICT (event_id) DO NOTHING RETURNING 1""",
            event_id, now,
        ))


async def release(pool: asyncpg.Pool, event_id: str) -> None:
    await pool.execute("DELETE FROM scaivault_identity_webhook_deliveries WHERE event_id = $1", event_id)


class WebhookReceiver:
    def __init__(self, commands: IdentityCommands, tenancy: TenancyCommands, tenants: TenantDirectory) -> None:
        self._commands = commands
        self._tenancy = tenancy
        self._tenants = tenants

    async def apply(self, delivery: Delivery, access: AccessRecord | None) -> str | None:
        """Apply the delivery; return why it was ignored, or None when applied."""
        data, kind = delivery.data, delivery.event_type
        actor = Actor(identity_id=WEBHOOK_ACTOR, request_id=access.request_id if access is not None else None)
        if kind in ("partner.created", "partner.updated"):
            await self._commands.mirror_partner(parse_partner_id(data.get("id")), profile_of_partner(data), actor)
            return None
        if kind in ("tenant.created", "tenant.updated"):
            tenant_id, partner_id = parse_tenant_id(data.get("id")), parse_partner_id(data.get("partner_id"))
            profile = profile_of_tenant(data)
            await self._tenancy.register_tenant(partner_id, tenant_id, name=profile["name"], actor=WEBHOOK_ACTOR)
            await self._commands.apply_report(
                tenant_id, ReportedState(), actor, complete=False, tenant=(partner_id, profile)
            )
            return None
        tenant_id = parse_tenant_id(data.get("tenant_id"))
        partner_id = await self._tenants.partner_of(tenant_id)
        if partner_id is None:
            return "unknown tenant"
        if access is not None:  # the delivery goes to that tenant's audit trail
            access.tenant_id, access.partner_id = tenant_id, partner_id
        if kind in ("user.created", "user.updated"):
            user_id, user = reported_user(data)
            await self._commands.apply_report(tenant_id, ReportedState(users={user_id: user}), actor, complete=False)
        elif kind in ("group.created", "group.updated"):
            group_id = parse_group_id(data.get("id"))
            reported = ReportedState(groups={group_id: profile_of_group(data)})
            await self._commands.apply_report(tenant_id, reported, actor, complete=False)
        elif kind == "user.deleted":
            await self._commands.remove_reported(tenant_id, actor, user_ids=[parse_user_id(data.get("id"))])
        elif kind == "group.deleted":
            await self._commands.remove_reported(tenant_id, actor, group_ids=[parse_group_id(data.get("id"))])
        elif kind in ("group.member_added", "group.member_removed"):
            group_id = parse_group_id(data.get("group_id"), "group_id")
            user_id = parse_user_id(data.get("user_id"), "user_id")
            try:
                await self._commands.change_membership(
                    tenant_id, group_id, user_id, actor, adding=kind == "group.member_added", source=SCAIKEY
                )
            except IdentityNotFound:
                return "unknown user or group"
        else:
            return "unknown event type"
        return None

