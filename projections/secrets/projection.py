"""The secrets read model as a projection: the inline projector, plus last-access times from AccessRecorded
events, as a rebuild replays them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.secrets.projector import SECRET_EVENTS, project_secret_event
from scaivault.audit.access_records import touch_last_access
from scaivault.domain.access import AccessRecorded


class SecretsProjection(Projection):
    name = "secrets"
    topics = frozenset({get_topic(cls) for cls in SECRET_EVENTS} | {get_topic(AccessRecorded)})
    tables = ("scaivault_secret_streams", "scaivault_secrets", "scaivault_secret_versions", "scaivault_secret_last_access")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        accesses = []
        for _, domain_event in events:
            if isinstance(domain_event, AccessRecorded):
                accesses.append(domain_event)
            else:
                await project_secret_event(conn, domain_event)
        await touch_last_access(conn, accesses)
