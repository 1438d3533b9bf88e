"""Reading secrets over HTTP: values, metadata, versions, listings and batches (spec api-guides/secrets,
api-guides/batch-operations). Authorization, decryption and access notes happen in the reader
(``projections/secrets/reader.py``); here requests are parsed and answers written."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

from aiohttp import web
from pydantic import BeforeValidator

from projections.secrets.history import parse_as_of
from projections.secrets.reader import BatchOptions, SecretReader
from scaivault.auth.caller import Caller
from scaivault.domain.paths import parse_prefix
from scaivault.domain.secrets import SecretAddress
from scaivault.http.context import Callers
from scaivault.http.keys import ACCESS
from scaivault.http.query import ExpiringWithin, Flag, Limit, QueryModel, WholeNumber, parse_query
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.schemas import BatchReadIn, parse_body
from scaivault.http.secrets.addressing import address_of, owner_of
from scaivault.ratelimit.http import RequestCharges
from scaivault.serialization import format_timestamp

DEFAULT_LIST_LIMIT = 100


AsOf = Annotated[datetime, BeforeValidator(lambda raw: parse_as_of(str(raw)))]


class ForensicQuery(QueryModel):
    as_of: AsOf | None = None


Q = TypeVar("Q", bound=ForensicQuery)


class ReadQuery(ForensicQuery):
    version: WholeNumber | None = None


class ListQuery(QueryModel):
    prefix: Annotated[str, BeforeValidator(parse_prefix)] = ""
    limit: Limit = DEFAULT_LIST_LIMIT
    cursor: str | None = None
    include_deleted: Flag = False
    # Secrets expiring within this duration from now (``30d``), expired ones included (the CLI's secrets expiring).
    expiring_within: ExpiringWithin | None = None


def _batch_options(body: BatchReadIn) -> BatchOptions:
    options = body.options
    return BatchOptions(
        include_metadata=options.include_metadata, fail_fast=options.fail_fast, version=options.version,
        expand_wildcards=options.expand_wildcards,
    )


class SecretReadsApi:
    def __init__(self, callers: Callers, reader: SecretReader, charges: RequestCharges) -> None:
        self._callers = callers
        self._reader = reader
        self._charges = charges

    async def _addressed(
        self, request: web.Request, scope: str, model: type[Q]
    ) -> tuple[Caller, SecretAddress, Q]:
        """The caller (holding ``scope``), the secret the path names, and the query; a forensic read (``as_of``) is
        noted as such in the request's access record."""
        who = await self._callers.with_scope(request, scope)
        address = address_of(request, who)
        query = parse_query(model, request)
        if query.as_of is not None:
            request[ACCESS].extra["as_of"] = format_timestamp(query.as_of)
        return who, address, query

    async def read_secret(self, request: web.Request) -> web.Response:
        who, address, query = await self._addressed(request, "secrets:read", ReadQuery)
        return json_response(
            await self._reader.read(who, address, version=query.version, as_of=query.as_of, access=request[ACCESS])
        )

    async def read_metadata(self, request: web.Request) -> web.Response:
        who, address, query = await self._addressed(request, "secrets:list", ForensicQuery)
        return json_response(await self._reader.metadata(who, address, as_of=query.as_of))

    async def list_versions(self, request: web.Request) -> web.Response:
        who, address, query = await self._addressed(request, "secrets:list", ForensicQuery)
        return json_response(await self._reader.versions(who, address, as_of=query.as_of))

    async def list_secrets(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, "secrets:list")
        owner = owner_of(request, who)
        query = parse_query(ListQuery, request)
        return json_response(await self._reader.listing(
            who, owner, prefix=query.prefix, limit=query.limit, cursor=query.cursor,
            include_deleted=query.include_deleted, expiring_within=query.expiring_within,
        ))

    async def batch_read(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, "secrets:read")
        body = parse_body(BatchReadIn, await read_json_object(request))
        answer = await self._reader.batch_read(
            who, owner_of(request, who), body.paths, _batch_options(body), access=request[ACCESS]
        )
        # The spec charges one read unit per returned secret.
        await self._charges.charge_extra(request, "secrets_read", len(answer["secrets"]))
        return json_response(answer)

    async def batch_metadata(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, "secrets:list")
        body = parse_body(BatchReadIn, await read_json_object(request))
        documents = await self._reader.batch_metadata(who, owner_of(request, who), body.paths, _batch_options(body))
        return json_response(documents)
