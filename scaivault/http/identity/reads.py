"""Reading the mirror over HTTP: partners, tenants, users, groups, members, resolution and roles. The directory
(``projections/identity/directory.py``) answers; here requests are parsed and answers written. Every read needs
``identity:read`` except the list of assignable roles (any authenticated caller)."""

from __future__ import annotations

from aiohttp import web

from projections.identity.directory import IdentityDirectory
from scaivault.domain.identities import ROLES
from scaivault.http.context import Callers
from scaivault.http.identity.parameters import (
    BASES,
    PageQuery,
    StatusPageQuery,
    TenantsQuery,
    UsersQuery,
    group_id_of,
    identity_type_of,
    user_id_of,
)
from scaivault.http.query import parse_query
from scaivault.http.responses import json_response
from scaivault.http.routing import RouteTable

READ_SCOPE = "identity:read"
ACTION = "identity_read"


class IdentityReadsApi:
    def __init__(self, callers: Callers, directory: IdentityDirectory) -> None:
        self._callers = callers
        self._directory = directory

    def add_routes(self, table: RouteTable) -> None:
        table.add("GET", "/v1/identity/partners", self.list_partners, action=ACTION)
        table.add("GET", "/v1/identity/tenants", self.list_tenants, action=ACTION)
        table.add("GET", "/v1/identity/tenants/{tenant_id}/users", self.list_users, action=ACTION)
        table.add("GET", "/v1/identity/tenants/{tenant_id}/groups", self.list_groups, action=ACTION)
        table.add("GET", "/v1/identity/roles", self.list_roles, action=ACTION)
        for base in BASES:
            table.add("GET", base + "/users/{user_id}", self.get_user, action=ACTION)
            table.add("GET", base + "/users/{user_id}/roles", self.get_user_roles, action=ACTION)
            table.add("GET", base + "/groups/{group_id}/members", self.list_members, action=ACTION)
            table.add("GET", base + "/resolve/{identity_type}/{identity_id}", self.resolve, action=ACTION)

    async def _tenant(self, request: web.Request) -> str:
        """The tenant a reader reads in (the path's, the prefix's, ``X-Tenant-ID`` or the token's)."""
        _, tenant = await self._callers.in_tenant(request, READ_SCOPE)
        return tenant

    async def list_partners(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        query = parse_query(StatusPageQuery, request)
        listing = await self._directory.partners(who, query.page_request(), status=query.status)
        return json_response(listing.document())

    async def list_tenants(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        query = parse_query(TenantsQuery, request)
        listing = await self._directory.tenants(
            who, query.page_request(), partner_id=query.partner_id, status=query.status
        )
        return json_response(listing.document())

    async def list_users(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        query = parse_query(UsersQuery, request)
        listing = await self._directory.users(tenant, query.page_request(), status=query.status, query=query.q)
        return json_response(listing.document())

    async def get_user(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        return json_response(await self._directory.user(tenant, user_id_of(request)))

    async def list_groups(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        query = parse_query(StatusPageQuery, request)
        listing = await self._directory.groups(tenant, query.page_request(), status=query.status)
        return json_response(listing.document())

    async def list_members(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        query = parse_query(PageQuery, request)
        listing = await self._directory.members(tenant, group_id_of(request), query.page_request())
        return json_response(listing.document())

    async def resolve(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        identity_type = identity_type_of(request)
        return json_response(
            await self._directory.resolve(tenant, identity_type, request.match_info["identity_id"])
        )

    async def list_roles(self, request: web.Request) -> web.Response:
        await self._callers.caller(request)
        return json_response({"roles": [{"name": name, "description": text} for name, text in ROLES.items()]})

    async def get_user_roles(self, request: web.Request) -> web.Response:
        tenant = await self._tenant(request)
        return json_response(await self._directory.user_roles(tenant, user_id_of(request)))
