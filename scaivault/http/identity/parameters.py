"""What identity requests carry: query strings (one model per kind of endpoint) and the ids in their paths."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, cast, get_args

from aiohttp import web
from pydantic import BeforeValidator, Field

from projections.identity.directory import IdentityType, PageRequest
from scaivault.domain.errors import InvalidRequest, ScaiVaultError
from scaivault.domain.identities import identity_not_found, is_group_id, is_user_id, parse_status
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.http.query import Limit, QueryModel, digits

# Paths without a {tenant_id} of their own also exist under the tenant prefix.
BASES = ("/v1/identity", "/v1/t/{tenant_id}/identity")
DEFAULT_PAGE_SIZE = 50
MAX_PAGE = 1_000_000
MAX_QUERY = 256
IDENTITY_TYPES: tuple[str, ...] = get_args(IdentityType)


def _status(raw: object) -> str:
    try:
        return parse_status(raw)
    except ScaiVaultError:
        raise ValueError("must be an upper-case word such as ACTIVE") from None


def _valid_id(parse: Callable[[object], str]) -> Callable[[object], str]:
    def valid(raw: object) -> str:
        try:
            return parse(raw)
        except ScaiVaultError:
            raise ValueError("is not a valid id") from None

    return valid


def _search(raw: object) -> str:
    if not isinstance(raw, str) or not 0 < len(raw) <= MAX_QUERY:
        raise ValueError(f"must be 1-{MAX_QUERY} characters")
    if "\x00" in raw:  # PostgreSQL text cannot hold a NUL: no address or name contains one
        raise ValueError("may not contain a NUL character")
    return raw


PageNumber = Annotated[int, BeforeValidator(digits), Field(ge=1, le=MAX_PAGE)]
Status = Annotated[str, BeforeValidator(_status)]
PartnerId = Annotated[str, BeforeValidator(_valid_id(parse_partner_id))]
TenantId = Annotated[str, BeforeValidator(_valid_id(parse_tenant_id))]
Search = Annotated[str, BeforeValidator(_search)]


class PageQuery(QueryModel):
    page: PageNumber = 1
    page_size: Limit = DEFAULT_PAGE_SIZE

    def page_request(self) -> PageRequest:
        return PageRequest(page=self.page, page_size=self.page_size)


class StatusPageQuery(PageQuery):
    status: Status | None = None


class TenantsQuery(StatusPageQuery):
    partner_id: PartnerId | None = None


class UsersQuery(StatusPageQuery):
    q: Search | None = None


class SyncScopeQuery(QueryModel):
    partner_id: PartnerId | None = None
    tenant_id: TenantId | None = None


def _path_id(request: web.Request, kind: str, well_formed: Callable[[object], bool]) -> str:
    identity_id = request.match_info[f"{kind}_id"]
    if not well_formed(identity_id):  # a malformed id names no user or group: the same answer as a missing one
        raise identity_not_found(kind, identity_id)
    return identity_id


def user_id_of(request: web.Request) -> str:
    return _path_id(request, "user", is_user_id)


def group_id_of(request: web.Request) -> str:
    return _path_id(request, "group", is_group_id)


def identity_type_of(request: web.Request) -> IdentityType:
    kind = request.match_info["identity_type"]
    if kind not in IDENTITY_TYPES:
        raise InvalidRequest(
            f"identity_type must be one of {', '.join(sorted(IDENTITY_TYPES))}", parameter="identity_type"
        )
    return cast(IdentityType, kind)
