"""Identity mirror use cases, each one transaction through the unit of work: managing users, groups, memberships
and roles through ScaiVault (API, CLI), and applying what ScaiKey reports (sync runs, webhook deliveries).

Who may change a user: an actor acting through ScaiVault passes its (effective) roles; its reach is the rank of the
strongest (``reach_of``). It changes only users within that reach and removes only records whose authority it
reaches (``check_within_reach``); every user event it causes carries its reach as ``authority``. ScaiKey and the
operator (the CLI, passing the roles of a super_admin) act with the top authority.

Policy evaluation caches group memberships and the mirror's records (roles, and whether a user is cut off), in
every server. Every change that can alter a decision counts: a user or group created, changed (status, name, e-mail
address), removed, a membership, a role. A command that made one calls
``authorization_changed_in_transaction(conn, tenant_id)`` inside its transaction (for a change other servers learn
of when it commits), then ``on_authorization_changed(tenant_id)`` (the authorizer's cache) and
``on_roles_changed(tenant_id)`` (the mirrored-roles cache) after the commit. All default to doing nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from commands.actor import Actor
from commands.ports import IdentityLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.domain.errors import IdentityExists, IdentityNotFound
from scaivault.domain.identities import (
    SCAIKEY,
    SCAIVAULT,
    TOP_AUTHORITY,
    Group,
    IdentitySync,
    MirroredPartner,
    MirroredTenant,
    ReportedState,
    User,
    check_membership_change,
    check_role_change,
    check_within_reach,
    group_stream_id,
    identity_not_found,
    partner_stream_id,
    plan_tenant_sync,
    principal_ref,
    reach_of,
    sync_stream_id,
    tenant_stream_id,
    user_stream_id,
)
from scaivault.domain.outcomes import Outcome
from scaivault.ids import new_id

T = TypeVar("T")
TenantHook = Callable[[str], None]
TransactionHook = Callable[[asyncpg.Connection, str], Awaitable[None]]


def no_tenant_hook(tenant_id: str) -> None:
    """The default hook: nothing to invalidate."""


async def no_transaction_hook(conn: asyncpg.Connection, tenant_id: str) -> None:
    """The default transactional hook: nothing to record."""


def new_user_id() -> str:
    return new_id("usr_")


def new_group_id() -> str:
    return new_id("grp_")


def new_sync_id() -> str:
    return new_id("syn_")


def _is_self(actor: Actor, user: User) -> bool:
    return actor.identity_id.lower() in (principal_ref(user.email), user.user_id.lower())


@dataclass
class _Changes:
    """One transaction's view of one tenant's users and groups: each aggregate loaded once, changes counted."""

    uow: UnitOfWork
    lookup: IdentityLookup
    tenant_id: str
    source: str
    at: datetime
    actor: Actor
    reach: int
    counts: Counter[str] = field(default_factory=Counter)
    users: dict[str, User | None] = field(default_factory=dict)
    groups: dict[str, Group | None] = field(default_factory=dict)

    @property
    def stamp(self) -> dict[str, Any]:
        actor = self.actor
        return {"source": self.source, "at": self.at, "actor": actor.identity_id, "request_id": actor.request_id}

    @property
    def user_stamp(self) -> dict[str, Any]:
        """A user's events also carry the authority they were made with."""
        return {**self.stamp, "authority": self.reach}

    async def user(self, user_id: str, *, live: bool = False) -> User | None:
        return await self._load(self.users, user_id, user_stream_id(self.tenant_id, user_id), live)

    async def group(self, group_id: str, *, live: bool = False) -> Group | None:
        return await self._load(self.groups, group_id, group_stream_id(self.tenant_id, group_id), live)

    async def _load(self, loaded: dict[str, Any], key: str, stream_id: UUID, live: bool) -> Any:
        """Load once per transaction; ``live``: None for a removed user or group too."""
        if key not in loaded:
            loaded[key] = await self.uow.get(stream_id)
        found = loaded[key]
        return None if found is None or (live and found.removed) else found

    async def write_user(self, user_id: str, profile: dict[str, Any]) -> None:
        user, created = await self.user(user_id), False
        if user is None:
            user, created = User(tenant_id=self.tenant_id, user_id=user_id, profile=profile, **self.user_stamp), True
            self.users[user_id] = user
        self._written("users", user, profile, self.user_stamp, created=created)

    async def write_group(self, group_id: str, profile: dict[str, Any]) -> None:
        group, created = await self.group(group_id), False
        if group is None:
            group, created = Group(tenant_id=self.tenant_id, group_id=group_id, profile=profile, **self.stamp), True
            self.groups[group_id] = group
        self._written("groups", group, profile, self.stamp, created=created)

    def _written(
        self, kind: str, aggregate: User | Group, profile: dict[str, Any], stamp: dict[str, Any], *, created: bool
    ) -> None:
        """Count a creation, or set the profile of an existing one (counting a change); keep it for the commit."""
        if created:
            self.counts[f"{kind}_created"] += 1
        elif aggregate.update(profile=profile, **stamp):
            self.counts[f"{kind}_updated"] += 1
        self.uow.add(aggregate)

    def _kept(self, counter: str, aggregate: User | Group, changed: bool) -> bool:
        """Count a change and keep its aggregate for the commit; an aggregate that did not change is left alone."""
        if changed:
            self.counts[counter] += 1
            self.uow.add(aggregate)
        return changed

    async def set_roles(self, user: User, roles: list[str]) -> bool:
        return self._kept("roles_changed", user, user.set_roles(roles=roles, **self.user_stamp))

    async def add_member(self, group: Group, user_id: str) -> bool:
        return self._kept("memberships_added", group, group.add_member(user_id=user_id, **self.stamp))

    async def remove_member(self, group: Group, user_id: str) -> bool:
        return self._kept("memberships_removed", group, group.remove_member(user_id=user_id, **self.stamp))

    async def remove_user(self, user: User) -> None:
        """The user and, in the same transaction, every membership it had."""
        for group_id in await self.lookup.user_group_ids(self.uow.conn, self.tenant_id, user.user_id):
            group = await self.group(group_id, live=True)
            if group is not None:
                await self.remove_member(group, user.user_id)
        self._kept("users_removed", user, user.remove(**self.user_stamp))

    async def remove_group(self, group: Group) -> None:
        members = len(group.members)
        if self._kept("groups_removed", group, group.remove(**self.stamp)):
            self.counts["memberships_removed"] += members

    async def existing_user(self, user_id: str) -> User:
        user = await self.user(user_id, live=True)
        if user is None:  # another tenant's user is another stream: it answers exactly like a missing one
            raise identity_not_found("user", user_id)
        return user

    async def existing_group(self, group_id: str) -> Group:
        group = await self.group(group_id, live=True)
        if group is None:
            raise identity_not_found("group", group_id)
        return group

    def check_reach(self, user: User, *, whole_record: bool) -> None:
        check_within_reach(
            actor_reach=self.reach, roles=user.roles, authority=user.authority, whole_record=whole_record
        )

    @property
    def authorization_changed(self) -> bool:
        """Could a decision differ now? Any user, group, membership or role counted (a group renamed changes what
        a ``group:<name>`` binding names; a user suspended loses everything)."""
        return any(self.counts[counter] for counter in _AUTHORIZATION_COUNTERS)


