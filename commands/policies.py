"""Policy use cases: create, replace or patch, delete, bind and unbind. One command = one transaction, which also
tells ``changed_in_transaction(conn, owner)`` (the composition root raises the owner's authorization generation
there, so every server's cache notices); once it commits, this process's cache is invalidated at once
(``on_change``), so the change holds from the very next request.

Who may change policies (docs/policies.md): an admin role, ``tenant_admin`` for its own tenant's policies,
``partner_admin`` for its partner's too. Otherwise anyone allowed to write policies could bind themselves a policy
granting ``admin`` on ``**``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from commands.actor import Actor
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.errors import AccessDenied, InvalidPolicy, PolicyNotFound
from scaivault.domain.outcomes import Outcome
from scaivault.domain.policies import Policy, policy_stream_id
from scaivault.ids import new_id

T = TypeVar("T")
UNSET: Any = object()  # a PATCH field that was not given
# Called inside a command's transaction with the owner (tenant or partner id) whose policies it changes.
OwnerChanged = Callable[[asyncpg.Connection, str], Awaitable[None]]


@dataclass(frozen=True)
class PolicyOwner:
    """Where a new policy lives: a tenant (``scope`` tenant) or a partner (``scope`` partner)."""

    scope: str
    owner: str
    tenant_id: str | None
    partner_id: str


@dataclass(frozen=True)
class PolicyAccess:
    """Which owners' policies the caller may see (its tenant and that tenant's partner) and change."""

    visible: frozenset[str]
    manageable: frozenset[str]

    @classmethod
    def of(cls, caller: Caller) -> PolicyAccess:
        """Visible: the caller's tenant's policies and its partner's. Manageable: by role (see the module doc)."""
        visible = frozenset(owner for owner in (caller.tenant_id, caller.partner_id) if owner is not None)
        principal, tenant_id = caller.principal, caller.tenant_id
        if principal.is_partner_admin:
            manageable = visible
        elif "tenant_admin" in principal.roles and tenant_id is not None and tenant_id == principal.tenant_id:
            manageable = frozenset({tenant_id})
        else:
            manageable = frozenset()
        return cls(visible=visible, manageable=manageable)

    @classmethod
    def of_manager(cls, caller: Caller) -> PolicyAccess:
        """The caller's access, if it may change any policy at all (``AccessDenied`` otherwise)."""
        access = cls.of(caller)
        if not access.manageable:
            raise AccessDenied("Changing policies needs the tenant_admin or partner_admin role")
        return access

    def new_policy_owner(self, caller: Caller, scope: str) -> PolicyOwner:
        """Where a policy the caller creates with ``scope`` lives, if the caller may manage it there."""
        if scope == "partner":
            owner = PolicyOwner("partner", caller.require_partner(), None, caller.require_partner())
        else:
            tenant_id = caller.require_tenant()
            owner = PolicyOwner("tenant", tenant_id, tenant_id, caller.partner_id or "")
        if owner.owner not in self.manageable:
            raise AccessDenied("Only partner admins may create partner-scoped policies")
        return owner


@dataclass(frozen=True)
class PolicyChanges:
    """New values; UNSET keeps the current one (PATCH). A PUT passes every field."""

    name: Any = UNSET
    description: Any = UNSET
    rules: Any = UNSET
    is_active: Any = UNSET
    scope: Any = UNSET


