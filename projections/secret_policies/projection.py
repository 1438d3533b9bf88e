"""The secret policies read model as a projection, for rebuilds and verification (projections/maintenance/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.secret_policies.projector import SECRET_POLICY_EVENTS, project_secret_policy_event


class SecretPoliciesProjection(Projection):
    name = "secret_policies"
    topics = frozenset(get_topic(cls) for cls in SECRET_POLICY_EVENTS)
    tables = ("scaivault_secret_policies",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_secret_policy_event(conn, domain_event)
