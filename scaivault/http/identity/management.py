"""Managing the mirror over HTTP: users, groups, memberships and roles, each one command
(``commands/identities.py``), which holds the reach and role rules. Users, groups and memberships need
``identity:admin`` and an administrator (tenant_admin or above); roles need ``identity:admin`` and the spec's role
rules. A created user or group is answered as the directory shows it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import Field

from commands.actor import Actor
from commands.identities import IdentityCommands
from projections.identity.directory import IdentityDirectory
from scaivault.audit.access_records import AccessRecord
from scaivault.domain.errors import AccessDenied
from scaivault.domain.identities import ACTIVE, ROLES, SCAIVAULT, parse_roles, profile_of_group, profile_of_user
from scaivault.http.context import Callers, actor_of
from scaivault.http.identity.parameters import BASES, group_id_of, user_id_of
from scaivault.http.keys import ACCESS
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body

ADMIN_SCOPE = "identity:admin"
ACTION = "identity_write"


class CreateUserIn(Strict):
    email: str = Field(max_length=254)
    display_name: str | None = Field(default=None, max_length=256)
    status: str | None = Field(default=None, max_length=32)
    mfa_enabled: bool = False


class CreateGroupIn(Strict):
    name: str = Field(max_length=128)
    description: str | None = Field(default=None, max_length=1024)
    status: str | None = Field(default=None, max_length=32)


class RolesIn(Strict):
    roles: list[str] = Field(max_length=len(ROLES) * 4)


async def _new_profile(
    request: web.Request, schema: type[CreateUserIn | CreateGroupIn], profile_of: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    body = parse_body(schema, await read_json_object(request))
    return profile_of(body.model_dump(exclude_none=True) | {"status": body.status or ACTIVE})


@dataclass(frozen=True)
class Managing:
    """What a manager's request passes the commands: the tenant, the actor, the access record and the actor's
    roles (its reach)."""

    tenant: str
    actor: Actor
    access: AccessRecord
    roles: frozenset[str]


class IdentityManagementApi:
    def __init__(self, callers: Callers, commands: IdentityCommands, directory: IdentityDirectory) -> None:
        self._callers = callers
        self._commands = commands
        self._directory = directory

    def add_routes(self, table: RouteTable) -> None:
        table.add("POST", "/v1/identity/tenants/{tenant_id}/users", self.create_user, action=ACTION)
        table.add("POST", "/v1/identity/tenants/{tenant_id}/groups", self.create_group, action=ACTION)
        for base in BASES:
            table.add("DELETE", base + "/users/{user_id}", self.delete_user, action=ACTION)
            table.add("PUT", base + "/users/{user_id}/roles", self.put_user_roles, action=ACTION)
            table.add("DELETE", base + "/groups/{group_id}", self.delete_group, action=ACTION)
            table.add("PUT", base + "/groups/{group_id}/members/{user_id}", self.put_member, action=ACTION)
            table.add("DELETE", base + "/groups/{group_id}/members/{user_id}", self.delete_member, action=ACTION)

    async def _managing(self, request: web.Request) -> Managing:
        """A manager's request: ``identity:admin`` and an administrator of the tenant."""
        who = await self._callers.with_scope(request, ADMIN_SCOPE)
        if not who.principal.is_tenant_admin:
            raise AccessDenied("Managing identities needs the tenant_admin, partner_admin or super_admin role")
        return Managing(who.require_tenant(), actor_of(request, who), request[ACCESS], who.principal.roles)

    async def create_user(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        user_id = await self._commands.create_user(
            managing.tenant, await _new_profile(request, CreateUserIn, profile_of_user), managing.actor,
            managing.access, actor_roles=managing.roles,
        )
        return committed_response(request, await self._directory.user(managing.tenant, user_id))

    async def delete_user(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        await self._commands.remove_user(
            managing.tenant, user_id_of(request), managing.actor, managing.access, actor_roles=managing.roles
        )
        return committed_response(request)

    async def create_group(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        group_id = await self._commands.create_group(
            managing.tenant, await _new_profile(request, CreateGroupIn, profile_of_group), managing.actor,
            managing.access,
        )
        return committed_response(request, await self._directory.group(managing.tenant, group_id))

    async def delete_group(self, request: web.Request) -> web.Response:
        managing = await self._managing(request)
        await self._commands.remove_group(managing.tenant, group_id_of(request), managing.actor, managing.access)
        return committed_response(request)

    async def _change_membership(self, request: web.Request, *, adding: bool) -> bool:
        managing = await self._managing(request)
        return await self._commands.change_membership(
            managing.tenant, group_id_of(request), user_id_of(request), managing.actor, adding=adding,
            actor_roles=managing.roles, access=managing.access,
        )

    async def put_member(self, request: web.Request) -> web.Response:
        """201 when the membership was added, 200 when it existed."""
        added = await self._change_membership(request, adding=True)
        return committed_response(
            request,
            {"group_id": request.match_info["group_id"], "user_id": request.match_info["user_id"], "added": added},
        )

    async def delete_member(self, request: web.Request) -> web.Response:
        """204; a user who is not a member is 404, and nothing is committed."""
        await self._change_membership(request, adding=False)
        return committed_response(request)

    async def put_user_roles(self, request: web.Request) -> web.Response:
        """Roles are not managed by administrators alone: any ``identity:admin`` caller may ask, and the role rules
        (in the command) decide."""
        who, tenant = await self._callers.in_tenant(request, ADMIN_SCOPE)
        roles = parse_roles(parse_body(RolesIn, await read_json_object(request)).roles)
        user_id = user_id_of(request)
        now = await self._commands.set_roles(
            tenant, user_id, roles, actor_of(request, who), changer_roles=who.principal.roles, access=request[ACCESS]
        )
        return json_response({"user_id": user_id, "roles": now, "managed_by": SCAIVAULT})