_AUTHORIZATION_COUNTERS = (
    "users_created", "users_updated", "users_removed", "groups_created", "groups_updated", "groups_removed",
    "memberships_added", "memberships_removed", "roles_changed",
)


class IdentityTransaction:
    """One transaction of identity changes, in one tenant or several (a ScaiKey delivery may register a tenant and
    mirror it): its unit of work, who acts, from where (``source``) and with what reach."""

    def __init__(
        self, uow: UnitOfWork, lookup: IdentityLookup, *, source: str, at: datetime, actor: Actor, reach: int
    ) -> None:
        self.uow = uow
        self._lookup = lookup
        self._source = source
        self._at = at
        self._actor = actor
        self._reach = reach
        self.tenants: dict[str, _Changes] = {}

    def tenant(self, tenant_id: str) -> _Changes:
        if tenant_id not in self.tenants:
            self.tenants[tenant_id] = _Changes(
                self.uow, self._lookup, tenant_id, self._source, self._at, self._actor, self._reach
            )
        return self.tenants[tenant_id]

    async def mirror_partner(self, partner_id: str, profile: dict[str, Any], *, sync_id: str | None = None) -> bool:
        """Record ScaiKey's view of a partner; with ``sync_id``, also that the sync confirmed it."""
        actor, at = self._actor.identity_id, self._at
        partner = await self.uow.get(partner_stream_id(partner_id))
        if partner is None:
            partner, changed = MirroredPartner(partner_id=partner_id, profile=profile, at=at, actor=actor), True
        else:
            changed = partner.update(profile=profile, at=at, actor=actor)
        if sync_id is not None:
            partner.synced(sync_id=sync_id, at=at)
        self.uow.add(partner)
        return changed

    async def mirror_tenant(
        self, tenant_id: str, partner_id: str, profile: dict[str, Any], *, sync_id: str | None = None
    ) -> None:
        actor, at = self._actor.identity_id, self._at
        mirrored = await self.uow.get(tenant_stream_id(tenant_id))
        if mirrored is None:
            mirrored = MirroredTenant(tenant_id=tenant_id, partner_id=partner_id, profile=profile, at=at, actor=actor)
        else:
            mirrored.update(profile=profile, at=at, actor=actor)
        if sync_id is not None:
            mirrored.synced(sync_id=sync_id, at=at)
        self.uow.add(mirrored)

    async def apply_report(
        self,
        tenant_id: str,
        reported: ReportedState,
        *,
        complete: bool,
        tenant: tuple[str, dict[str, Any]] | None = None,
        sync_id: str | None = None,
    ) -> Counter[str]:
        """Bring the tenant's mirror to what ScaiKey reports (see ``plan_tenant_sync``); with ``tenant`` (partner
        id, profile) also ScaiKey's view of the tenant, and with ``sync_id`` the sync's mark."""
        changes = self.tenant(tenant_id)
        if tenant is not None:
            await self.mirror_tenant(tenant_id, tenant[0], tenant[1], sync_id=sync_id)
        mirror = await self._lookup.scaikey_state(self.uow.conn, tenant_id)
        plan = plan_tenant_sync(mirror, reported, complete=complete)
        for group_id, profile in plan.groups_to_write.items():
            await changes.write_group(group_id, profile)
        for user_id, profile in plan.users_to_write.items():
            await changes.write_user(user_id, profile)
        for user_id, roles in plan.roles_to_write.items():
            user = await changes.user(user_id, live=True)
            if user is not None:
                await changes.set_roles(user, roles)
        for group_id, user_id in plan.members_to_remove:
            group = await changes.group(group_id, live=True)
            if group is not None:
                await changes.remove_member(group, user_id)
        await self.remove_reported(tenant_id, user_ids=plan.users_to_remove, group_ids=plan.groups_to_remove)
        for group_id, user_id in plan.members_to_add:
            group = await changes.group(group_id, live=True)
            if group is not None and await changes.user(user_id, live=True) is not None:
                await changes.add_member(group, user_id)
        return changes.counts

    async def remove_reported(
        self, tenant_id: str, *, user_ids: Iterable[str] = (), group_ids: Iterable[str] = ()
    ) -> Counter[str]:
        """ScaiKey says these are gone; those the mirror does not hold are ignored (deliveries may repeat)."""
        changes = self.tenant(tenant_id)
        for user_id in user_ids:
            user = await changes.user(user_id, live=True)
            if user is not None:
                await changes.remove_user(user)
        for group_id in group_ids:
            group = await changes.group(group_id, live=True)
            if group is not None:
                await changes.remove_group(group)
        return changes.counts

    async def mirror_membership(self, tenant_id: str, group_id: str, user_id: str, *, adding: bool) -> bool:
        """ScaiKey added (or removed) a membership; both must exist in the tenant (else ``identity_not_found``)."""
        changes = self.tenant(tenant_id)
        group, user = await changes.existing_group(group_id), await changes.existing_user(user_id)
        if adding:
            return await changes.add_member(group, user.user_id)
        return await changes.remove_member(group, user.user_id)

    async def before_commit(self, authorization_changed: TransactionHook) -> None:
        for tenant_id, changes in self.tenants.items():
            if changes.authorization_changed:
                await authorization_changed(self.uow.conn, tenant_id)


