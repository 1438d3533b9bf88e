"""Identity mirror use cases, each one transaction through the unit of work: managing users, groups, memberships
and roles through ScaiVault (API, CLI), and applying what ScaiKey reports (sync runs, webhook deliveries).

Policy evaluation caches group memberships, in every server: a command that changed memberships calls
``membership_changed_in_transaction(conn, tenant_id)`` inside its transaction (for a change other servers learn
of when it commits), and ``on_membership_changed(tenant_id)`` after the commit (this process's cache). After one
that changed roles or removed users, ``on_roles_changed(tenant_id)`` runs (the mirrored-roles cache). All default
to doing nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

import asyncpg

from commands.secrets import Actor
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome, utcnow
from projections.identity.queries import email_taken, group_name_taken, scaikey_state, user_group_ids
from scaivault.audit.access_records import AccessRecord
from scaivault.domain.errors import IdentityExists
from scaivault.domain.identities import (
    SCAIKEY,
    SCAIVAULT,
    Group,
    IdentitySync,
    MirroredPartner,
    MirroredTenant,
    ReportedState,
    User,
    check_membership_change,
    check_role_change,
    group_stream_id,
    identity_not_found,
    partner_stream_id,
    plan_tenant_sync,
    principal_ref,
    sync_stream_id,
    tenant_stream_id,
    user_stream_id,
)
from scaivault.ids import new_id

T = TypeVar("T")
TenantHook = Callable[[str], None]
TransactionHook = Callable[[asyncpg.Connection, str], Awaitable[None]]


def _ignore(tenant_id: str) -> None:
    """The default hook: nothing to invalidate."""


async def _ignore_in_transaction(conn: asyncpg.Connection, tenant_id: str) -> None:
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
    """One transaction's view of the tenant's users and groups: each aggregate loaded once, changes counted."""

    uow: UnitOfWork
    tenant_id: str
    source: str
    at: datetime
    actor: Actor
    counts: Counter[str] = field(default_factory=Counter)
    users: dict[str, User | None] = field(default_factory=dict)
    groups: dict[str, Group | None] = field(default_factory=dict)

    @property
    def stamp(self) -> dict[str, Any]:
        actor = self.actor
        return {"source": self.source, "at": self.at, "actor": actor.identity_id, "request_id": actor.request_id}

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
        user = await self.user(user_id)
        if user is None:
            self.users[user_id] = User(tenant_id=self.tenant_id, user_id=user_id, profile=profile, **self.stamp)
        self._written("users", self.users[user_id], profile, created=user is None)

    async def write_group(self, group_id: str, profile: dict[str, Any]) -> None:
        group = await self.group(group_id)
        if group is None:
            self.groups[group_id] = Group(tenant_id=self.tenant_id, group_id=group_id, profile=profile, **self.stamp)
        self._written("groups", self.groups[group_id], profile, created=group is None)

    def _written(self, kind: str, aggregate: User | Group, profile: dict[str, Any], *, created: bool) -> None:
        """Count a creation, or set the profile of an existing one (counting a change); keep it for the commit."""
        if created:
            self.counts[f"{kind}_created"] += 1
        elif aggregate.update(profile=profile, **self.stamp):
            self.counts[f"{kind}_updated"] += 1
        self.uow.add(aggregate)

    def _kept(self, counter: str, aggregate: User | Group, changed: bool) -> bool:
        """Count a change and keep its aggregate for the commit; an aggregate that did not change is left alone."""
        if changed:
            self.counts[counter] += 1
            self.uow.add(aggregate)
        return changed

    async def set_roles(self, user: User, roles: list[str]) -> bool:
        return self._kept("roles_changed", user, user.set_roles(roles=roles, **self.stamp))

    async def add_member(self, group: Group, user_id: str) -> bool:
        return self._kept("memberships_added", group, group.add_member(user_id=user_id, **self.stamp))

    async def remove_member(self, group: Group, user_id: str) -> bool:
        return self._kept("memberships_removed", group, group.remove_member(user_id=user_id, **self.stamp))

    async def remove_user(self, user: User) -> None:
        """The user and, in the same transaction, every membership it had."""
        for group_id in await user_group_ids(self.uow.conn, self.tenant_id, user.user_id):
            group = await self.group(group_id, live=True)
            if group is not None:
                await self.remove_member(group, user.user_id)
        self._kept("users_removed", user, user.remove(**self.stamp))

    async def remove_group(self, group: Group) -> None:
        members = len(group.members)
        if self._kept("groups_removed", group, group.remove(**self.stamp)):
            self.counts["memberships_removed"] += members

    @property
    def memberships_changed(self) -> bool:
        return bool(self.counts["memberships_added"] or self.counts["memberships_removed"])

    @property
    def roles_changed(self) -> bool:
        return bool(self.counts["roles_changed"] or self.counts["users_removed"] or self.counts["users_created"])


@dataclass(frozen=True)
class _Creation:
    """A user or a group created through ScaiVault: its name (``name_field`` of its profile) is unique in the
    tenant."""

    name: str
    name_field: str
    name_taken: Callable[[asyncpg.Connection, str, str], Awaitable[bool]]
    name_taken_message: str
    load: Callable[[_Changes, str], Awaitable[Any]]
    write: Callable[[_Changes, str, dict[str, Any]], Awaitable[None]]


_USER = _Creation(
    "user", "email", email_taken, "A user with that e-mail address already exists in this tenant",
    _Changes.user, _Changes.write_user,
)
_GROUP = _Creation(
    "group", "name", group_name_taken, "A group with that name already exists in this tenant",
    _Changes.group, _Changes.write_group,
)


class IdentityCommands:
    def __init__(
        self,
        runner: UnitOfWorkRunner,
        *,
        clock: Callable[[], datetime] = utcnow,
        on_membership_changed: TenantHook = _ignore,
        membership_changed_in_transaction: TransactionHook = _ignore_in_transaction,
        on_roles_changed: TenantHook = _ignore,
    ) -> None:
        self._runner = runner
        self._clock = clock
        self.on_membership_changed = on_membership_changed
        self.membership_changed_in_transaction = membership_changed_in_transaction
        self.on_roles_changed = on_roles_changed

    async def _run(
        self,
        tenant_id: str,
        source: str,
        actor: Actor,
        work: Callable[[_Changes], Awaitable[T]],
        access: AccessRecord | None = None,
    ) -> tuple[T, Counter[str]]:
        """Run ``work`` in one transaction, then tell the hooks what changed (only once it is committed)."""
        changes: list[_Changes] = []

        async def transaction(uow: UnitOfWork) -> T:
            changes[:] = [_Changes(uow, tenant_id, source, self._clock(), actor)]
            result = await work(changes[0])
            if changes[0].memberships_changed:
                await self.membership_changed_in_transaction(uow.conn, tenant_id)
            return result

        result = await self._runner.run(transaction, access=access)
        done = changes[0]
        if done.memberships_changed:
            self.on_membership_changed(tenant_id)
        if done.roles_changed:
            self.on_roles_changed(tenant_id)
        return result, done.counts

    # --- managed through ScaiVault ------------------------------------------------------------------------------

    async def create_user(
        self, tenant_id: str, profile: dict[str, Any], actor: Actor, access: AccessRecord | None = None
    ) -> str:
        return await self._create(_USER, tenant_id, new_user_id(), profile, actor, access)

    async def create_group(
        self, tenant_id: str, profile: dict[str, Any], actor: Actor, access: AccessRecord | None = None
    ) -> str:
        return await self._create(_GROUP, tenant_id, new_group_id(), profile, actor, access)

    async def _create(
        self,
        kind: _Creation,
        tenant_id: str,
        identity_id: str,
        profile: dict[str, Any],
        actor: Actor,
        access: AccessRecord | None,
    ) -> str:
        name = profile[kind.name_field]

        async def work(changes: _Changes) -> str:
            await kind.load(changes, identity_id)  # joins the read-model writers before the name check below
            await _lock_name(changes.uow, tenant_id, kind.name, name)
            if await kind.name_taken(changes.uow.conn, tenant_id, name):
                raise IdentityExists(kind.name_taken_message)
            await kind.write(changes, identity_id, profile)
            record_outcome(access, 201)
            return identity_id

        return (await self._run(tenant_id, SCAIVAULT, actor, work, access))[0]

    async def remove_user(
        self, tenant_id: str, user_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(changes: _Changes) -> None:
            await changes.remove_user(await _existing_user(changes, user_id))

        await self._run(tenant_id, SCAIVAULT, actor, work, access)

    async def remove_group(
        self, tenant_id: str, group_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        async def work(changes: _Changes) -> None:
            await changes.remove_group(await _existing_group(changes, group_id))

        await self._run(tenant_id, SCAIVAULT, actor, work, access)

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
        """Replace a user's roles under the spec's rules (``check_role_change``), judged against the roles the user
        holds in this same transaction. The CLI passes ``changer_roles={"super_admin"}``: an operator with the
        database is above the rules the API enforces."""

        async def work(changes: _Changes) -> list[str]:
            user = await _existing_user(changes, user_id)
            check_role_change(
                changer_roles=changer_roles, changing_self=_is_self(actor, user), current=user.roles, requested=roles
            )
            await changes.set_roles(user, roles)
            return list(user.roles)

        return (await self._run(tenant_id, SCAIVAULT, actor, work, access))[0]

    async def change_membership(
        self,
        tenant_id: str,
        group_id: str,
        user_id: str,
        actor: Actor,
        *,
        adding: bool,
        access: AccessRecord | None = None,
        source: str = SCAIVAULT,
    ) -> bool:
        """Add (or remove) a user to (from) a group; False when it was already so. Both must exist in the tenant.
        Through ScaiVault, no one adds themselves; ScaiKey's deliveries are ScaiKey's word."""

        async def work(changes: _Changes) -> bool:
            group = await _existing_group(changes, group_id)
            user = await _existing_user(changes, user_id)
            if source == SCAIVAULT:
                check_membership_change(adding=adding, changing_self=_is_self(actor, user))
            if adding:
                added = await changes.add_member(group, user.user_id)
                if added:
                    record_outcome(access, 201)
                return added
            return await changes.remove_member(group, user.user_id)

        return (await self._run(tenant_id, source, actor, work, access))[0]

    # --- reported by ScaiKey ------------------------------------------------------------------------------------

    async def mirror_partner(
        self, partner_id: str, profile: dict[str, Any], actor: Actor, *, sync_id: str | None = None
    ) -> bool:
        """Record ScaiKey's view of a partner; with ``sync_id``, also that the sync confirmed it."""

        async def work(uow: UnitOfWork) -> bool:
            at, changed = self._clock(), False
            partner = await uow.get(partner_stream_id(partner_id))
            if partner is None:
                partner = MirroredPartner(partner_id=partner_id, profile=profile, at=at, actor=actor.identity_id)
                changed = True
            else:
                changed = partner.update(profile=profile, at=at, actor=actor.identity_id)
            if sync_id is not None:
                partner.synced(sync_id=sync_id, at=at)
            uow.add(partner)
            return changed

        return await self._runner.run(work)

    async def apply_report(
        self,
        tenant_id: str,
        reported: ReportedState,
        actor: Actor,
        *,
        complete: bool,
        tenant: tuple[str, dict[str, Any]] | None = None,
        sync_id: str | None = None,
        access: AccessRecord | None = None,
    ) -> Counter[str]:
        """Bring the tenant's mirror to what ScaiKey reports (see ``plan_tenant_sync``), in one transaction; with
        ``tenant`` (partner id, profile) also ScaiKey's view of the tenant, and with ``sync_id`` the sync's mark."""
        async def work(changes: _Changes) -> None:
            if tenant is not None:
                await self._mirror_tenant(changes, tenant[0], tenant[1], sync_id)
            plan = plan_tenant_sync(await scaikey_state(changes.uow.conn, tenant_id), reported, complete=complete)
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
            for user_id in plan.users_to_remove:
                user = await changes.user(user_id, live=True)
                if user is not None:
                    await changes.remove_user(user)
            for group_id in plan.groups_to_remove:
                group = await changes.group(group_id, live=True)
                if group is not None:
                    await changes.remove_group(group)
            for group_id, user_id in plan.members_to_add:
                group = await changes.group(group_id, live=True)
                if group is not None and await changes.user(user_id, live=True) is not None:
                    await changes.add_member(group, user_id)

        return (await self._run(tenant_id, SCAIKEY, actor, work, access))[1]

    async def _mirror_tenant(
        self, changes: _Changes, partner_id: str, profile: dict[str, Any], sync_id: str | None
    ) -> None:
        uow, tenant_id = changes.uow, changes.tenant_id
        mirrored = await uow.get(tenant_stream_id(tenant_id))
        if mirrored is None:
            mirrored = MirroredTenant(
                tenant_id=tenant_id, partner_id=partner_id, profile=profile, at=changes.at,
                actor=changes.actor.identity_id,
            )
        else:
            mirrored.update(profile=profile, at=changes.at, actor=changes.actor.identity_id)
        if sync_id is not None:
            mirrored.synced(sync_id=sync_id, at=changes.at)
        uow.add(mirrored)

    async def remove_reported(
        self,
        tenant_id: str,
        actor: Actor,
        *,
        user_ids: Iterable[str] = (),
        group_ids: Iterable[str] = (),
        access: AccessRecord | None = None,
    ) -> Counter[str]:
        """ScaiKey says these are gone; those the mirror does not hold are ignored (deliveries may repeat)."""

        async def work(changes: _Changes) -> None:
            for user_id in user_ids:
                user = await changes.user(user_id, live=True)
                if user is not None:
                    await changes.remove_user(user)
            for group_id in group_ids:
                group = await changes.group(group_id, live=True)
                if group is not None:
                    await changes.remove_group(group)

        return (await self._run(tenant_id, SCAIKEY, actor, work, access))[1]

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
            record_outcome(access, 202, sync_id=sync_id)
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


async def _existing_user(changes: _Changes, user_id: str) -> User:
    user = await changes.user(user_id, live=True)
    if user is None:  # another tenant's user is another stream: it answers exactly like a missing one
        raise identity_not_found("user", user_id)
    return user


async def _existing_group(changes: _Changes, group_id: str) -> Group:
    group = await changes.group(group_id, live=True)
    if group is None:
        raise identity_not_found("group", group_id)
    return group
