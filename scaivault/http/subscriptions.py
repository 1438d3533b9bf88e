"""/v1/subscriptions: path-scoped event subscriptions, pushed or long-polled (spec reference/subscriptions).
Decisions where the spec is silent: docs/subscriptions.md.

Reading, polling and acknowledging need ``subscriptions:read``; creating, changing and deleting
``subscriptions:write``. Changes go to the commands (``commands/subscriptions.py``), reads to the reader, polls and
acknowledgements to the queue service (``projections/subscriptions/polling.py``); here requests are parsed and
answers written.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import BeforeValidator, Field, StrictInt

from commands.subscriptions import SubscriptionChanges, SubscriptionCommands
from projections.subscriptions.polling import PollRequest, SubscriptionPolls
from projections.subscriptions.reader import SubscriptionReader
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import InvalidDuration, SubscriptionNotFound
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Limit, QueryModel, digits, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null

BASES = ("/v1/subscriptions", "/v1/t/{tenant_id}/subscriptions")
READ_SCOPE = "subscriptions:read"
WRITE_SCOPE = "subscriptions:write"
DEFAULT_LIMIT = 100
DEFAULT_POLL_TIMEOUT = 30
MAX_POLL_TIMEOUT = 60
DEFAULT_MAX_EVENTS = 100
MAX_EVENTS = 1000
MAX_ACK_IDS = 1000


# ---- query strings ------------------------------------------------------------------------------------------------


def _seconds(raw: object) -> int:
    """Whole seconds (``30``) or a duration (``30s``, ``1m``), 0 to 60."""
    if isinstance(raw, str) and raw.isascii() and raw.isdigit():
        seconds = digits(raw)
    else:
        try:
            seconds = int(parse_duration(raw).total_seconds())
        except InvalidDuration:
            raise ValueError("must be whole seconds (e.g. 30) or a duration (e.g. 45s)") from None
    if seconds > MAX_POLL_TIMEOUT:
        raise ValueError(f"is at most {MAX_POLL_TIMEOUT} seconds")
    return seconds


class ListQuery(QueryModel):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class PollQuery(QueryModel):
    timeout: Annotated[int, BeforeValidator(_seconds), Field(ge=0, le=MAX_POLL_TIMEOUT)] = DEFAULT_POLL_TIMEOUT
    since_event_id: str | None = Field(default=None, pattern=r"^evt_[0-9a-z]{26}$")
    max_events: Annotated[int, BeforeValidator(digits), Field(ge=1, le=MAX_EVENTS)] = DEFAULT_MAX_EVENTS


# ---- bodies: shapes here (422 validation_error); meaning in the domain ----------------------------------------------


class DeliveryIn(Strict):
    type: Literal["webhook", "polling"]
    url: str | None = None
    secret: str | None = None
    buffer_size: StrictInt | None = None

    def __repr__(self) -> str:  # never a signing secret in a log line
        return f"DeliveryIn(type={self.type!r}, url={self.url!r}, buffer_size={self.buffer_size!r})"


class DeliveryPatchIn(DeliveryIn):
    type: Literal["webhook", "polling"] | None = None  # type: ignore[assignment]


class SubscriptionIn(Strict):
    name: str
    paths: list[str]
    events: list[str]
    delivery: DeliveryIn
    filters: dict[str, Any] | None = None


class SubscriptionPatchIn(Strict):
    """The spec's changeable fields: paths, events, delivery."""

    paths: list[str] | None = None
    events: list[str] | None = None
    delivery: DeliveryPatchIn | None = None

    _not_null = refuse_null("paths", "events", "delivery")


class AckIn(Strict):
    event_ids: list[Annotated[str, Field(max_length=64)]] = Field(min_length=1, max_length=MAX_ACK_IDS)


def _delivery(delivery: DeliveryIn) -> dict[str, Any]:
    return delivery.model_dump(exclude_none=True)


def _subscription_id(request: web.Request) -> str:
    return path_id(request, "subscription_id", SubscriptionNotFound, max_length=64)


class SubscriptionsApi:
    def __init__(
        self, callers: Callers, commands: SubscriptionCommands, reader: SubscriptionReader, polls: SubscriptionPolls
    ) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader
        self._polls = polls

    def add_routes(self, table: RouteTable) -> None:
        for base in BASES:
            item = base + "/{subscription_id}"
            table.add("GET", base, self.list_subscriptions, action="subscription_read")
            table.add("POST", base, self.create_subscription, action="subscription_create")
            table.add("GET", item, self.get_subscription, action="subscription_read")
            table.add("PATCH", item, self.patch_subscription, action="subscription_update")
            table.add("DELETE", item, self.delete_subscription, action="subscription_delete")
            table.add("GET", item + "/poll", self.poll, action="subscription_poll")
            table.add("POST", item + "/ack", self.acknowledge, action="subscription_ack")

    async def list_subscriptions(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, READ_SCOPE)
        query = parse_query(ListQuery, request)
        return json_response(await self._reader.subscriptions(who, limit=query.limit, cursor=query.cursor))

    async def get_subscription(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, READ_SCOPE)
        return json_response(await self._reader.subscription(who, _subscription_id(request)))

    async def create_subscription(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, WRITE_SCOPE)
        body = parse_body(SubscriptionIn, await read_json_object(request))
        subscription = await self._commands.create(
            who, name=body.name, paths=body.paths, events=body.events, filters=body.filters,
            delivery=_delivery(body.delivery), actor=actor_of(request, who), access=request[ACCESS],
        )
        document = await self._reader.subscription(who, subscription.subscription_id)
        location = f"/v1/subscriptions/{subscription.subscription_id}"
        return committed_response(request, document, headers={"Location": location})

    async def patch_subscription(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, WRITE_SCOPE)
        subscription_id = _subscription_id(request)
        body = parse_body(SubscriptionPatchIn, await read_json_object(request))
        given = body.model_fields_set
        changes = SubscriptionChanges(**{
            name: _delivery(body.delivery) if name == "delivery" and body.delivery is not None else getattr(body, name)
            for name in ("paths", "events", "delivery") if name in given
        })
        await self._commands.change(who, subscription_id, changes, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.subscription(who, subscription_id))

    async def delete_subscription(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, WRITE_SCOPE)
        subscription_id = _subscription_id(request)
        await self._commands.delete(who, subscription_id, actor_of(request, who), request[ACCESS])
        return json_response({"id": subscription_id, "deleted": True})

    async def poll(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, READ_SCOPE)
        subscription_id = _subscription_id(request)
        query = parse_query(PollQuery, request)
        answer = await self._polls.poll(who, subscription_id, PollRequest(
            timeout=query.timeout, since_event_id=query.since_event_id, max_events=query.max_events
        ))
        request[ACCESS].extra["events"] = len(answer["events"])
        return json_response(answer)

    async def acknowledge(self, request: web.Request) -> web.Response:
        who, _ = await self._callers.in_tenant(request, READ_SCOPE)
        subscription_id = _subscription_id(request)
        body = parse_body(AckIn, await read_json_object(request))
        answer = await self._polls.acknowledge(who, subscription_id, body.event_ids)
        request[ACCESS].extra["acknowledged"] = answer["acknowledged"]
        return json_response(answer)
