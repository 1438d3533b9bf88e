"""Secret policy use cases: create, replace or patch, delete. One command = one transaction.

Secret policies belong to a tenant. Changing one needs what changing an access policy needs (docs/secret-policies.md):
an admin role for the tenant (``tenant_admin`` of it, or a partner admin), because a recipe decides the values
auto-generated rotations write; whoever could set a ``static`` field would know every secret rotated under it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from commands.actor import Actor
from commands.policies import managed_tenant
from commands.ports import SecretPolicyLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.domain.errors import SecretPolicyNotFound, ValidationFailed
from scaivault.domain.generators import violations
from scaivault.domain.outcomes import Outcome
from scaivault.domain.secret_policies import SecretPolicy, SecretPolicyUsers, secret_policy_stream_id
from scaivault.ids import new_id

UNSET: Any = object()  # a PATCH field that was not given


@dataclass(frozen=True)
class NewSecretPolicy:
    name: object
    policy_type: object
    fields: object
    description: object = None
    is_active: object = True


@dataclass(frozen=True)
class SecretPolicyChanges:
    """New values; UNSET keeps the current one (PATCH). A PUT passes every field it replaces."""

    name: Any = UNSET
    policy_type: Any = UNSET
    description: Any = UNSET
    fields: Any = UNSET
    is_active: Any = UNSET




async def enforce_secret_policy(
    lookup: SecretPolicyLookup, conn: asyncpg.Connection, owner: str, secret_policy_id: str | None,
    data: Mapping[str, Any] | None, *, linking: bool,
) -> None:
    """What a secret write (``data``) or link (``data`` None) must satisfy, in the command's transaction.

    ``linking``: the request names the policy, which must then be one of the owner's active secret policies
    (``secret_policy_not_found`` otherwise). A secret already linked to a policy since deleted or deactivated is
    written unchecked: there is no recipe left to check against. A value breaking the recipe is 422
    ``validation_error``: ``details.fields`` lists ``{"field": "data.<key>", "message": <rule>}`` as every
    validation error does, ``details.violations`` maps each key to its rule."""
    if secret_policy_id is None:
        return
    recipe = await lookup.active_recipe(conn, owner, secret_policy_id)
    if recipe is None:
        if linking:
            raise SecretPolicyNotFound("No active secret policy with that id", secret_policy_id=secret_policy_id[:64])
        return
    if data is None:
        return
    # Checking key pairs and bcrypt hashes takes CPU time the event loop must not wait on.
    problems = await asyncio.to_thread(violations, recipe, data)
    if problems:
        raise ValidationFailed(
            "The value does not satisfy the secret's secret policy",
            secret_policy_id=secret_policy_id,
            fields=[{"field": f"data.{key}", "message": rule} for key, rule in problems.items()],
            violations=problems,
        )


class SecretPolicyCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, lookup: SecretPolicyLookup, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._runner = runner
        self._lookup = lookup
        self._clock = clock

    async def create(self, new: NewSecretPolicy, actor: Actor, access: AccessRecord | None = None) -> SecretPolicy:
        tenant_id = managed_tenant(actor, "secret policies")
        policy_id = new_id("sp_")
        partner_id = actor.caller.partner_id if actor.caller is not None else None

        async def work(uow: UnitOfWork) -> SecretPolicy:
            policy = SecretPolicy.create(
                policy_id=policy_id, owner=tenant_id, tenant_id=tenant_id, partner_id=partner_id or "",
                name=new.name, policy_type=new.policy_type, description=new.description, fields=new.fields,
                is_active=new.is_active, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(policy)
            record_outcome(access, Outcome.CREATED, secret_policy_id=policy_id)
            return policy

        return await self._runner.run(work, access=access)

    async def change(
        self, policy_id: str, changes: SecretPolicyChanges, actor: Actor, access: AccessRecord | None = None
    ) -> SecretPolicy:
        tenant_id = managed_tenant(actor, "secret policies")

        async def work(uow: UnitOfWork) -> SecretPolicy:
            policy = await self._load(uow, tenant_id, policy_id)

            def new(name: str) -> Any:
                value = getattr(changes, name)
                return getattr(policy, name) if value is UNSET else value

            policy.update(
                name=new("name"), policy_type=new("policy_type"), description=new("description"),
                fields=new("fields"), is_active=new("is_active"), at=self._clock(), actor=actor.identity_id,
                request_id=actor.request_id,
            )
            uow.add(policy)
            return policy

        return await self._runner.run(work, access=access)

    async def delete(
        self, policy_id: str, *, force: bool, actor: Actor, access: AccessRecord | None = None
    ) -> SecretPolicyUsers:
        """Delete the policy; returns what still used it (anything only with ``force``)."""
        tenant_id = managed_tenant(actor, "secret policies")

        async def work(uow: UnitOfWork) -> SecretPolicyUsers:
            policy = await self._load(uow, tenant_id, policy_id)
            users = SecretPolicyUsers(
                secret_count=await self._lookup.linked_secrets(uow.conn, tenant_id, policy_id),
                rotation_policy_ids=tuple(await self._lookup.rotation_policies_using(uow.conn, tenant_id, policy_id)),
            )
            policy.delete(users=users, force=force, at=self._clock(), actor=actor.identity_id,
                          request_id=actor.request_id)
            uow.add(policy)
            if access is not None:
                access.extra["linked_secrets"] = users.secret_count
                access.extra["linked_rotation_policies"] = len(users.rotation_policy_ids)
            return users

        return await self._runner.run(work, access=access)

    @staticmethod
    async def _load(uow: UnitOfWork, tenant_id: str, policy_id: str) -> SecretPolicy:
        """The tenant's policy; another tenant's answers exactly like a missing one."""
        policy = await uow.get(secret_policy_stream_id(policy_id))
        if policy is None or policy.deleted or policy.owner != tenant_id:
            raise SecretPolicyNotFound(secret_policy_id=policy_id[:64])
        return policy
