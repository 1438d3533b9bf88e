"""Secret use cases: write, update metadata, soft delete, restore, destroy (one version or all), purge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from commands.actor import Actor
from commands.ports import RotationLookup, SecretLookup, SecretPermissions, SecretPolicyLookup
from commands.secret_policies import enforce_secret_policy
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.secret_values import seal_value
from scaivault.domain.errors import AccessDenied, RotationPolicyNotFound, SecretNotFound
from scaivault.domain.outcomes import Outcome
from scaivault.domain.secrets import Secret, SecretAddress, shredded_data_keys


@dataclass(frozen=True)
class WriteSecret:
    address: SecretAddress
    data: dict[str, Any]
    secret_type: str | None = None
    metadata: dict[str, Any] | None = None
    max_versions: int | None = None
    expires_in: timedelta | None = None
    rotation_policy_id: str | None = None
    cas: int | None = None
    secret_policy_id: str | None = None  # links the secret to this secret policy (the value must satisfy it)


@dataclass(frozen=True)
class UpdateSecretMetadata:
    address: SecretAddress
    metadata_patch: dict[str, Any] | None = None
    secret_type: str | None = None
    max_versions: int | None = None
    expires_in: timedelta | None = None
    clear_expiry: bool = False
    rotation_policy_id: str | None = None
    secret_policy_id: str | None = None
    clear_rotation_policy: bool = False  # detach the secret from its rotation policy
    clear_secret_policy: bool = False  # unlink the secret from its secret policy


def _check_cap(secret: Secret, max_versions: int | None, *, writing: bool, may_destroy_versions: bool) -> None:
    if not may_destroy_versions and secret.versions_lost_to_cap(max_versions, writing=writing):
        raise AccessDenied(
            "Lowering max_versions below the versions kept destroys them: that needs the delete permission",
            reason="delete_required",
        )


async def stage_secret(uow: UnitOfWork, keyring: KeyRing, secret: Secret) -> None:
    """Stage the secret's new events, shredding in the same transaction the data keys they destroy (every command
    that changes a secret: these and the rotation commands)."""
    shredded = shredded_data_keys(list(secret.pending_events))
    if shredded:
        await keyring.destroy_data_keys(uow.conn, shredded)
    uow.add(secret)


class SecretCommands:
    def __init__(
        self,
        runner: UnitOfWorkRunner,
        keyring: KeyRing,
        lookup: SecretLookup,
        permissions: SecretPermissions,
        *,
        delete_retention: timedelta,
        default_max_versions: int,
        secret_policies: SecretPolicyLookup,
        rotation: RotationLookup | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        """``rotation``: where a named ``rotation_policy_id`` is checked to exist (the tenant's rotation policies)."""
        self._secret_policies = secret_policies
        self._rotation = rotation
        self._runner = runner
        self._keyring = keyring
        self._lookup = lookup
        self._permissions = permissions
        self._retention = delete_retention
        self._default_max_versions = default_max_versions
        self._clock = clock

    async def write(self, cmd: WriteSecret, actor: Actor, access: AccessRecord | None = None) -> tuple[Secret, bool]:
        """Write a new version; returns the secret and whether this write created it."""
        await self.authorize(actor, cmd.address, "write")
        may_lower_cap = await self._may_destroy_history(actor, cmd.address, cmd.max_versions)

        async def work(uow: UnitOfWork) -> tuple[Secret, bool]:
            secret, created = await self.write_in(uow, cmd, actor, may_lower_cap=may_lower_cap)
            record_outcome(access, Outcome.CREATED if created else Outcome.OK)
            return secret, created

        return await self._runner.run(work, access=access)

    async def write_in(
        self, uow: UnitOfWork, cmd: WriteSecret, actor: Actor, *, may_lower_cap: bool = True
    ) -> tuple[Secret, bool]:
        """The write inside a unit of work another command runs (an ACME order writes its certificate in the
        transaction that completes it). No policy check: the caller of this has decided (``write`` asks first;
        the server writing for itself asks no one)."""
        address = cmd.address
        secret = await uow.get(address.stream_id)
        if secret is None:
            secret = Secret(
                owner=address.owner, path=address.path, partner_id=address.partner_id, tenant_id=address.tenant_id
            )
        now = self._clock()
        created = not secret.live or secret.purge_if_retention_expired(
            at=now, actor=actor.identity_id, request_id=actor.request_id
        )
        secret.check_writable(at=now, cas=cmd.cas, actor=actor.identity_id, request_id=actor.request_id)
        _check_cap(secret, cmd.max_versions, writing=True, may_destroy_versions=may_lower_cap)
        await enforce_secret_policy(
            self._secret_policies, uow.conn, address.owner, cmd.secret_policy_id or secret.secret_policy_id,
            cmd.data, linking=cmd.secret_policy_id is not None,
        )
        await self._check_rotation_policy(uow, address, cmd.rotation_policy_id)
        version = secret.next_version
        data_key = await self._keyring.new_data_key(uow.conn, address.owner)
        ciphertext = seal_value(data_key.key, cmd.data, owner=address.owner, path=address.path, version=version)
        secret.write(
            version=version,
            ciphertext=ciphertext,
            data_key_id=data_key.id,
            at=self._clock(),
            actor=actor.identity_id,
            request_id=actor.request_id,
            secret_type=cmd.secret_type,
            metadata=cmd.metadata,
            max_versions=cmd.max_versions,
            default_max_versions=self._default_max_versions,
            expires_in=cmd.expires_in,
            rotation_policy_id=cmd.rotation_policy_id,
            cas=cmd.cas,
        )
        if cmd.secret_policy_id is not None and cmd.secret_policy_id != secret.secret_policy_id:
            secret.update_metadata(
                at=self._clock(), actor=actor.identity_id, request_id=actor.request_id, metadata_patch=None,
                secret_type=None, max_versions=None, expires_in=None, clear_expiry=False,
                rotation_policy_id=None, secret_policy_id=cmd.secret_policy_id,
            )
        await self._commit(uow, secret)
        return secret, created

    async def update_metadata(
        self, cmd: UpdateSecretMetadata, actor: Actor, access: AccessRecord | None = None
    ) -> Secret:
        await self.authorize(actor, cmd.address, "write")
        may_lower_cap = await self._may_destroy_history(actor, cmd.address, cmd.max_versions)

        async def work(uow: UnitOfWork) -> Secret:
            secret = await self._existing(uow, cmd.address)
            _check_cap(secret, cmd.max_versions, writing=False, may_destroy_versions=may_lower_cap)
            await enforce_secret_policy(
                self._secret_policies, uow.conn, cmd.address.owner, cmd.secret_policy_id, None, linking=True
            )
            await self._check_rotation_policy(uow, cmd.address, cmd.rotation_policy_id)
            secret.update_metadata(
                at=self._clock(),
                actor=actor.identity_id,
                request_id=actor.request_id,
                metadata_patch=cmd.metadata_patch,
                secret_type=cmd.secret_type,
                max_versions=cmd.max_versions,
                expires_in=cmd.expires_in,
                clear_expiry=cmd.clear_expiry,
                rotation_policy_id=cmd.rotation_policy_id,
                secret_policy_id=cmd.secret_policy_id,
                clear_rotation_policy=cmd.clear_rotation_policy,
                clear_secret_policy=cmd.clear_secret_policy,
            )
            await self._commit(uow, secret)
            return secret

        return await self._runner.run(work, access=access)

    async def delete(self, address: SecretAddress, actor: Actor, access: AccessRecord | None = None) -> Secret:
        await self.authorize(actor, address, "delete")

        async def work(uow: UnitOfWork) -> Secret:
            secret = await self._existing(uow, address)
            secret.delete(
                at=self._clock(), retention=self._retention, actor=actor.identity_id, request_id=actor.request_id
            )
            await self._commit(uow, secret)
            return secret

        return await self._runner.run(work, access=access)

    async def restore(self, address: SecretAddress, actor: Actor, access: AccessRecord | None = None) -> Secret:
        await self.authorize(actor, address, "delete")

        async def work(uow: UnitOfWork) -> Secret:
            secret = await self._existing(uow, address)
            secret.restore(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            await self._commit(uow, secret)
            return secret

        return await self._runner.run(work, access=access)

    async def destroy_version(
        self, address: SecretAddress, version: int, actor: Actor, access: AccessRecord | None = None
    ) -> Secret:
        await self.authorize(actor, address, "delete")

        async def work(uow: UnitOfWork) -> Secret:
            secret = await self._existing(uow, address)
            secret.destroy_version(version, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            await self._commit(uow, secret)
            return secret

        return await self._runner.run(work, access=access)

    async def destroy(self, address: SecretAddress, actor: Actor, access: AccessRecord | None = None) -> list[int]:
        """Permanently delete every version; returns the version numbers destroyed."""
        await self.authorize(actor, address, "delete")

        async def work(uow: UnitOfWork) -> list[int]:
            secret = await self._existing(uow, address)
            versions = [entry["version"] for entry in secret.versions]
            secret.destroy(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            await self._commit(uow, secret)
            return versions

        return await self._runner.run(work, access=access)

    async def purge_expired_deletions(self, *, limit: int = 500) -> int:
        """Purge soft-deleted secrets whose retention has passed (a background job; safe to run anywhere)."""
        async with self._runner.pool.acquire() as conn:
            due = await self._lookup.deletions_past_retention(conn, self._clock(), limit)
        purged = 0
        for stream_id in due:

            async def work(uow: UnitOfWork, stream_id: UUID = stream_id) -> bool:
                secret = await uow.get(stream_id)
                if secret is None or not secret.purge_if_retention_expired(at=self._clock(), actor="system:retention"):
                    return False
                await self._commit(uow, secret)
                return True

            purged += await self._runner.run(work)
        return purged

    async def authorize(self, actor: Actor, address: SecretAddress, permission: str) -> None:
        """The caller's policies must allow ``permission`` on the path (checked before anything is looked up, so a
        denied caller learns nothing about it); partner secrets change only by partner admins."""
        if actor.caller is None:
            return
        await self._permissions.require(actor.caller, address, permission)
        if address.partner_owned and not actor.caller.principal.is_partner_admin:
            raise AccessDenied("Only partner admins may change partner secrets")

    async def _may_destroy_history(self, actor: Actor, address: SecretAddress, max_versions: int | None) -> bool:
        """Whether the caller may lower ``max_versions`` below the versions kept, which destroys them: that is
        ``delete``'s to do (asked only when the request sets ``max_versions``)."""
        if actor.caller is None or max_versions is None:
            return True
        return await self._permissions.allows(actor.caller, address, "delete")

    async def _check_rotation_policy(self, uow: UnitOfWork, address: SecretAddress, policy_id: str | None) -> None:
        """A secret may only be attached to a rotation policy its owner has (404 ``rotation_policy_not_found``)."""
        if policy_id is not None and self._rotation is not None and not await self._rotation.policy_exists(
            uow.conn, address.owner, policy_id
        ):
            raise RotationPolicyNotFound(rotation_policy_id=policy_id)

    async def _existing(self, uow: UnitOfWork, address: SecretAddress) -> Secret:
        secret = await uow.get(address.stream_id)
        if secret is None:
            raise SecretNotFound(path=address.path)
        return secret

    async def _commit(self, uow: UnitOfWork, secret: Secret) -> None:
        await stage_secret(uow, self._keyring, secret)
