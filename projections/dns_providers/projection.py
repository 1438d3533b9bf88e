"""The DNS providers read model as a projection, for rebuilds and verification (projections/maintenance/rebuild.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.dns_providers.projector import DNS_PROVIDER_EVENTS, project_dns_provider_event
from projections.runner import Projection


class DnsProvidersProjection(Projection):
    name = "dns_providers"
    topics = frozenset(get_topic(cls) for cls in DNS_PROVIDER_EVENTS)
    tables = ("scaivault_dns_providers",)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_dns_provider_event(conn, domain_event)
