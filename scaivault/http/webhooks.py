"""/v1/webhooks: webhooks, their test sends and deliveries (spec reference/webhooks, advanced/webhook-signatures).
Decisions where the spec is silent: docs/webhooks.md.

Every endpoint needs the ``admin`` scope and acts in the caller's tenant (or ``/v1/t/{tenant_id}/`` for partner
admins). Changes go to the commands, reads to the reader, test sends and redeliveries to the sending side; no
answer ever holds a signing secret.
"""

from __future__ import annotations

from typing import Any, Literal

from aiohttp import web
from pydantic import StrictBool

from commands.webhooks import WebhookChanges, WebhookCommands
from projections.webhooks.reader import DeliveryStatus, WebhookReader
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import DeliveryNotFound, WebhookNotFound
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS, REQUEST_ID
from scaivault.http.path_ids import path_id
from scaivault.http.query import Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null
from scaivault.webhooks.service import WebhookDeliveries

BASES = ("/v1/webhooks", "/v1/t/{tenant_id}/webhooks")
SCOPE = "admin"
DEFAULT_LIMIT = 100
_PATCHABLE = ("name", "url", "events", "filters", "enabled", "secret", "previous_secret")


class WebhookListQuery(QueryModel):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class DeliveryListQuery(QueryModel):
    status: Literal["pending", "success", "failed"] | None = None
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


# Shapes here (422 validation_error); the rules (URL, event types, filters, secret length) in the domain.
class WebhookIn(Strict):
    name: str
    url: str
    secret: str
    events: list[str]
    filters: dict[str, Any] | None = None
    enabled: StrictBool = True


class WebhookPatchIn(Strict):
    name: str | None = None
    url: str | None = None
    events: list[str] | None = None
    filters: dict[str, Any] | None = None  # null removes every filter
    enabled: StrictBool | None = None
    secret: str | None = None
    previous_secret: str | None = None
    previous_secret_ttl: str | None = None

    _not_null = refuse_null("name", "url", "events", "enabled", "secret", "previous_secret", "previous_secret_ttl",
                            message="may not be null (only filters may be cleared)")

    def changes(self) -> WebhookChanges:
        given = self.model_fields_set
        ttl = None
        if self.previous_secret_ttl is not None:
            ttl = parse_duration(self.previous_secret_ttl)
        return WebhookChanges(
            **{name: getattr(self, name) for name in _PATCHABLE if name in given},
            previous_secret_ttl=ttl,
        )


def _id(request: web.Request, name: str, error: type[WebhookNotFound] | type[DeliveryNotFound]) -> str:
    return path_id(request, name, error, max_length=64)


class WebhooksApi:
    def __init__(
        self, callers: Callers, commands: WebhookCommands, reader: WebhookReader, deliveries: WebhookDeliveries
    ) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader
        self._deliveries = deliveries

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            one = base + "/{webhook_id}"
            table.add("GET", base, self.list_webhooks, action="webhook_read")
            table.add("POST", base, self.create_webhook, action="webhook_create")
            table.add("GET", one, self.get_webhook, action="webhook_read")
            table.add("PATCH", one, self.patch_webhook, action="webhook_update")
            table.add("DELETE", one, self.delete_webhook, action="webhook_delete")
            table.add("POST", one + "/test", self.test_webhook, action="webhook_test")
            table.add("GET", one + "/deliveries", self.list_deliveries, action="webhook_read")
            table.add("POST", one + "/deliveries/{delivery_id}/redeliver", self.redeliver,
                      action="webhook_redeliver")

    async def list_webhooks(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._callers.in_tenant(request, SCOPE)
        query = parse_query(WebhookListQuery, request)
        return json_response(await self._reader.webhooks(tenant_id, limit=query.limit, cursor=query.cursor))

    async def get_webhook(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._callers.in_tenant(request, SCOPE)
        return json_response(await self._reader.webhook(tenant_id, _id(request, "webhook_id", WebhookNotFound)))

    async def list_deliveries(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._callers.in_tenant(request, SCOPE)
        webhook_id = _id(request, "webhook_id", WebhookNotFound)
        query = parse_query(DeliveryListQuery, request)
        status: DeliveryStatus | None = query.status
        return json_response(await self._reader.deliveries(
            tenant_id, webhook_id, status=status, limit=query.limit, cursor=query.cursor
        ))

    async def create_webhook(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, SCOPE)
        body = parse_body(WebhookIn, await read_json_object(request))
        webhook = await self._commands.create(
            tenant_id=tenant_id, partner_id=who.partner_id or "", name=body.name, url=body.url, events=body.events,
            filters=body.filters, enabled=body.enabled, secret=body.secret, actor=actor_of(request, who),
            access=request[ACCESS],
        )
        document = await self._reader.webhook(tenant_id, webhook.webhook_id)
        return committed_response(request, document, headers={"Location": f"/v1/webhooks/{webhook.webhook_id}"})

    async def patch_webhook(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, SCOPE)
        webhook_id = _id(request, "webhook_id", WebhookNotFound)
        body = parse_body(WebhookPatchIn, await read_json_object(request))
        await self._commands.change(tenant_id, webhook_id, body.changes(), actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.webhook(tenant_id, webhook_id))

    async def delete_webhook(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, SCOPE)
        webhook_id = _id(request, "webhook_id", WebhookNotFound)
        await self._commands.delete(tenant_id, webhook_id, actor_of(request, who), request[ACCESS])
        return json_response({"id": webhook_id, "deleted": True})

    async def test_webhook(self, request: web.Request) -> web.Response:
        who, tenant_id = await self._callers.in_tenant(request, SCOPE)
        webhook_id = _id(request, "webhook_id", WebhookNotFound)
        result = await self._deliveries.send_test(
            tenant_id, webhook_id, identity_id=who.identity_id, request_id=request[REQUEST_ID]
        )
        request[ACCESS].extra["delivery_id"] = result["delivery_id"]
        return json_response(result)

    async def redeliver(self, request: web.Request) -> web.Response:
        _, tenant_id = await self._callers.in_tenant(request, SCOPE)
        webhook_id = _id(request, "webhook_id", WebhookNotFound)
        delivery_id = _id(request, "delivery_id", DeliveryNotFound)
        return json_response(await self._deliveries.redeliver(tenant_id, webhook_id, delivery_id), status=202)

