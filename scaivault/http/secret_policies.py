"""/v1/secret-policies: value-generation recipes (spec reference/secret-policies). Decisions where the spec is
silent: docs/secret-policies.md.

Reading and previewing a stored policy need ``policies:read``; previewing a recipe of the caller's own making (not
stored) needs ``policies:write``, as writing one does: a preview may cost seconds of CPU, and a stored recipe's cost
was accepted by the administrator who stored it. Changing needs ``policies:write`` *and* an admin role for the tenant
(``commands/secret_policies.py``). Previews have a rate-limit category of their own (``secret_policy_preview``).
Reads and previews go to the reader (``projections/secret_policies/reader.py``), changes to the commands; here
requests are parsed and answers written.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from pydantic import Field, StrictBool

from commands.secret_policies import NewSecretPolicy, SecretPolicyChanges, SecretPolicyCommands
from projections.secret_policies.reader import SecretPolicyReader
from scaivault.auth.caller import Caller
from scaivault.domain.errors import SecretPolicyNotFound
from scaivault.domain.generators import MAX_FIELDS
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Flag, Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null

BASES = ("/v1/secret-policies", "/v1/t/{tenant_id}/secret-policies")
READ_SCOPE = "policies:read"
WRITE_SCOPE = "policies:write"
DEFAULT_LIMIT = 100


class SecretPolicyListQuery(QueryModel):
    include_inactive: Flag = False
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class DeleteQuery(QueryModel):
    force: Flag = False


# Shapes only (422 validation_error); what a recipe's fields and configs may hold is the domain's to say, naming
# each problem as ``fields[i].config.<key>``.
Recipe = list[Any]


class SecretPolicyIn(Strict):
    name: str
    policy_type: str
    fields: Recipe = Field(max_length=MAX_FIELDS)
    description: str | None = None
    is_active: StrictBool = True


class SecretPolicyPatchIn(Strict):
    name: str | None = None
    policy_type: str | None = None
    fields: Recipe | None = Field(default=None, max_length=MAX_FIELDS)
    description: str | None = None
    is_active: StrictBool | None = None

    _not_null = refuse_null("name", "policy_type", "fields", "is_active",
                            message="may not be null (only description may be cleared)")


class RecipeIn(Strict):
    fields: Recipe = Field(max_length=MAX_FIELDS)


def _policy_id(request: web.Request) -> str:
    return path_id(request, "policy_id", SecretPolicyNotFound, key="secret_policy_id")


class SecretPoliciesApi:
    def __init__(self, callers: Callers, commands: SecretPolicyCommands, reader: SecretPolicyReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        """Under the token's tenant, and under /v1/t/{tenant_id}/ for partner admins."""
        for base in BASES:
            table.add("GET", base, self.list_policies, action="secret_policy_read")
            table.add("POST", base, self.create_policy, action="secret_policy_create")
            table.add("POST", base + "/preview", self.preview_recipe, action="secret_policy_preview")
            table.add("GET", base + "/{policy_id}", self.get_policy, action="secret_policy_read")
            table.add("PUT", base + "/{policy_id}", self.replace_policy, action="secret_policy_update")
            table.add("PATCH", base + "/{policy_id}", self.patch_policy, action="secret_policy_update")
            table.add("DELETE", base + "/{policy_id}", self.delete_policy, action="secret_policy_delete")
            table.add("POST", base + "/{policy_id}/preview", self.preview_policy, action="secret_policy_preview")

    # ---- reads ----------------------------------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        query = parse_query(SecretPolicyListQuery, request)
        return json_response(await self._reader.policies(
            who, include_inactive=query.include_inactive, limit=query.limit, cursor=query.cursor
        ))

    async def get_policy(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        return json_response(await self._reader.policy(who, _policy_id(request)))

    async def preview_policy(self, request: web.Request) -> web.Response:
        """A sample value of a stored policy; any body is ignored."""
        who = await self._callers.with_scope(request, READ_SCOPE)
        return json_response(await self._reader.preview(who, _policy_id(request)))

    async def preview_recipe(self, request: web.Request) -> web.Response:
        """A sample value of the recipe in the body, which is not stored (``policies:write``: see above)."""
        await self._callers.with_scope(request, WRITE_SCOPE)
        body = parse_body(RecipeIn, await read_json_object(request))
        return json_response(await self._reader.preview_recipe(body.fields))

    # ---- changes --------------------------------------------------------------------------------------------------

    async def create_policy(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, WRITE_SCOPE)
        body = parse_body(SecretPolicyIn, await read_json_object(request))
        new = NewSecretPolicy(
            name=body.name, policy_type=body.policy_type, fields=body.fields, description=body.description,
            is_active=body.is_active,
        )
        policy = await self._commands.create(new, actor_of(request, who), request[ACCESS])
        document = await self._reader.policy(who, policy.policy_id)
        return committed_response(
            request, document, headers={"Location": f"/v1/secret-policies/{policy.policy_id}"}
        )

    async def replace_policy(self, request: web.Request) -> web.Response:
        """Everything replaced; ``is_active`` kept unless given (it is state, not content)."""
        who = await self._callers.with_scope(request, WRITE_SCOPE)
        body = parse_body(SecretPolicyIn, await read_json_object(request))
        given = body.model_fields_set
        changes = SecretPolicyChanges(
            name=body.name, policy_type=body.policy_type, fields=body.fields, description=body.description,
            **({"is_active": body.is_active} if "is_active" in given else {}),
        )
        return await self._change(request, changes, who)

    async def patch_policy(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, WRITE_SCOPE)
        body = parse_body(SecretPolicyPatchIn, await read_json_object(request))
        changes = SecretPolicyChanges(**{name: getattr(body, name) for name in body.model_fields_set})
        return await self._change(request, changes, who)

    async def _change(self, request: web.Request, changes: SecretPolicyChanges, who: Caller) -> web.Response:
        policy_id = _policy_id(request)
        await self._commands.change(policy_id, changes, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.policy(who, policy_id))

    async def delete_policy(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, WRITE_SCOPE)
        policy_id = _policy_id(request)
        query = parse_query(DeleteQuery, request)
        users = await self._commands.delete(
            policy_id, force=query.force, actor=actor_of(request, who), access=request[ACCESS]
        )
        return json_response({
            "id": policy_id, "deleted": True, "linked_secrets": users.secret_count,
            "rotation_policy_ids": list(users.rotation_policy_ids),
        })
