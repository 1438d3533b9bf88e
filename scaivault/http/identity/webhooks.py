"""The ScaiKey webhook receiver (``POST /v1/identity/webhooks/scaikey``): no bearer token, a signature instead. The
raw delivery is verified before it is read (``scaivault/identity/signatures.py``), then applied once
(``scaivault/identity/webhooks.py``). Without ``SCAIKEY_WEBHOOK_SECRET`` there is no receiver (404)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from scaivault.domain.errors import RouteNotFound
from scaivault.http.keys import ACCESS
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.identity.signatures import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_delivery
from scaivault.identity.webhooks import WEBHOOK_ACTOR, Delivery, WebhookReceiver


class ScaiKeyWebhookApi:
    def __init__(
        self, receiver: WebhookReceiver, secrets: tuple[str, ...], *, clock: Callable[[], float] = time.time
    ) -> None:
        """``secrets``: the current one first, then a previous one during a rotation; none: no receiver."""
        self._receiver = receiver
        self._secrets = secrets
        self._clock = clock

    def add_routes(self, table: RouteTable) -> None:
        table.add("POST", "/v1/identity/webhooks/scaikey", self.receive, action="identity_sync")

    async def receive(self, request: web.Request) -> web.Response:
        if not self._secrets:
            raise RouteNotFound("No ScaiKey webhook receiver is configured (SCAIKEY_WEBHOOK_SECRET)")
        verify_delivery(
            secrets=self._secrets,
            signature_header=request.headers.get(SIGNATURE_HEADER),
            timestamp_header=request.headers.get(TIMESTAMP_HEADER),
            body=await request.read(),
            now=self._clock(),
        )
        access = request[ACCESS]
        access.identity_id, access.identity_type = WEBHOOK_ACTOR, "system"
        delivery = Delivery.parse(await read_json_object(request))
        access.extra.update(event_id=delivery.event_id, event_type=delivery.event_type)
        receipt = await self._receiver.receive(delivery, access)
        answer: dict[str, Any] = {
            "ok": True, "event_id": delivery.event_id, "applied": receipt.applied, "duplicate": receipt.duplicate
        }
        if receipt.ignored is not None:
            answer["ignored"] = receipt.ignored
        return json_response(answer)