class PolicyCommands:
    def __init__(
        self,
        runner: UnitOfWorkRunner,
        *,
        changed_in_transaction: OwnerChanged,
        on_change: Callable[[str], None] = lambda owner: None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``changed_in_transaction``: for other servers (they learn of the change when it commits);
        ``on_change``: for this one, right after the commit."""
        self._runner = runner
        self._changed_in_transaction = changed_in_transaction
        self._on_change = on_change
        self._clock = clock

    async def create(
        self, owner: PolicyOwner, *, name: object, description: object, rules: object, is_active: bool, actor: Actor,
        access: AccessRecord | None = None,
    ) -> Policy:
        policy_id = new_id("pol_")

        async def work(uow: UnitOfWork) -> tuple[str, Policy]:
            policy = Policy.create(
                policy_id=policy_id, scope=owner.scope, owner=owner.owner, tenant_id=owner.tenant_id,
                partner_id=owner.partner_id, name=name, description=description, rules=rules, is_active=is_active,
                at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(policy)
            await self._changed_in_transaction(uow.conn, owner.owner)
            record_outcome(access, Outcome.CREATED, policy_id=policy_id)
            return owner.owner, policy

        return await self._run(work, access)

    async def change(
        self, policy_id: str, changes: PolicyChanges, who: PolicyAccess, actor: Actor,
        access: AccessRecord | None = None,
    ) -> Policy:
        async def work(uow: UnitOfWork) -> tuple[str, Policy]:
            policy = await self._load(uow, policy_id, who, access)
            if changes.scope is not UNSET and changes.scope != policy.scope:
                raise InvalidPolicy("A policy's scope cannot change; create a new policy", field="scope")
            policy.update(
                name=policy.name if changes.name is UNSET else changes.name,
                description=policy.description if changes.description is UNSET else changes.description,
                rules=policy.rules if changes.rules is UNSET else changes.rules,
                is_active=policy.is_active if changes.is_active is UNSET else changes.is_active,
                at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(policy)
            await self._changed_in_transaction(uow.conn, policy.owner)
            return policy.owner, policy

        return await self._run(work, access)

    async def delete(
        self, policy_id: str, *, force: bool, who: PolicyAccess, actor: Actor, access: AccessRecord | None = None
    ) -> list[str]:
        async def work(uow: UnitOfWork) -> tuple[str, list[str]]:
            policy = await self._load(uow, policy_id, who, access)
            removed = policy.delete(force=force, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(policy)
            await self._changed_in_transaction(uow.conn, policy.owner)
            if access is not None:
                access.extra["removed_bindings"] = len(removed)
            return policy.owner, removed

        return await self._run(work, access)

    async def bind(
        self, policy_id: str, *, identity_type: object, identity_id: object, expires_at: datetime | None,
        who: PolicyAccess, actor: Actor, access: AccessRecord | None = None,
    ) -> dict[str, Any]:
        binding_id = new_id("bnd_")

        async def work(uow: UnitOfWork) -> tuple[str, dict[str, Any]]:
            policy = await self._load(uow, policy_id, who, access)
            binding = policy.bind(
                binding_id=binding_id, identity_type=identity_type, identity_id=identity_id, expires_at=expires_at,
                at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(policy)
            await self._changed_in_transaction(uow.conn, policy.owner)
            record_outcome(access, Outcome.CREATED, binding_id=binding_id)
            return policy.owner, {**binding, "policy_id": policy_id}

        return await self._run(work, access)

    async def unbind(
        self, policy_id: str, binding_id: str, *, who: PolicyAccess, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(uow: UnitOfWork) -> tuple[str, None]:
            policy = await self._load(uow, policy_id, who, access)
            policy.unbind(binding_id=binding_id, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(policy)
            await self._changed_in_transaction(uow.conn, policy.owner)
            return policy.owner, None

        await self._run(work, access)

    @staticmethod
    async def _load(uow: UnitOfWork, policy_id: str, who: PolicyAccess, access: AccessRecord | None) -> Policy:
        """The policy, if the caller may see it (another owner's policy answers exactly like a missing one), and
        change it."""
        policy = await uow.get(policy_stream_id(policy_id))
        if policy is None or policy.deleted or policy.owner not in who.visible:
            raise PolicyNotFound(policy_id=policy_id[:64])
        if policy.owner not in who.manageable:
            raise AccessDenied(
                "Only partner admins may change partner-scoped policies", policy_id=policy_id
            )
        if access is not None:
            access.extra["policy_id"] = policy_id
        return policy

    async def _run(self, work: Callable[[UnitOfWork], Awaitable[tuple[str, T]]], access: AccessRecord | None) -> T:
        """Run the command; once it has committed, drop this process's cached decisions for the owner."""
        owner, result = await self._runner.run(work, access=access)
        self._on_change(owner)
        return result


def managed_tenant(actor: Actor, what: str) -> str:
    """The tenant whose ``what`` (secret policies, DNS providers, the PKI) the actor changes, if it may: a caller with
    an admin role for it (``AccessDenied`` otherwise). Such settings decide what others' requests get, so changing
    them is an administrator's, as changing access policies is."""
    caller = actor.caller
    if caller is None:
        raise AccessDenied(f"Changes to {what} are made on behalf of a caller")
    tenant_id = caller.require_tenant()
    if tenant_id not in PolicyAccess.of(caller).manageable:
        raise AccessDenied(f"Changing {what} needs the tenant_admin or partner_admin role")
    return tenant_id
