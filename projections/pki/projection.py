"""The PKI read models as a projection, for rebuilds and verification (projections/maintenance/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.pki.projector import PKI_EVENTS, project_pki_event
from projections.runner import Projection


class PkiProjection(Projection):
    name = "pki"
    topics = frozenset(get_topic(cls) for cls in PKI_EVENTS)
    tables = (
        "scaivault_pki_cas", "scaivault_pki_ca_counters", "scaivault_pki_roles", "scaivault_pki_certificates",
        "scaivault_pki_crls",
    )

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_pki_event(conn, domain_event)