@dataclass(frozen=True)
class _Creation:
    """A user or a group created through ScaiVault: its name (``name_field`` of its profile) is unique in the
    tenant."""

    name: str
    name_field: str
    name_taken: Callable[[IdentityLookup, asyncpg.Connection, str, str], Awaitable[bool]]
    name_taken_message: str
    load: Callable[[_Changes, str], Awaitable[Any]]
    write: Callable[[_Changes, str, dict[str, Any]], Awaitable[None]]


_USER = _Creation(
    "user", "email", lambda lookup, conn, tenant_id, email: lookup.email_taken(conn, tenant_id, email),
    "A user with that e-mail address already exists in this tenant", _Changes.user, _Changes.write_user,
)
_GROUP = _Creation(
    "group", "name", lambda lookup, conn, tenant_id, name: lookup.group_name_taken(conn, tenant_id, name),
    "A group with that name already exists in this tenant", _Changes.group, _Changes.write_group,
)


class IdentityCommands:
    def __init__(
        self,
        runner: UnitOfWorkRunner,
        lookup: IdentityLookup,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_authorization_changed: TenantHook = no_tenant_hook,
        authorization_changed_in_transaction: TransactionHook = no_transaction_hook,
        on_roles_changed: TenantHook = no_tenant_hook,
    ) -> None:
        self._runner = runner
        self._lookup = lookup
        self._clock = clock
        self.on_authorization_changed = on_authorization_changed
        self.authorization_changed_in_transaction = authorization_changed_in_transaction
        self.on_roles_changed = on_roles_changed

    async def _transaction(
        self,
        source: str,
        actor: Actor,
        reach: int,
        work: Callable[[IdentityTransaction], Awaitable[T]],
        access: AccessRecord | None = None,
    ) -> tuple[T, IdentityTransaction]:
        """Run ``work`` in one transaction, then tell the hooks what changed (only once it is committed)."""
        attempts: list[IdentityTransaction] = []

        async def transaction(uow: UnitOfWork) -> T:
            attempts.append(
                IdentityTransaction(uow, self._lookup, source=source, at=self._clock(), actor=actor, reach=reach)
            )
            result = await work(attempts[-1])
            await attempts[-1].before_commit(self.authorization_changed_in_transaction)
            return result

        result = await self._runner.run(transaction, access=access)
        done = attempts[-1]  # the attempt that committed (the runner retries a conflicting one from scratch)
        for tenant_id, changes in done.tenants.items():
            if changes.authorization_changed:
                self.on_roles_changed(tenant_id)
                self.on_authorization_changed(tenant_id)
        return result, done

    async def _in_tenant(
        self,
        tenant_id: str,
        actor: Actor,
        actor_roles: frozenset[str],
        work: Callable[[_Changes], Awaitable[T]],
        access: AccessRecord | None,
    ) -> T:
        """A change made through ScaiVault (the API or the CLI) in one tenant, with the reach of ``actor_roles``."""
        result, _ = await self._transaction(
            SCAIVAULT, actor, reach_of(actor_roles), lambda tx: work(tx.tenant(tenant_id)), access
        )
        return result

    async def reported(
        self, work: Callable[[IdentityTransaction], Awaitable[T]], actor: Actor, *, access: AccessRecord | None = None
    ) -> T:
        """Apply what ScaiKey reports (``work``, over any tenants), with ScaiKey's top authority, in one
        transaction: whatever else ``work`` writes through ``IdentityTransaction.uow`` (a delivery's claim, a
        tenant's registration) commits with it or not at all."""
        return (await self._transaction(SCAIKEY, actor, TOP_AUTHORITY, work, access))[0]

    # --- managed through ScaiVault ------------------------------------------------------------------------------

    async def create_user(
        self,
        tenant_id: str,
        profile: dict[str, Any],
        actor: Actor,
        access: AccessRecord | None = None,
        *,
        actor_roles: frozenset[str],
    ) -> str:
        """The new user's record has the actor's authority: it speaks for the token roles up to the actor's reach,
        so creating a record for a stronger administrator's address takes nothing from it."""
        return await self._create(_USER, tenant_id, new_user_id(), profile, actor, actor_roles, access)

    async def create_group(
        self, tenant_id: str, profile: dict[str, Any], actor: Actor, access: AccessRecord | None = None
    ) -> str:
        return await self._create(_GROUP, tenant_id, new_group_id(), profile, actor, frozenset(), access)

    async def _create(
        self,
        kind: _Creation,
        tenant_id: str,
        identity_id: str,
        profile: dict[str, Any],
        actor: Actor,
        actor_roles: frozenset[str],
        access: AccessRecord | None,
    ) -> str:
        name = profile[kind.name_field]

        async def work(changes: _Changes) -> str:
            await kind.load(changes, identity_id)  # joins the read-model writers before the name check below
            await _lock_name(changes.uow, tenant_id, kind.name, name)
            if await kind.name_taken(self._lookup, changes.uow.conn, tenant_id, name):
                raise IdentityExists(kind.name_taken_message)
            await kind.write(changes, identity_id, profile)
            record_outcome(access, Outcome.CREATED)
            return identity_id

        return await self._in_tenant(tenant_id, actor, actor_roles, work, access)

    async def remove_user(
        self,
        tenant_id: str,
        user_id: str,
        actor: Actor,
        access: AccessRecord | None = None,
        *,
        actor_roles: frozenset[str],
    ) -> None:
        """Removing a record undoes all its author decided about the user's token roles: only an actor that
        reaches the record's authority may (``check_within_reach``)."""

        async def work(changes: _Changes) -> None:
            user = await changes.existing_user(user_id)
            changes.check_reach(user, whole_record=True)
            await changes.remove_user(user)
            record_outcome(access, Outcome.REMOVED)

        await self._in_tenant(tenant_id, actor, actor_roles, work, access)

    async def remove_group(
        self, tenant_id: str, group_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(changes: _Changes) -> None:
            await changes.remove_group(await changes.existing_group(group_id))
            record_outcome(access, Outcome.REMOVED)

        await self._in_tenant(tenant_id, actor, frozenset(), work, access)

    async def set_roles(
        self,
        tenant_id: str,
        user_id: str,
        roles: list[str],
        actor: Actor,
        *,
        changer_roles: frozenset[str],
        access: AccessRecord | None = None,
    ) -> list[str]:
        """Replace a user's roles under the spec's rules (``check_role_change``) and within the changer's reach,
        judged against the user as it is in this same transaction. The CLI passes a super_admin's roles: an
        operator with the database is above the rules the API enforces."""

        async def work(changes: _Changes) -> list[str]:
            user = await changes.existing_user(user_id)
            check_role_change(
                changer_roles=changer_roles, changing_self=_is_self(actor, user), current=user.roles, requested=roles
            )
            changes.check_reach(user, whole_record=False)
            await changes.set_roles(user, roles)
            return list(user.roles)

        return await self._in_tenant(tenant_id, actor, changer_roles, work, access)

    async def change_membership(
        self,
        tenant_id: str,
        group_id: str,
        user_id: str,
        actor: Actor,
        *,
        adding: bool,
        actor_roles: frozenset[str],
        access: AccessRecord | None = None,
    ) -> bool:
        """Add (or remove) a user to (from) a group. Adding: False when the user was a member already. Removing a
        user who is not a member is ``identity_not_found`` (nothing is committed). Both must exist in the tenant; no
        one adds themselves, and the user must be within the actor's reach."""

        async def work(changes: _Changes) -> bool:
            group = await changes.existing_group(group_id)
            user = await changes.existing_user(user_id)
            check_membership_change(adding=adding, changing_self=_is_self(actor, user))
            changes.check_reach(user, whole_record=False)
            if adding:
                added = await changes.add_member(group, user.user_id)
                if added:
                    record_outcome(access, Outcome.CREATED)
                return added
            if not await changes.remove_member(group, user.user_id):
                raise IdentityNotFound("The user is not a member of this group", identity_type="membership")
            record_outcome(access, Outcome.REMOVED)
            return True

        return await self._in_tenant(tenant_id, actor, actor_roles, work, access)

    # --- reported by ScaiKey ------------------------------------------------------------------------------------

    async def mirror_partner(
        self, partner_id: str, profile: dict[str, Any], actor: Actor, *, sync_id: str | None = None
    ) -> bool:
        """Record ScaiKey's view of a partner; with ``sync_id``, also that the sync confirmed it."""
        return await self.reported(lambda tx: tx.mirror_partner(partner_id, profile, sync_id=sync_id), actor)

    async def apply_report(
        self,
        tenant_id: str,
        reported: ReportedState,
        actor: Actor,
        *,
        complete: bool,
        tenant: tuple[str, dict[str, Any]] | None = None,
        sync_id: str | None = None,
    ) -> Counter[str]:
        """``IdentityTransaction.apply_report`` in a transaction of its own."""
        return await self.reported(
            lambda tx: tx.apply_report(tenant_id, reported, complete=complete, tenant=tenant, sync_id=sync_id), actor
        )

    # --- sync runs ------------------------------------------------------------------------------------------------

    async def start_sync(
        self,
        *,
        partner_id: str | None,
        tenant_id: str | None,
        trigger: str,
        actor: Actor,
        access: AccessRecord | None = None,
    ) -> IdentitySync:
        sync_id = new_sync_id()

        async def work(uow: UnitOfWork) -> IdentitySync:
            run = IdentitySync(
                sync_id=sync_id, partner_id=partner_id, tenant_id=tenant_id, trigger=trigger, at=self._clock(),
                actor=actor.identity_id, request_id=actor.request_id,
            )
            record_outcome(access, Outcome.ACCEPTED, sync_id=sync_id)
            uow.add(run)
            return run

        return await self._runner.run(work, access=access)

    async def finish_sync(self, sync_id: str, *, stats: dict[str, Any], error: str | None = None) -> bool:
        """Completed, or failed with ``error`` (what went wrong, never a credential)."""

        async def work(uow: UnitOfWork) -> bool:
            run = await uow.get(sync_stream_id(sync_id))
            if run is None:
                return False
            at = self._clock()
            done = run.complete(stats=stats, at=at) if error is None else run.fail(error=error, stats=stats, at=at)
            uow.add(run)
            return done

        return await self._runner.run(work)


def name_lock(kind: str, tenant_id: str, name: str) -> str:
    return f"identity-name:{kind}:{tenant_id}:{name}"


async def _lock_name(uow: UnitOfWork, tenant_id: str, kind: str, name: str) -> None:
    """Two creations of the same name in one tenant take turns, so the uniqueness check holds."""
    await uow.conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", name_lock(kind, tenant_id, name))
