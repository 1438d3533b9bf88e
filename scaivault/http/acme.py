"""/v1/pki/acme: ACME accounts and orders (spec api-guides/acme; decisions: docs/acme.md), and the http-01 answer
at /.well-known/acme-challenge/{token}.

Scopes: ``pki:admin`` manages accounts, ``pki:issue`` orders and cancels; reading needs either. The challenge route
needs no token (the CA fetches it) and leaves no access record: a key authorization is public by design.
"""

from __future__ import annotations

from aiohttp import web
from pydantic import Field, StrictBool

from commands.acme import AcmeCommands, NewAccount, NewOrder
from projections.acme.reader import AcmeReader
from scaivault.domain.errors import AcmeAccountNotFound, AcmeOrderNotFound, RouteNotFound
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import UNAUDITED, RouteTable
from scaivault.http.schemas import Strict, parse_body

BASES = ("/v1/pki/acme", "/v1/t/{tenant_id}/pki/acme")
ADMIN = "pki:admin"
ISSUE = "pki:issue"
MAX_PEM = 64 * 1024
CHALLENGE_PATH = "/.well-known/acme-challenge/{token}"


class PageQuery(QueryModel):
    limit: Limit = 100
    cursor: str | None = None


class OrderListQuery(PageQuery):
    status: str | None = Field(default=None, max_length=16)


class EabIn(Strict):
    kid: str = Field(max_length=256)
    hmac_key: str = Field(max_length=512)


class AccountIn(Strict):
    name: str = Field(max_length=256)
    provider: str = Field(max_length=32)
    environment: str = Field(default="production", max_length=32)
    email: str | None = Field(default=None, max_length=254)
    directory_url: str | None = Field(default=None, max_length=2048)
    eab: EabIn | None = None
    terms_of_service_agreed: StrictBool | None = None
    # The CAs that sign a custom ACME server's TLS certificate (an enterprise CA), PEM; public CAs need none.
    ca_bundle: str | None = Field(default=None, max_length=MAX_PEM)


class OrderIn(Strict):
    account_id: str = Field(max_length=64)
    common_name: str = Field(max_length=253)
    alt_names: list[str] = Field(default_factory=list, max_length=99)
    challenge_type: str = Field(default="dns-01", max_length=16)
    dns_provider_id: str | None = Field(default=None, max_length=64)
    key_type: str = Field(default="ec", max_length=8)
    csr_pem: str | None = Field(default=None, max_length=MAX_PEM)
    secret_path: str | None = Field(default=None, max_length=1024)
    auto_renew: StrictBool = True
    renew_before: str = Field(default="30d", max_length=32)


def _account_id(request: web.Request) -> str:
    return path_id(request, "account_id", AcmeAccountNotFound, max_length=64)


def _order_id(request: web.Request) -> str:
    return path_id(request, "order_id", AcmeOrderNotFound, max_length=64)


class AcmeApi:
    def __init__(self, callers: Callers, commands: AcmeCommands, reader: AcmeReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        table.add("GET", CHALLENGE_PATH, self.http01, action=UNAUDITED)
        for base in BASES:
            table.add("GET", base + "/accounts", self.list_accounts, action="acme_account_read")
            table.add("POST", base + "/accounts", self.create_account, action="acme_account_create")
            table.add("GET", base + "/accounts/{account_id}", self.get_account, action="acme_account_read")
            table.add("DELETE", base + "/accounts/{account_id}", self.delete_account, action="acme_account_delete")
            table.add("GET", base + "/orders", self.list_orders, action="acme_order_read")
            table.add("POST", base + "/orders", self.create_order, action="acme_order_create")
            table.add("GET", base + "/orders/{order_id}", self.get_order, action="acme_order_read")
            table.add("POST", base + "/orders/{order_id}/cancel", self.cancel_order, action="acme_order_cancel")

    async def http01(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        answer = await self._reader.http01(token) if len(token) <= 256 and "\x00" not in token else None
        if answer is None:  # the API's own 404 envelope: nothing here tells a prober more than "not found"
            raise RouteNotFound("No ACME challenge with that token")
        return web.Response(text=answer, content_type="text/plain")

    # ---- accounts -------------------------------------------------------------------------------------------------

    async def list_accounts(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(PageQuery, request)
        return json_response(await self._reader.accounts(who, limit=query.limit, cursor=query.cursor))

    async def get_account(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.account(who, _account_id(request)))

    async def create_account(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        body = parse_body(AccountIn, await read_json_object(request))
        new = NewAccount(
            name=body.name, provider=body.provider, environment=body.environment,
            email=body.email, directory_url=body.directory_url,
            eab_kid=body.eab.kid if body.eab else None, eab_hmac_key=body.eab.hmac_key if body.eab else None,
            terms_of_service_agreed=body.terms_of_service_agreed, ca_bundle=body.ca_bundle,
        )
        account = await self._commands.register_account(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.account(who, account.account_id)
        return committed_response(request, document,
                                  headers={"Location": f"/v1/pki/acme/accounts/{account.account_id}"})

    async def delete_account(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ADMIN)
        await self._commands.deactivate_account(_account_id(request), actor_of(request, who), request[ACCESS])
        return web.Response(status=204)

    # ---- orders ---------------------------------------------------------------------------------------------------

    async def list_orders(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        query = parse_query(OrderListQuery, request)
        return json_response(await self._reader.orders(
            who, limit=query.limit, status=query.status, cursor=query.cursor))

    async def get_order(self, request: web.Request) -> web.Response:
        who = await self._callers.with_any_scope(request, ADMIN, ISSUE)
        return json_response(await self._reader.order(who, _order_id(request)))

    async def create_order(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ISSUE)
        body = parse_body(OrderIn, await read_json_object(request))
        new = NewOrder(
            account_id=body.account_id, common_name=body.common_name, alt_names=body.alt_names,
            challenge_type=body.challenge_type, dns_provider_id=body.dns_provider_id, key_type=body.key_type,
            csr_pem=body.csr_pem, secret_path=body.secret_path, auto_renew=body.auto_renew,
            renew_before=body.renew_before,
        )
        order = await self._commands.request_order(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.order(who, order.order_id)
        return committed_response(request, document, headers={"Location": f"/v1/pki/acme/orders/{order.order_id}"})

    async def cancel_order(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, ISSUE)
        order_id = _order_id(request)
        await self._commands.cancel_order(order_id, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.order(who, order_id))
