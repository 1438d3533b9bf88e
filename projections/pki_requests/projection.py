"""The CSR requests and trust anchors read models as a projection, for rebuilds and verification
(projections/maintenance/)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from eventsourcing.utils import get_topic

from projections.pki_requests.projector import PKI_REQUEST_EVENTS, project_pki_request_event
from projections.runner import Projection


class PkiRequestsProjection(Projection):
    name = "pki_requests"
    topics = frozenset(get_topic(cls) for cls in PKI_REQUEST_EVENTS)
    tables = ("scaivault_pki_csr_requests", "scaivault_pki_trust_anchors")

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        for _, domain_event in events:
            await project_pki_request_event(conn, domain_event)
