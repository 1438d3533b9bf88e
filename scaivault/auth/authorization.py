"""Authorization for every request: roles first, then the caller's policies, through a cache.

Roles (docs/policies.md): ``partner_admin`` and ``super_admin`` hold every permission in the tenants they may act in
(tenant resolution, ``scaivault/http/context.py``, already confines them to their partner's tenants, or lets
``super_admin`` across partners); ``tenant_admin`` holds every permission in its own tenant. Every other identity
needs a binding. Token scopes are checked by the handlers before this: effective rights are the intersection.

The cache, per (tenant, partner, identity, groups): the caller's bound policies, and for each (path, permission) the
rules that match (glob matching is the costly part). Conditions (IP, MFA, time) are evaluated on every request.
An entry is dropped when a binding it counted expires, and whenever the policies of its tenant or partner change:

- in this process at once: the policy commands call ``invalidate(owner)`` right after they commit, so a revoked
  binding or deleted policy holds from the very next request;
- in other processes: every such change raises the owner's generation (``bump_generation``) in its own transaction,
  and NOTIFYs ``scaivault_authorization`` with the owner's id. Each server drops what it holds of the owner named
  when the NOTIFY arrives, and re-reads the generations of the owners it caches then and at least every 2 s (which
  catches notifications missed while its listener was down); should that sync stall, a request finding the check
  older than 5 s does it itself, or fails closed with 503. A change therefore reaches every server within about 2 s
  (NOTIFY: milliseconds), the workers of one server (``serve --workers N``) included.

The identity mirror counts too (docs/identity.md): an identity it holds in the tenant with no ACTIVE record (a
suspended user) is denied every policy-based permission, whatever binds it or its groups, the token's claimed ones
included (``IdentityStanding``, the mirrored-roles cache: 2 s); the groups that count are the mirror's memberships
plus the token's claimed groups that the mirror does not hold as inactive (``GroupsOf``, cached 2 s at most). Its
changes go the same way as policies': the identity commands call ``bump_generation(conn, tenant)`` in their
transaction and ``invalidate(tenant)`` after committing, and ``invalidate`` drops the mirrored-roles cache of the
tenant as well, so a suspension made on another server counts here as soon as its generation arrives.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from projections.policies.queries import bound_policy_rows
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.database import Queryable
from scaivault.domain.errors import ServiceUnavailable
from scaivault.domain.policies import (
    Candidate,
    CompiledPolicy,
    Decision,
    ListingPlan,
    RequestContext,
    Subject,
    bound_policies,
    candidates,
    compile_binding,
    compile_rules,
    decide,
    plan_listing,
)
from scaivault.domain.secrets import SecretAddress
from scaivault.eventstore.recorder import EventStoreListener

log = logging.getLogger(__name__)

AUTHORIZATION_CHANNEL = "scaivault_authorization"
SYNC_SECONDS = 2.0
MAX_STALENESS_SECONDS = 5.0
# How long mirrored groups are believed without asking again: a backstop should an invalidation ever be missed.
GROUPS_MAX_AGE_SECONDS = 2.0

# (connection or pool, tenant id, identity id, the token's claimed groups) -> the groups that count for the
# identity's group bindings (``projections/identity/queries.py: policy_groups``).
GroupsOf = Callable[[Queryable, str | None, str, Sequence[str]], Awaitable[Iterable[str]]]


class IdentityStanding(Protocol):
    """Whether the identity mirror cuts an identity off (``projections/identity/roles.py: MirroredRoles``)."""

    async def suspended(self, tenant_id: str | None, identity_id: str) -> bool: ...

    def forget(self, tenant_id: str | None = None) -> None: ...


async def bump_generation(conn: asyncpg.Connection, owner: str) -> None:
    """Call inside the transaction of any change that can alter an authorization decision for ``owner`` (a tenant
    or partner id); the NOTIFY is delivered on commit."""
    await conn.execute(
        """INSERT INTO scaivault_authorization_generations (owner, generation) VALUES ($1, 1)
           ON CONFLICT (owner) DO UPDATE SET generation = scaivault_authorization_generations.generation + 1""",
        owner,
    )
    await conn.execute("SELECT pg_notify($1, $2)", AUTHORIZATION_CHANNEL, owner)


async def read_generations(conn: Queryable, owners: Sequence[str]) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT owner, generation FROM scaivault_authorization_generations WHERE owner = ANY($1::text[])", list(owners)
    )
    found = {row["owner"]: row["generation"] for row in rows}
    return {owner: found.get(owner, 0) for owner in owners}


def role_decision(principal: Principal, tenant_id: str | None, path: str, permission: str) -> Decision | None:
    """Allowed by a role, without any policy; None when no role applies."""
    for role in ("super_admin", "partner_admin"):
        if role in principal.roles:
            return Decision(True, path, permission, decided_by=f"role:{role}")
    if "tenant_admin" in principal.roles and tenant_id is not None and tenant_id == principal.tenant_id:
        return Decision(True, path, permission, decided_by="role:tenant_admin")
    return None


def compile_bound_rows(rows: Iterable[Any]) -> tuple[list[CompiledPolicy], datetime | None]:
    """Rows of ``bound_policy_rows`` -> the policies (by id), and when the first of their bindings expires."""
    by_policy: dict[str, tuple[Any, list[Any]]] = {}
    for row in rows:
        by_policy.setdefault(row["policy_id"], (row, []))[1].append(row)
    policies = [
        CompiledPolicy(policy_id, first["name"], True, compile_rules(first["rules"]),
                       tuple(compile_binding(row) for row in bindings))
        for policy_id, (first, bindings) in sorted(by_policy.items())
    ]
    expiries = [row["expires_at"] for _, bindings in by_policy.values() for row in bindings if row["expires_at"]]
    return policies, min(expiries, default=None)


@dataclass
class _CallerEntry:
    owners: tuple[str, ...]
    tenant_id: str | None
    policies: list[CompiledPolicy]
    valid_until: datetime | None  # the first expiry among the bindings counted
    candidates: dict[tuple[str, str], tuple[Candidate, ...]] = field(default_factory=dict)


class Authorizer:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        groups_of: GroupsOf | None = None,
        standing: IdentityStanding | None = None,
        max_staleness: float = MAX_STALENESS_SECONDS,
        groups_max_age: float = GROUPS_MAX_AGE_SECONDS,
        cache_size: int = 10_000,
        decisions_per_caller: int = 4096,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        """``groups_of``: the groups that count, from the identity mirror and the token's ``groups`` claim (default:
        the token's groups only); ``standing``: who the mirror cuts off (default: no one)."""
        self._pool = pool
        self._groups_of = groups_of
        self._standing = standing
        self._max_staleness = max_staleness
        self._groups_max_age = groups_max_age
        self._cache_size = cache_size
        self._decisions_per_caller = decisions_per_caller
        self._monotonic = monotonic
        self._callers: OrderedDict[tuple[Any, ...], _CallerEntry] = OrderedDict()
        # (tenant, identity, claimed groups) -> (the groups that count, until when: monotonic)
        self._groups: OrderedDict[tuple[str, str, tuple[str, ...]], tuple[frozenset[str], float]] = OrderedDict()
        self._epochs: dict[str, int] = {}  # raised by every invalidation: a load that straddles one is not kept
        self._generations: dict[str, int] = {}  # per owner, as last seen in the database
        self._synced_at = float("-inf")
        self._sync_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"<Authorizer callers={len(self._callers)} owners={len(self._generations)}>"

    # ---- decisions -----------------------------------------------------------------------------------------------

    async def decide(
        self, principal: Principal, tenant_id: str | None, partner_id: str | None, path: str, permission: str,
        context: RequestContext,
    ) -> Decision:
        """May the caller exercise ``permission`` on the canonical ``path`` in this tenant?"""
        by_role = role_decision(principal, tenant_id, path, permission)
        if by_role is not None:
            return by_role
        if await self._cut_off(tenant_id, principal.identity_id):
            return decide((), path, permission, context)
        entry = await self._entry(principal, tenant_id, partner_id, context.at)
        key = (path, permission)
        found = entry.candidates.get(key)
        if found is None:
            found = candidates(entry.policies, path, permission)
            if len(entry.candidates) >= self._decisions_per_caller:
                entry.candidates.clear()
            entry.candidates[key] = found
        return decide(found, path, permission, context)

    async def require(
        self, principal: Principal, tenant_id: str | None, partner_id: str | None, path: str, permission: str,
        context: RequestContext,
    ) -> Decision:
        decision = await self.decide(principal, tenant_id, partner_id, path, permission, context)
        if not decision.allowed:
            raise decision.error()
        return decision

    async def require_on_secret(self, caller: Caller, address: SecretAddress, permission: str) -> None:
        """Raise the policy decision's error unless the caller may exercise ``permission`` on the secret. Partner
        secrets keep the spec's own rule instead (docs/policies.md): readable by every identity of the partner's
        tenants, changed only by partner admins (which the caller of this checks)."""
        if not address.partner_owned:
            await self.require(
                caller.principal, caller.tenant_id, caller.partner_id, address.path, permission, caller.context()
            )

    async def listing(
        self, principal: Principal, tenant_id: str | None, partner_id: str | None, prefix: str, context: RequestContext
    ) -> ListingPlan | None:
        """What the caller may list under ``prefix`` (None: everything, by role); raises when nothing could be."""
        if role_decision(principal, tenant_id, prefix, "list") is not None:
            return None
        if await self._cut_off(tenant_id, principal.identity_id):
            raise decide((), prefix, "list", context).error()
        entry = await self._entry(principal, tenant_id, partner_id, context.at)
        plan = plan_listing(entry.policies, prefix, context)
        if isinstance(plan, Decision):
            raise plan.error()
        return plan

    async def dry_run(
        self, tenant_id: str | None, partner_id: str | None, subject: Subject, path: str, permission: str,
        context: RequestContext,
    ) -> Decision:
        """The policy decision for any identity at any time, on the policies read fresh (no cache), for
        POST /v1/policies/test. An identity the mirror cuts off is denied as if nothing bound it, and groups it holds
        as inactive (the subject itself, when it is one) count for nothing."""
        if await self._cut_off(tenant_id, subject.identity_id):
            return decide((), path, permission, context)
        groups = await self.groups(tenant_id, subject.identity_id, sorted(subject.groups))
        subject = Subject.of(subject.identity_id, groups)
        owners = _owners(tenant_id, partner_id)
        rows = await bound_policy_rows(self._pool, owners, [subject.identity_id, *subject.groups], at=context.at)
        policies, _ = compile_bound_rows(rows)
        found = candidates(bound_policies(policies, subject, context.at), path, permission)
        return decide(found, path, permission, context)

    async def groups(self, tenant_id: str | None, identity_id: str, token_groups: Iterable[str] = ()) -> frozenset[str]:
        """The identity's groups that count: the identity mirror's memberships, and the token's claim less the groups
        the mirror holds as inactive (``GroupsOf``; cached for at most ``groups_max_age``)."""
        claimed = tuple(token_groups)
        if self._groups_of is None or tenant_id is None:
            return frozenset(claimed)
        key = (tenant_id, identity_id, claimed)
        now = self._monotonic()
        cached = self._groups.get(key)
        if cached is not None and now < cached[1]:
            return cached[0]
        epoch = self._epochs.get(tenant_id, 0)
        groups = frozenset(await self._groups_of(self._pool, tenant_id, identity_id, claimed))
        if self._epochs.get(tenant_id, 0) == epoch:
            self._groups[key] = (groups, now + self._groups_max_age)
            self._groups.move_to_end(key)
            if len(self._groups) > self._cache_size:
                self._groups.popitem(last=False)
        return groups

    async def _cut_off(self, tenant_id: str | None, identity_id: str) -> bool:
        return self._standing is not None and await self._standing.suspended(tenant_id, identity_id)

    async def _entry(
        self, principal: Principal, tenant_id: str | None, partner_id: str | None, at: datetime
    ) -> _CallerEntry:
        await self._ensure_fresh()
        # Keyed by the groups that count now, so an entry outlives no change of them (``groups`` asks the mirror
        # again after ``groups_max_age``, whatever invalidations said).
        groups = await self.groups(tenant_id, principal.identity_id, principal.groups)
        key = (tenant_id, partner_id, principal.identity_id, groups)
        entry = self._callers.get(key)
        if entry is not None and (entry.valid_until is None or at < entry.valid_until):
            self._callers.move_to_end(key)
            return entry
        subject = Subject.of(principal.identity_id, groups)
        owners = _owners(tenant_id, partner_id)
        epochs = [self._epochs.get(owner, 0) for owner in owners]
        async with self._pool.acquire() as conn:
            # Generations first: a change committing in between makes the next sync drop this entry (a reload too
            # many), never keep it stale.
            generations = await read_generations(conn, owners)
            rows = await bound_policy_rows(conn, owners, [subject.identity_id, *subject.groups], at=at)
        policies, valid_until = compile_bound_rows(rows)
        entry = _CallerEntry(owners, tenant_id, bound_policies(policies, subject, at), valid_until)
        if [self._epochs.get(owner, 0) for owner in owners] == epochs:
            for owner, generation in generations.items():
                self._generations.setdefault(owner, generation)
            self._callers[key] = entry
            if len(self._callers) > self._cache_size:
                self._callers.popitem(last=False)
        return entry

    # ---- coherence -----------------------------------------------------------------------------------------------

    def invalidate(self, owner: str) -> None:
        """Forget every cached decision, mirrored group and mirrored standing for a tenant or partner."""
        self._epochs[owner] = self._epochs.get(owner, 0) + 1
        for key in [key for key, entry in self._callers.items() if owner in entry.owners]:
            del self._callers[key]
        for key in [key for key in self._groups if key[0] == owner]:
            del self._groups[key]
        if self._standing is not None:
            self._standing.forget(owner)

    async def sync(self) -> int:
        """Compare the cached owners' generations with the database; drop what changed. Returns owners dropped."""
        owners = list(self._generations)
        changed = 0
        if owners:
            for owner, generation in (await read_generations(self._pool, owners)).items():
                if self._generations.get(owner) != generation:
                    self.invalidate(owner)
                    self._generations[owner] = generation
                    changed += 1
        self._synced_at = self._monotonic()
        return changed

    async def _ensure_fresh(self) -> None:
        if self._monotonic() - self._synced_at < self._max_staleness:
            return
        async with self._sync_lock:
            if self._monotonic() - self._synced_at < self._max_staleness:
                return
            try:
                await self.sync()
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.error("authorization cache cannot be checked for changes", extra={"error": type(exc).__name__})
                raise ServiceUnavailable("Authorization data is temporarily unavailable") from None

    async def run_sync(self, dsn: str, poll_seconds: float = SYNC_SECONDS) -> None:
        """Background: sync when a change is NOTIFYed, and every ``poll_seconds`` whatever happens. The NOTIFY names
        the owner that changed (sent on commit): what this process holds of it is dropped at once, also when it
        tracks no generation of that owner (it cached only mirrored roles there, its callers being admins), which
        the sync alone would leave to the caches' own 2 s."""
        async with EventStoreListener(dsn, channel=AUTHORIZATION_CHANNEL, keep_payloads=True) as listener:
            while True:
                for owner in listener.take_payloads():
                    self.invalidate(owner)
                try:
                    await self.sync()
                except Exception as exc:  # noqa: BLE001 - never let the sync die: requests would fall back to syncing inline
                    log.warning("authorization sync failed: %s", type(exc).__name__)
                await listener.wait(poll_seconds)


def _owners(tenant_id: str | None, partner_id: str | None) -> tuple[str, ...]:
    return tuple(owner for owner in (tenant_id, partner_id) if owner is not None)
