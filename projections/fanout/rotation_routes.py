"""The fan-out's memory of rotation policies: which webhooks each policy names (``webhook_ids``, spec
core-concepts/rotation: "the webhooks that receive rotation events"), as of the RotationPolicy events the fan-out has
read, in ``scaivault_fanout_rotation_routes`` (migration 0021).

It is the fan-out's own table, kept in its tracking transaction from the events it reads in log order, so a rotation
event is routed by its policy's ``webhook_ids`` as they were when the event happened, whatever the rotation read
model (inline, always at the head) says now. A rotation event names its policy itself (``rotation_policy_id``); the
policy's stream is found from that id and the secret's tenant (``rotation_policy_stream_id``).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from scaivault.domain.rotation import RotationPolicy, rotation_policy_stream_id

ROUTE_EVENTS: tuple[type, ...] = (RotationPolicy.Created, RotationPolicy.Updated, RotationPolicy.Deleted)
# The public events a policy's webhook_ids receive: the rotation family (docs/rotation.md, "Webhooks of a policy").
ROUTED_PREFIX = "rotation."
POLICY_FIELD = "rotation_policy_id"


def routed_policy(event_type: str, data: dict[str, Any]) -> str | None:
    """The rotation policy whose ``webhook_ids`` receive this public event, if it is one they receive."""
    if not event_type.startswith(ROUTED_PREFIX):
        return None
    policy_id = data.get(POLICY_FIELD)
    return policy_id if isinstance(policy_id, str) else None


class RotationRoutes:
    """The routes a batch touches: loaded once per policy, changed by the batch's policy events, saved at its end."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        # None: no such policy (never seen, or deleted).
        self._known: dict[UUID, tuple[str, ...] | None] = {}
        self._names: dict[UUID, tuple[str | None, str | None]] = {}
        self._changed: set[UUID] = set()

    def apply(self, domain_event: Any) -> None:
        """A RotationPolicy event, in log order."""
        stream_id = domain_event.originator_id
        if isinstance(domain_event, RotationPolicy.Deleted):
            self._known[stream_id] = None
        else:
            self._known[stream_id] = tuple(domain_event.webhook_ids)
            if isinstance(domain_event, RotationPolicy.Created):
                self._names[stream_id] = (domain_event.tenant_id, domain_event.policy_id)
        self._changed.add(stream_id)

    async def webhook_ids(self, tenant_id: str, policy_id: str) -> tuple[str, ...]:
        """The webhooks the tenant's policy names, as of the events read so far (none for an unknown policy)."""
        stream_id = rotation_policy_stream_id(tenant_id, policy_id)
        if stream_id not in self._known:
            found = await self._conn.fetchval(
                "SELECT webhook_ids FROM scaivault_fanout_rotation_routes WHERE stream_id = $1", stream_id
            )
            self._known[stream_id] = None if found is None else tuple(found)
        return self._known[stream_id] or ()

    async def save(self) -> None:
        if not self._changed:
            return
        kept = [s for s in self._changed if self._known[s] is not None]
        dropped = [s for s in self._changed if self._known[s] is None]
        if dropped:
            await self._conn.execute(
                "DELETE FROM scaivault_fanout_rotation_routes WHERE stream_id = ANY($1::uuid[])", dropped
            )
        if kept:
            # webhook_ids go as one comma-joined text each (arrays of arrays cannot be one parameter); an id holds no
            # comma (``wh_[A-Za-z0-9_-]``, scaivault/domain/rotation.py).
            await self._conn.execute(
                """INSERT INTO scaivault_fanout_rotation_routes (stream_id, tenant_id, policy_id, webhook_ids)
                   SELECT s, t, p, coalesce(string_to_array(nullif(w, ''), ','), '{}')
                   FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(s, t, p, w)
                   ON CONFLICT (stream_id) DO UPDATE SET webhook_ids = excluded.webhook_ids,
                       tenant_id = coalesce(excluded.tenant_id, scaivault_fanout_rotation_routes.tenant_id),
                       policy_id = coalesce(excluded.policy_id, scaivault_fanout_rotation_routes.policy_id)""",
                kept,
                [self._names.get(s, (None, None))[0] for s in kept],
                [self._names.get(s, (None, None))[1] for s in kept],
                [",".join(self._known[s] or ()) for s in kept],
            )
        self._changed.clear()
