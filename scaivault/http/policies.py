"""/v1/policies: access policies and their bindings (spec reference/policies, api-guides/policies,
core-concepts/policies-and-permissions). Decisions where the spec is silent: docs/policies.md.

Reading needs ``policies:read``; changing needs ``policies:write`` *and* an admin role (``PolicyAccess`` in
``commands/policies.py``). Reads and the dry run go to the reader (``projections/policies/reader.py``), changes to
the commands; here requests are parsed and answers written.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, StrictBool, field_validator

from commands.policies import UNSET, PolicyAccess, PolicyChanges, PolicyCommands
from projections.policies.reader import DryRunQuestion, PolicyReader, PolicyScope
from scaivault.auth.caller import Caller
from scaivault.domain.errors import PolicyNotFound
from scaivault.domain.policies import PERMISSIONS
from scaivault.domain.timestamps import in_utc
from scaivault.http.context import Callers, actor_of
from scaivault.http.keys import ACCESS
from scaivault.http.path_ids import path_id
from scaivault.http.query import Flag, Limit, QueryModel, parse_query
from scaivault.http.responses import committed_response, json_response, read_json_object
from scaivault.http.routing import UNAUDITED, RouteTable
from scaivault.http.schemas import Strict, parse_body, refuse_null

BASES = ("/v1/policies", "/v1/t/{tenant_id}/policies")
READ_SCOPE = "policies:read"
WRITE_SCOPE = "policies:write"
DEFAULT_LIMIT = 100
Permission = Literal[PERMISSIONS]  # type: ignore[valid-type]


# ---- query strings ------------------------------------------------------------------------------------------------


class PolicyListQuery(QueryModel):
    scope: PolicyScope | None = None
    include_inactive: Flag = False
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class BindingListQuery(QueryModel):
    limit: Limit = DEFAULT_LIMIT
    cursor: str | None = None


class DeleteQuery(QueryModel):
    force: Flag = False


# ---- bodies: shapes here (422 validation_error); rule semantics in the domain (400 invalid_policy/invalid_glob) ----


class TimeWindowIn(Strict):
    days: list[str] | None = None
    start: str
    end: str
    timezone: str | None = None


class ConditionsIn(Strict):
    ip_ranges: list[str] | None = None
    require_mfa: StrictBool | None = None
    mfa_max_age: str | None = None
    time_windows: list[TimeWindowIn] | None = None


class RuleIn(Strict):
    path_pattern: str
    permissions: list[str]
    conditions: ConditionsIn | None = None


class PolicyIn(Strict):
    name: str
    description: str | None = None
    rules: list[RuleIn]
    scope: PolicyScope = "tenant"
    is_active: StrictBool = True


class PolicyPatchIn(Strict):
    name: str | None = None
    description: str | None = None
    rules: list[RuleIn] | None = None
    scope: PolicyScope | None = None
    is_active: StrictBool | None = None

    _not_null = refuse_null("name", "rules", "scope", "is_active",
                            message="may not be null (only description may be cleared)")


def _in_utc(value: datetime | None) -> datetime | None:
    return None if value is None else in_utc(value)


class BindingIn(Strict):
    identity_type: str
    identity_id: str = Field(max_length=320)
    expires_at: datetime | None = None

    _utc = field_validator("expires_at")(_in_utc)


class DryRunContextIn(Strict):
    source_ip: str | None = Field(default=None, max_length=64)
    mfa_verified: StrictBool = False
    mfa_verified_at: datetime | None = None  # how long ago, for rules with mfa_max_age (default: at `timestamp`)
    timestamp: datetime | None = None

    _utc = field_validator("mfa_verified_at", "timestamp")(_in_utc)


class DryRunIn(Strict):
    identity_id: str = Field(max_length=320)
    path: str
    permission: Permission
    context: DryRunContextIn = DryRunContextIn()

    def question(self) -> DryRunQuestion:
        return DryRunQuestion(
            identity_id=self.identity_id, path=self.path, permission=self.permission,
            source_ip=self.context.source_ip, mfa_verified=self.context.mfa_verified,
            mfa_verified_at=self.context.mfa_verified_at, at=self.context.timestamp,
        )


def _rules(rules: list[RuleIn]) -> list[dict[str, Any]]:
    return [rule.model_dump(exclude_none=True) for rule in rules]


def _policy_id(request: web.Request) -> str:
    return path_id(request, "policy_id", PolicyNotFound)


class PoliciesApi:
    def __init__(self, callers: Callers, commands: PolicyCommands, reader: PolicyReader) -> None:
        self._callers = callers
        self._commands = commands
        self._reader = reader

    def add_routes(self, table: RouteTable) -> None:
        """Under the token's tenant, and under /v1/t/{tenant_id}/ for partner admins. The dry run leaves no access
        record (spec)."""
        for base in BASES:
            table.add("GET", base, self.list_policies, action="policy_read")
            table.add("POST", base, self.create_policy, action="policy_create")
            table.add("POST", base + "/test", self.dry_run, action=UNAUDITED)
            table.add("GET", base + "/{policy_id}", self.get_policy, action="policy_read")
            table.add("PUT", base + "/{policy_id}", self.replace_policy, action="policy_update")
            table.add("PATCH", base + "/{policy_id}", self.patch_policy, action="policy_update")
            table.add("DELETE", base + "/{policy_id}", self.delete_policy, action="policy_delete")
            table.add("GET", base + "/{policy_id}/bindings", self.list_bindings, action="policy_read")
            table.add("POST", base + "/{policy_id}/bindings", self.create_binding, action="policy_bind")
            table.add("DELETE", base + "/{policy_id}/bindings/{binding_id}", self.delete_binding,
                      action="policy_unbind")

    async def _managing(self, request: web.Request) -> tuple[Caller, PolicyAccess]:
        who = await self._callers.with_scope(request, WRITE_SCOPE)
        return who, PolicyAccess.of_manager(who)

    # ---- reads ----------------------------------------------------------------------------------------------------

    async def list_policies(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        query = parse_query(PolicyListQuery, request)
        return json_response(await self._reader.policies(
            who, scope=query.scope, include_inactive=query.include_inactive, limit=query.limit, cursor=query.cursor
        ))

    async def get_policy(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        return json_response(await self._reader.policy(who, _policy_id(request)))

    async def list_bindings(self, request: web.Request) -> web.Response:
        who = await self._callers.with_scope(request, READ_SCOPE)
        policy_id = _policy_id(request)
        query = parse_query(BindingListQuery, request)
        return json_response(await self._reader.bindings(who, policy_id, limit=query.limit, cursor=query.cursor))

    async def dry_run(self, request: web.Request) -> web.Response:
        """Would this identity be allowed? Changes nothing and leaves no audit record (spec)."""
        who = await self._callers.with_scope(request, READ_SCOPE)
        body = parse_body(DryRunIn, await read_json_object(request))
        return json_response(await self._reader.dry_run(who, body.question()))

    # ---- changes --------------------------------------------------------------------------------------------------

    async def create_policy(self, request: web.Request) -> web.Response:
        who, access = await self._managing(request)
        body = parse_body(PolicyIn, await read_json_object(request))
        policy = await self._commands.create(
            access.new_policy_owner(who, body.scope), name=body.name, description=body.description,
            rules=_rules(body.rules), is_active=body.is_active, actor=actor_of(request, who), access=request[ACCESS],
        )
        document = await self._reader.policy(who, policy.policy_id)
        return committed_response(request, document, headers={"Location": f"/v1/policies/{policy.policy_id}"})

    async def replace_policy(self, request: web.Request) -> web.Response:
        """Rules and metadata replaced; bindings kept; ``is_active`` kept unless given (it is state, not content)."""
        who, access = await self._managing(request)
        body = parse_body(PolicyIn, await read_json_object(request))
        changes = PolicyChanges(
            name=body.name, description=body.description, rules=_rules(body.rules),
            is_active=body.is_active if "is_active" in body.model_fields_set else UNSET,
            scope=body.scope if "scope" in body.model_fields_set else UNSET,
        )
        return await self._change(request, changes, who, access)

    async def patch_policy(self, request: web.Request) -> web.Response:
        who, access = await self._managing(request)
        body = parse_body(PolicyPatchIn, await read_json_object(request))
        changes = PolicyChanges(**{
            name: (_rules(body.rules) if name == "rules" and body.rules is not None else getattr(body, name))
            for name in ("name", "description", "rules", "is_active", "scope") if name in body.model_fields_set
        })
        return await self._change(request, changes, who, access)

    async def _change(
        self, request: web.Request, changes: PolicyChanges, who: Caller, access: PolicyAccess
    ) -> web.Response:
        policy_id = _policy_id(request)
        await self._commands.change(policy_id, changes, access, actor_of(request, who), request[ACCESS])
        return json_response(await self._reader.policy(who, policy_id))

    async def delete_policy(self, request: web.Request) -> web.Response:
        who, access = await self._managing(request)
        policy_id = _policy_id(request)
        query = parse_query(DeleteQuery, request)
        removed = await self._commands.delete(
            policy_id, force=query.force, who=access, actor=actor_of(request, who), access=request[ACCESS]
        )
        return json_response({"id": policy_id, "deleted": True, "removed_bindings": removed})

    async def create_binding(self, request: web.Request) -> web.Response:
        who, access = await self._managing(request)
        policy_id = _policy_id(request)
        body = parse_body(BindingIn, await read_json_object(request))
        binding = await self._commands.bind(
            policy_id, identity_type=body.identity_type, identity_id=body.identity_id, expires_at=body.expires_at,
            who=access, actor=actor_of(request, who), access=request[ACCESS],
        )
        return committed_response(
            request, self._reader.binding_document(binding),
            headers={"Location": f"/v1/policies/{policy_id}/bindings/{binding['binding_id']}"},
        )

    async def delete_binding(self, request: web.Request) -> web.Response:
        who, access = await self._managing(request)
        policy_id, binding_id = _policy_id(request), request.match_info["binding_id"]
        request[ACCESS].extra["binding_id"] = binding_id[:64]
        await self._commands.unbind(
            policy_id, binding_id, who=access, actor=actor_of(request, who), access=request[ACCESS]
        )
        return json_response({"id": binding_id, "policy_id": policy_id, "deleted": True})
