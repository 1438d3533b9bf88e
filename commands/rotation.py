"""Rotation use cases (docs/rotation.md): rotation policies (create, change, enable/disable, delete), attaching
secrets, rotating now, and the scheduler's step for one secret. One command = one transaction; a rotation of many
secrets is one transaction per secret.

Lock order, everywhere: a rotation policy's stream before a secret's. Steps that only need a policy's terms read
them from the read model (no lock), so a secret's writers never wait on a policy.

Every rotation or expiry step is decided by the Secret aggregate from its own state, under its stream lock: two
schedulers that both think a step is due take turns, and the second finds it done (docs/rotation.md, exactly once).
"""

from __future__ import annotations

import asyncio
import secrets as random_source
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from commands.actor import Actor
from commands.ports import RotationLookup, SecretPermissions, SecretPolicyLookup
from commands.secrets import stage_secret
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.secret_values import open_value, seal_value
from scaivault.domain import generators
from scaivault.domain.errors import (
    InvalidRequest,
    RotationPolicyExists,
    RotationPolicyNotFound,
    ScaiVaultError,
    SecretNotFound,
    SecretPolicyNotFound,
)
from scaivault.domain.outcomes import Outcome
from scaivault.domain.rotation import (
    POLICY_DEFAULTS,
    SCHEDULER_IDENTITY,
    PolicySettings,
    RotationPolicy,
    RotationTerms,
    history_id,
    id_from_name,
    rotation_policy_stream_id,
)
from scaivault.domain.secrets import Secret, SecretAddress, secret_stream_id
from scaivault.ids import new_id

UNSET: Any = object()  # a PATCH field that was not given
GENERATED_VALUE_BYTES = 32  # 43 URL-safe characters
NAME_KEY = "scaivault_rotation_policies_name_key"


@dataclass(frozen=True)
class PolicyOwner:
    """The tenant a rotation policy belongs to."""

    tenant_id: str
    partner_id: str


def _history_item(secret: Secret, domain_event: Any) -> dict[str, Any]:
    """A ``RotationHistoryItem`` of what a rotation command just did to one secret."""
    item: dict[str, Any] = {
        "id": history_id(domain_event.originator_id, domain_event.originator_version, domain_event.at),
        "rotation_policy_id": domain_event.rotation_policy_id, "secret_path": secret.path, "status": "pending",
        "old_version": None, "new_version": None, "auto_generated": None, "error": None, "due_at": None,
        "grace_period_ends": None, "started_at": domain_event.at, "completed_at": None,
        "triggered_by": domain_event.actor,
    }
    if isinstance(domain_event, Secret.Rotated):
        item.update(status="success", old_version=domain_event.old_version, new_version=domain_event.new_version,
                    auto_generated=domain_event.auto_generated, grace_period_ends=domain_event.grace_period_ends,
                    completed_at=domain_event.at)
    elif isinstance(domain_event, Secret.RotationFailed):
        item.update(status="failed", due_at=domain_event.due_at,
                    error={"code": domain_event.error_code, "message": domain_event.error_message})
    else:
        item["due_at"] = domain_event.due_at
    return item


class RotationCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, lookup: RotationLookup, recipes: SecretPolicyLookup,
        permissions: SecretPermissions, *, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._runner = runner
        self._keyring = keyring
        self._lookup = lookup
        self._recipes = recipes
        self._permissions = permissions
        self._clock = clock

    # ---- policies ---------------------------------------------------------------------------------------------

    async def create(
        self, owner: PolicyOwner, fields: dict[str, Any], actor: Actor, access: AccessRecord | None = None
    ) -> RotationPolicy:
        """``fields``: the body's (name, interval, ...); the id is ``rot_`` + the name when that is a valid id
        not taken in the tenant, else generated."""
        settings = PolicySettings.check(**{**POLICY_DEFAULTS, **fields})

        async def work(uow: UnitOfWork) -> RotationPolicy:
            if await self._lookup.name_taken(uow.conn, owner.tenant_id, settings.name):
                raise RotationPolicyExists(name=settings.name)
            await self._check_recipe(uow, owner, settings.secret_policy_id)
            policy_id = id_from_name(settings.name)
            if policy_id is None or await uow.get(rotation_policy_stream_id(owner.tenant_id, policy_id)) is not None:
                policy_id = new_id("rot_")
            policy = RotationPolicy.create(
                policy_id=policy_id, owner=owner.tenant_id, tenant_id=owner.tenant_id, partner_id=owner.partner_id,
                settings=settings, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(policy)
            record_outcome(access, Outcome.CREATED, rotation_policy_id=policy_id)
            return policy

        try:
            return await self._runner.run(work, access=access)
        except asyncpg.UniqueViolationError as exc:  # a concurrent create took the name first
            if exc.constraint_name == NAME_KEY:
                raise RotationPolicyExists(name=settings.name) from None
            raise

    async def change(
        self, owner: PolicyOwner, policy_id: str, changes: dict[str, Any], actor: Actor,
        access: AccessRecord | None = None,
    ) -> RotationPolicy:
        """Set the given fields (PATCH; enable and disable set ``is_active``), keeping the others."""

        async def work(uow: UnitOfWork) -> RotationPolicy:
            policy = await self._policy(uow, owner, policy_id, access)
            settings = PolicySettings.check(**{**policy.settings(), **changes})
            if settings.name != policy.name and await self._lookup.name_taken(uow.conn, owner.tenant_id,
                                                                               settings.name):
                raise RotationPolicyExists(name=settings.name)
            if settings.secret_policy_id != policy.secret_policy_id:
                await self._check_recipe(uow, owner, settings.secret_policy_id)
            policy.update(settings, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(policy)
            return policy

        try:
            return await self._runner.run(work, access=access)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == NAME_KEY:
                raise RotationPolicyExists(name=str(changes.get("name"))) from None
            raise

    async def _check_recipe(self, uow: UnitOfWork, owner: PolicyOwner, secret_policy_id: str | None) -> None:
        """A policy may name only an active secret policy of its tenant (404 ``secret_policy_not_found``); one
        deleted later with ``force`` makes its rotations fail (``rotation.failed``) until it is repointed."""
        if secret_policy_id is not None and await self._recipes.active_recipe(
            uow.conn, owner.tenant_id, secret_policy_id
        ) is None:
            raise SecretPolicyNotFound(secret_policy_id=secret_policy_id)

    async def delete(
        self, owner: PolicyOwner, policy_id: str, actor: Actor, access: AccessRecord | None = None
    ) -> list[str]:
        """Delete the policy and detach its secrets (an event on each secret's stream, in the same transaction).
        Returns the paths detached."""

        async def work(uow: UnitOfWork) -> list[str]:
            policy = await self._policy(uow, owner, policy_id, access)
            detached: list[str] = []
            at = self._clock()
            for path in await self._lookup.attached_paths(uow.conn, owner.tenant_id, policy_id):
                secret = await uow.get(secret_stream_id(owner.tenant_id, path))
                if secret is not None and secret.rotation_policy_id == policy_id and secret.attach_rotation_policy(
                    None, at=at, actor=actor.identity_id, request_id=actor.request_id
                ):
                    detached.append(secret.path)
                    await self._stage(uow, secret)
            policy.delete(at=at, actor=actor.identity_id, request_id=actor.request_id)
            uow.add(policy)
            if access is not None:
                access.extra["detached_secrets"] = len(detached)
            return detached

        return await self._runner.run(work, access=access)

    # ---- attachments ------------------------------------------------------------------------------------------

    async def attach(
        self, owner: PolicyOwner, policy_id: str, address: SecretAddress, actor: Actor,
        access: AccessRecord | None = None,
    ) -> dict[str, Any]:
        """Attach a secret (moving it from any other policy); its cycle starts now. Returns the assignment."""
        await self._authorize(actor, address, "write")

        async def work(uow: UnitOfWork) -> dict[str, Any]:
            policy = await self._policy(uow, owner, policy_id, access)
            secret = await self._live_secret(uow, address)
            at = self._clock()
            changed = secret.attach_rotation_policy(policy_id, at=at, actor=actor.identity_id,
                                                    request_id=actor.request_id)
            record_outcome(access, Outcome.CREATED if changed else Outcome.OK)
            await self._stage(uow, secret)
            assert secret.rotation_cycle_start is not None
            return {
                "rotation_policy_id": policy_id, "secret_path": address.path,
                "attached_at": secret.rotation_cycle_start, "last_rotated_at": secret.last_rotated_at,
                "next_rotation_at": policy.terms().due_at(secret.rotation_cycle_start),
            }

        return await self._runner.run(work, access=access)

    async def detach(
        self, owner: PolicyOwner, policy_id: str, address: SecretAddress, actor: Actor,
        access: AccessRecord | None = None,
    ) -> None:
        await self._authorize(actor, address, "write")

        async def work(uow: UnitOfWork) -> None:
            await self._policy(uow, owner, policy_id, access)
            secret = await self._live_secret(uow, address)
            if secret.rotation_policy_id != policy_id:
                raise SecretNotFound("The secret is not attached to this rotation policy", path=address.path,
                                     rotation_policy_id=policy_id)
            secret.attach_rotation_policy(None, at=self._clock(), actor=actor.identity_id,
                                          request_id=actor.request_id)
            await self._stage(uow, secret)

        await self._runner.run(work, access=access)

    # ---- rotating ---------------------------------------------------------------------------------------------

    async def rotate_now(
        self, owner: PolicyOwner, policy_id: str, paths: list[str] | None, addresses: Callable[[str], SecretAddress],
        actor: Actor, access: AccessRecord | None = None,
    ) -> list[dict[str, Any]]:
        """Rotate the policy's secrets now (or only ``paths``, each of which must be attached): auto-generate
        writes new values; otherwise the owner is asked for them (``rotation.due`` with ``due_now``). Returns a
        ``RotationHistoryItem`` per secret. A paused policy rotates too: the request is explicit."""
        async with self._runner.pool.acquire() as conn:
            terms = await self._lookup.policy_terms(conn, owner.tenant_id, policy_id)
            if terms is None:
                raise RotationPolicyNotFound(rotation_policy_id=policy_id[:64])
            attached = await self._lookup.attached_paths(conn, owner.tenant_id, policy_id)
        targets = [addresses(path) for path in dict.fromkeys(paths if paths is not None else attached)]
        strays = [target.path for target in targets if target.path not in attached]
        if strays:
            raise InvalidRequest("Not attached to this rotation policy", field="secret_paths", paths=strays[:20])
        for target in targets:  # every secret's rotate permission first: a denied caller rotates nothing
            await self._authorize(actor, target, "rotate")
        items = []
        for target in targets:
            item = await self._rotate_one(target.stream_id, terms, actor)
            if item is not None:
                items.append(item)
        if access is not None:
            access.extra.update(rotation_policy_id=policy_id, rotated=len(items))
        return items

    async def _rotate_one(self, stream_id: UUID, terms: RotationTerms, actor: Actor) -> dict[str, Any] | None:
        async def work(uow: UnitOfWork) -> dict[str, Any] | None:
            secret = await uow.get(stream_id)
            if secret is None or not secret.live or secret.is_deleted or secret.rotation_policy_id != terms.policy_id:
                return None
            at = self._clock()
            if secret.request_rotation(terms, at=at, actor=actor.identity_id, request_id=actor.request_id):
                await self._auto_rotate(uow, secret, terms, at, actor.identity_id, actor.request_id)
            item = _last_rotation_item(secret)
            await self._stage(uow, secret)
            return item

        return await self._runner.run(work)

    async def run_due(self, *, limit: int = 200) -> int:
        """The scheduler's scan: take the step of every secret whose schedule says one may be due. Safe to run in
        any number of processes at once (each step is decided again under the secret's lock). Returns the number
        of secrets that changed."""
        async with self._runner.pool.acquire() as conn:
            due = await self._lookup.due_schedules(conn, self._clock(), limit)
        changed = 0
        for stream_id in due:
            changed += await self.step(stream_id)
        return changed

    async def step(self, stream_id: UUID) -> bool:
        """Take the rotation and expiry steps due now for one secret; False when there was nothing (left) to do."""

        async def work(uow: UnitOfWork) -> bool:
            secret = await uow.get(stream_id)
            if secret is None or not secret.live:
                return False
            at = self._clock()
            secret.advance_expiry(at=at)
            terms = None
            if secret.rotation_policy_id is not None:
                terms = await self._lookup.policy_terms(uow.conn, secret.owner, secret.rotation_policy_id)
            if terms is not None and secret.advance_rotation(terms, at=at):
                await self._auto_rotate(uow, secret, terms, at, SCHEDULER_IDENTITY, None)
            if not secret.pending_events:
                return False
            await self._stage(uow, secret)
            return True

        return await self._runner.run(work)

    async def _auto_rotate(
        self, uow: UnitOfWork, secret: Secret, terms: RotationTerms, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        """Write a generated value as the rotation, or record why none could be made (never the value)."""
        try:
            data = await self._new_value(uow.conn, secret, terms, at)
        except ScaiVaultError as exc:
            secret.rotation_failed(terms, error_code=exc.code, error_message=exc.message, at=at, actor=actor,
                                   request_id=request_id)
            return
        version = secret.next_version
        data_key = await self._keyring.new_data_key(uow.conn, secret.owner)
        ciphertext = seal_value(data_key.key, data, owner=secret.owner, path=secret.path, version=version)
        secret.rotate(terms, version=version, ciphertext=ciphertext, data_key_id=data_key.id, at=at, actor=actor,
                      request_id=request_id)

    async def _new_value(
        self, conn: asyncpg.Connection, secret: Secret, terms: RotationTerms, at: datetime
    ) -> dict[str, Any]:
        """From the secret policy's recipe (the secret's own, else the rotation policy's); without one, a fresh
        random string for each top-level string field of the current value (``{"value": ...}`` when it has
        none)."""
        secret_policy_id = secret.secret_policy_id or terms.secret_policy_id
        if secret_policy_id is not None:
            recipe = await self._recipes.active_recipe(conn, secret.owner, secret_policy_id)
            if recipe is None:
                raise SecretPolicyNotFound("The secret policy that generates this secret's values is missing or "
                                           "inactive", secret_policy_id=secret_policy_id)
            # Key pairs and bcrypt hashes take up to seconds of CPU, which the event loop must not wait on.
            return await asyncio.to_thread(generators.generate, recipe, at=at)
        current = await self._current_value(conn, secret)
        fields = [key for key, value in current.items() if isinstance(value, str)] or ["value"]
        return {**current, **{key: random_source.token_urlsafe(GENERATED_VALUE_BYTES) for key in fields}}

    async def _current_value(self, conn: asyncpg.Connection, secret: Secret) -> dict[str, Any]:
        version = secret.current_version
        entry = secret.version_entry(version)
        ciphertext = await self._lookup.current_ciphertext(conn, secret.id, version)
        if ciphertext is None or entry["destroyed"]:
            return {}
        key = await self._keyring.data_key(conn, entry["data_key_id"], secret.owner)
        return open_value(key, ciphertext, owner=secret.owner, path=secret.path, version=version)

    # ---- helpers ----------------------------------------------------------------------------------------------

    async def _policy(
        self, uow: UnitOfWork, owner: PolicyOwner, policy_id: str, access: AccessRecord | None
    ) -> RotationPolicy:
        policy = await uow.get(rotation_policy_stream_id(owner.tenant_id, policy_id))
        if policy is None or policy.deleted:
            raise RotationPolicyNotFound(rotation_policy_id=policy_id[:64])
        if access is not None:
            access.extra["rotation_policy_id"] = policy_id
        return policy

    @staticmethod
    async def _live_secret(uow: UnitOfWork, address: SecretAddress) -> Secret:
        secret = await uow.get(address.stream_id)
        if secret is None or not secret.live or secret.is_deleted:
            raise SecretNotFound(path=address.path)
        return secret

    async def _authorize(self, actor: Actor, address: SecretAddress, permission: str) -> None:
        if actor.caller is not None:
            await self._permissions.require(actor.caller, address, permission)

    async def _stage(self, uow: UnitOfWork, secret: Secret) -> None:
        await stage_secret(uow, self._keyring, secret)


def _last_rotation_item(secret: Secret) -> dict[str, Any] | None:
    for domain_event in reversed(list(secret.pending_events)):
        if isinstance(domain_event, (Secret.Rotated, Secret.RotationFailed, Secret.RotationDue)):
            return _history_item(secret, domain_event)
    return None

