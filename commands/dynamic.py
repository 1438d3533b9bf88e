"""Dynamic-secrets use cases: engines and their roles, credentials under leases, renewal, revocation (one, by prefix,
and on expiry), and root-credential rotation. Decisions where the spec is silent: docs/dynamic-secrets.md.

Engines and roles belong to a tenant and change only by an admin of it (``managed_tenant``): a role's statements run
with the engine's root credentials. An engine or lease of another tenant answers like a missing one.

Issuing a credential records the lease first (``Lease.Granted``, with the generated user name, in a transaction that
counts the open leases against the role's and the tenant's limits under the tenant's lock), and creates the
credential on the target after that commits. A server that dies in between leaves a lease whose user may or may not
exist: it expires like any other and its revocation (idempotent on every target) removes whatever is there; a
credential never exists on a target without a lease that will remove it. A creation the target refuses ends the
lease at once (``creation_failed``).

Whatever revokes or renews a lease first locks the lease's row (``DynamicLookup.lock_lease``; the expiry worker
claims due rows with ``SKIP LOCKED``), then runs the target's statements, then records the outcome in the same
transaction: two servers never act on one lease at once, and a lease is recorded revoked exactly once. A target that
fails leaves the lease ``revoking``; it is tried again with backoff (``scaivault.domain.dynamic.retry_delay``) until
it succeeds.
"""

from __future__ import annotations

import asyncio
import logging
import secrets as random_source
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from commands.actor import Actor
from commands.policies import managed_tenant
from commands.ports import DynamicLookup, RootCredentials, SecretPermissions
from commands.secrets import SecretCommands, WriteSecret
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner, record_outcome
from scaivault.audit.access_records import AccessRecord
from scaivault.clock import utcnow
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.sealed_keys import SealedKey, open_private_key, seal_private_key
from scaivault.domain.dynamic import (
    PASSWORD_ALPHABET,
    PASSWORD_LENGTH,
    RANDOM_ALPHABET,
    RANDOM_LENGTH,
    DynamicEngine,
    Lease,
    check_engine_config,
    check_engine_name,
    check_engine_ttls,
    check_role,
    check_role_name,
    check_ttl,
    display_name_of,
    engine_stream_id,
    engine_type_of,
    lease_stream_id,
    render_username,
    renewable_of,
    root_credentials_path,
    same_target,
    seconds,
)
from scaivault.domain.errors import (
    AccessDenied,
    EngineExists,
    EngineInUse,
    EngineNotFound,
    InvalidConfig,
    LeaseNotFound,
    RoleNotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from scaivault.domain.labels import check_description
from scaivault.domain.outcomes import Outcome
from scaivault.domain.quotas import LEASES_PER_ROLE, Quota
from scaivault.domain.secrets import SecretAddress
from scaivault.dynamic.factory import UnsupportedEngine, build_backend
from scaivault.dynamic.port import (
    CredentialBackend,
    EngineTarget,
    NewCredential,
    RoleRecipe,
    TargetError,
    TargetUnavailable,
)
from scaivault.dynamic.root_credentials import engine_caller, engine_identity
from scaivault.dynamic.ssh import generate_ca_key
from scaivault.egress import IPNetwork
from scaivault.ids import new_id, new_request_id

log = logging.getLogger(__name__)

UNSET: Any = object()
ENGINE_NAME_KEY = "scaivault_dynamic_engines_name_key"
SSH_CA_KEY = "ssh-ca"
EXPIRY_ACTOR = "system:lease-expiry"
ROTATION_ACTOR = "system:root-rotation"
# How long an open backend (its connections, the root credentials it read) is reused before the root secret is read
# again: an unbound policy or a rotated root secret takes effect within this time.
BACKEND_REUSE_SECONDS = 60.0
REVOKE_FIRST = "revoke a lease first, or wait for one to expire"
# How many revocations of one batch run at once (the targets' own connection limits bound them too).
REVOKE_CONCURRENCY = 8


@dataclass(frozen=True)
class NewEngine:
    name: object
    engine_type: object
    config: object
    default_ttl: object = None
    max_ttl: object = None
    description: object = None
    root_rotation_period: object = None


@dataclass(frozen=True)
class EngineChanges:
    """New values; UNSET keeps the current one. ``config`` is merged into the current config key by key."""

    description: Any = UNSET
    config: Any = UNSET
    default_ttl: Any = UNSET
    max_ttl: Any = UNSET
    root_rotation_period: Any = UNSET


@dataclass(frozen=True)
class IssuedCredential:
    lease: Lease
    data: dict[str, Any]


@dataclass(frozen=True)
class RevocationOutcome:
    """How a revocation went: the lease as it is now (``revoked``, or ``revoking`` when the target failed and a retry
    is scheduled)."""

    lease: Lease
    changed: bool


@dataclass
class _OpenBackend:
    backend: CredentialBackend
    version: int
    opened_at: float
    users: int = 0
    retired: bool = False


@dataclass
class _Batch:
    revoked: int = 0
    failed: int = 0
    accesses: list[AccessRecord] = field(default_factory=list)


def _root_rotation_period(value: object) -> int | None:
    if value is None:
        return None
    period = check_ttl(value, "root_rotation_period", default=None, ceiling=timedelta(days=3650))
    if period is not None and period < timedelta(hours=1):
        raise ValidationFailed(fields=[{"field": "root_rotation_period", "message": "at least 1h"}])
    return seconds(period)


def _recipe(name: str, role: Mapping[str, Any]) -> RoleRecipe:
    return RoleRecipe(
        name=name, creation_statements=tuple(role["creation_statements"]),
        revocation_statements=tuple(role["revocation_statements"]), renew_statements=tuple(role["renew_statements"]),
        settings=dict(role["settings"]),
    )


def _random(alphabet: str, length: int) -> str:
    return "".join(random_source.choice(alphabet) for _ in range(length))


def _target_error(error: TargetError, what: str) -> InvalidConfig | ServiceUnavailable:
    """The API's answer to a target's failure: the target's reason (never a secret: backends' messages are safe)."""
    if isinstance(error, TargetUnavailable):
        return ServiceUnavailable(f"{what}: the target is unavailable ({error})")
    return InvalidConfig(f"{what}: {error}")


class DynamicCommands:
    def __init__(
        self, runner: UnitOfWorkRunner, keyring: KeyRing, lookup: DynamicLookup, root_credentials: RootCredentials,
        secrets: SecretCommands, permissions: SecretPermissions, *, per_tenant: Quota,
        egress_allow: Sequence[IPNetwork] = (),
        backend_factory: Callable[[EngineTarget], CredentialBackend] = build_backend,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._runner = runner
        self._keyring = keyring
        self._lookup = lookup
        self._root = root_credentials
        self._secrets = secrets
        self._permissions = permissions
        self._per_tenant = per_tenant
        self._egress_allow = tuple(egress_allow)
        self._build = backend_factory
        self._clock = clock
        self._open: dict[str, _OpenBackend] = {}
        self._opening: dict[str, asyncio.Lock] = {}

    # ---- engines ------------------------------------------------------------------------------------------------

    async def create_engine(self, new: NewEngine, actor: Actor, access: AccessRecord | None = None) -> DynamicEngine:
        tenant_id = managed_tenant(actor, "dynamic-secrets engines")
        partner_id = (actor.caller.partner_id if actor.caller is not None else None) or ""
        name = check_engine_name(new.name)
        config_in = new.config
        plugin = config_in.get("plugin") if isinstance(config_in, dict) else None
        engine_type = engine_type_of(new.engine_type, plugin)
        config = check_engine_config(engine_type, config_in)
        default_ttl, max_ttl = check_engine_ttls(new.default_ttl, new.max_ttl)
        description = check_description(new.description)
        rotation_period = _root_rotation_period(new.root_rotation_period)
        if rotation_period is not None and root_credentials_path(config) is None:
            raise ValidationFailed(fields=[{"field": "root_rotation_period", "message": "this engine has no root "
                                                                                        "credentials"}])
        ca_private: bytes | None = None
        ca_public: str | None = None
        if engine_type == "ssh":
            ca_private, ca_public = await asyncio.to_thread(generate_ca_key, config["key_type"])
        await self._verify(tenant_id, partner_id, name, engine_type, config, ca_private)
        engine_id = new_id("dyn_")

        async def work(uow: UnitOfWork) -> DynamicEngine:
            await uow.lock(f"dynamic_engines:{tenant_id}")
            if await self._lookup.engine_id(uow.conn, tenant_id, name) is not None:
                raise EngineExists(f"The tenant already has an engine named {name}", name=name)
            sealed = None
            if ca_private is not None:
                sealed = await seal_private_key(self._keyring, uow.conn, ca_private.decode(), owner=tenant_id,
                                                kind=SSH_CA_KEY, object_id=engine_id)
            engine = DynamicEngine(
                engine_id=engine_id, tenant_id=tenant_id, partner_id=partner_id, name=name, engine_type=engine_type,
                description=description, config=config, default_ttl=int(default_ttl.total_seconds()),
                max_ttl=int(max_ttl.total_seconds()), root_rotation_period=rotation_period, ca_public_key=ca_public,
                ca_key_ciphertext=sealed.ciphertext if sealed else None,
                ca_key_id=sealed.data_key_id if sealed else None,
                at=self._clock(), actor=actor.identity_id, request_id=actor.request_id,
            )
            uow.add(engine)
            record_outcome(access, Outcome.CREATED, engine=name, engine_id=engine_id)
            return engine

        try:
            return await self._runner.run(work, access=access)
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name == ENGINE_NAME_KEY:
                raise EngineExists(f"The tenant already has an engine named {name}", name=name) from None
            raise

    async def change_engine(
        self, name: str, changes: EngineChanges, actor: Actor, access: AccessRecord | None = None
    ) -> DynamicEngine:
        tenant_id = managed_tenant(actor, "dynamic-secrets engines")
        current = await self.engine(tenant_id, name)
        config = current.config
        if changes.config is not UNSET:
            if not isinstance(changes.config, dict):
                raise ValidationFailed(fields=[{"field": "config", "message": "an object"}])
            merged = {**current.config, **{k: v for k, v in changes.config.items() if k != "plugin"}}
            plugin = changes.config.get("plugin")
            if plugin is not None and f"database.{plugin}" != current.engine_type:
                raise ValidationFailed(fields=[{"field": "config.plugin", "message": "an engine's type cannot change"}])
            config = check_engine_config(current.engine_type, merged)
        default_ttl, max_ttl = check_engine_ttls(
            current.default_ttl if changes.default_ttl is UNSET else changes.default_ttl,
            current.max_ttl if changes.max_ttl is UNSET else changes.max_ttl,
        )
        rotation_period = current.root_rotation_period if changes.root_rotation_period is UNSET else \
            _root_rotation_period(changes.root_rotation_period)
        description = current.description if changes.description is UNSET else check_description(changes.description)
        if config != current.config:
            await self._verify(tenant_id, current.partner_id, name, current.engine_type, config,
                               await self._ca_key(current))

        moved = not same_target(current.config, config)

        async def work(uow: UnitOfWork) -> DynamicEngine:
            engine = await self._load(uow, tenant_id, name, access)
            if moved:
                await uow.lock(f"dynamic_leases:{tenant_id}")
                open_leases = await self._lookup.open_leases_of_engine(uow.conn, engine.engine_id)
                if open_leases:
                    raise EngineInUse(f"The engine has {open_leases} open leases on its current target; revoke them "
                                      "before pointing it elsewhere", open_leases=open_leases)
            if engine.config != current.config:
                raise ValidationFailed(fields=[{"field": "config", "message": "changed meanwhile; try again"}])
            engine.update(description=description, config=config, default_ttl=int(default_ttl.total_seconds()),
                          max_ttl=int(max_ttl.total_seconds()), root_rotation_period=rotation_period, at=self._clock(),
                          actor=actor.identity_id, request_id=actor.request_id)
            uow.add(engine)
            return engine

        engine = await self._runner.run(work, access=access)
        await self._retire(engine.engine_id)
        return engine

    async def delete_engine(self, name: str, actor: Actor, access: AccessRecord | None = None) -> None:
        """Delete an engine that has no open leases (``engine_in_use`` otherwise: revoke them first, so that no
        credential outlives the configuration that can remove it)."""
        tenant_id = managed_tenant(actor, "dynamic-secrets engines")

        async def work(uow: UnitOfWork) -> str:
            engine = await self._load(uow, tenant_id, name, access)
            await uow.lock(f"dynamic_leases:{tenant_id}")
            open_leases = await self._lookup.open_leases_of_engine(uow.conn, engine.engine_id)
            if open_leases:
                raise EngineInUse(f"The engine has {open_leases} open leases; revoke them first "
                                  f"(POST /v1/dynamic/leases/revoke-prefix with prefix {name})",
                                  open_leases=open_leases)
            key = engine.delete(at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            if key is not None:  # the ssh CA key: crypto-shredded
                await self._keyring.destroy_data_keys(uow.conn, [key])
            uow.add(engine)
            record_outcome(access, Outcome.REMOVED)
            return engine.engine_id

        engine_id = await self._runner.run(work, access=access)
        await self._retire(engine_id)

    async def health(self, name: str, actor: Actor) -> dict[str, Any]:
        """Connect to the target now, with the root credentials as stored now; nothing is recorded but the read of
        the root credentials. An administrator's, as it uses them."""
        tenant_id = managed_tenant(actor, "dynamic-secrets engines")
        engine = await self.engine(tenant_id, name)
        started = time.perf_counter()
        try:
            await self._verify(tenant_id, engine.partner_id, name, engine.engine_type, engine.config,
                               await self._ca_key(engine))
        except (InvalidConfig, ServiceUnavailable) as exc:
            return {"engine": name, "status": "unhealthy", "error": exc.message, "error_code": exc.code,
                    "checked_at": self._clock()}
        return {"engine": name, "status": "healthy", "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                "checked_at": self._clock()}

    async def rotate_root(
        self, name: str, actor: Actor, access: AccessRecord | None = None, *, tenant_id: str | None = None
    ) -> int:
        """Give the root account a new password on the target and store it as a new version of the root secret,
        written by the engine's identity (which needs ``rotate`` on it); returns that version. Afterwards only the
        server knows the root password. ``tenant_id``: the scheduler's (it acts for no caller); a caller must be an
        administrator of the tenant. One rotation of an engine at a time, across servers."""
        if tenant_id is None:
            tenant_id = managed_tenant(actor, "dynamic-secrets engines")
        async with self._runner.pool.acquire() as lock_conn:
            key = f"dynamic_root_rotation:{tenant_id}:{name}"
            if not await lock_conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1::text, 0))", key):
                raise ServiceUnavailable("A rotation of this engine's root credentials is in progress; try again")
            try:
                return await self._rotate_root(tenant_id, name, actor, access)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(hashtextextended($1::text, 0))", key)

    async def _rotate_root(self, tenant_id: str, name: str, actor: Actor, access: AccessRecord | None) -> int:
        engine = await self.engine(tenant_id, name)
        path = root_credentials_path(engine.config)
        if path is None:
            raise InvalidConfig(f"A {engine.engine_type} engine has no root credentials to rotate")
        await self._root.may_rotate(tenant_id, engine.partner_id, name, path)
        root, _ = await self._root.read(tenant_id, engine.partner_id, name, path)
        backend = self._build(self._target(engine.engine_type, engine.config, root, None))
        try:
            new_root = await backend.rotate_root(_random(PASSWORD_ALPHABET, PASSWORD_LENGTH))
        except TargetError as exc:
            raise _target_error(exc, "The root credentials could not be rotated") from None
        finally:
            await backend.close()
        address = SecretAddress(owner=tenant_id, partner_id=engine.partner_id, tenant_id=tenant_id, path=path)
        engine_actor = Actor(identity_id=engine_identity(name), request_id=actor.request_id,
                             caller=engine_caller(tenant_id, engine.partner_id, name))

        async def work(uow: UnitOfWork) -> int:
            loaded = await self._load(uow, tenant_id, name, access)
            secret, _ = await self._secrets.write_in(
                uow, WriteSecret(address=address, data={**root, **new_root}), engine_actor
            )
            loaded.root_rotated(root_version=secret.current_version, at=self._clock(), actor=actor.identity_id,
                                request_id=actor.request_id)
            uow.add(loaded)
            return int(secret.current_version)

        try:
            version = await self._runner.run(work, access=access)
        except BaseException:
            # The target has the new password and the secret still the old one: put the old one back on the target
            # so the stored credentials keep working.
            log.error("root rotation of engine %s could not be stored; restoring the previous root password", name)
            await self._restore_root(engine, {**root, **new_root}, root)
            raise
        await self._retire(engine.engine_id)
        return version

    async def rotate_due_roots(self, *, limit: int = 20) -> int:
        """The scheduler's round: rotate the root credentials of engines whose ``root_rotation_period`` has passed.
        An engine that cannot be rotated is logged and tried again next round."""
        async with self._runner.pool.acquire() as conn:
            due = await self._lookup.engines_due_root_rotation(conn, self._clock(), limit)
        rotated = 0
        for tenant_id, name in due:
            actor = Actor(identity_id=ROTATION_ACTOR, request_id=new_request_id())
            try:
                await self.rotate_root(name, actor, tenant_id=tenant_id)
                rotated += 1
            except (InvalidConfig, ServiceUnavailable, EngineNotFound) as exc:
                log.warning("scheduled root rotation of a dynamic engine failed", extra={
                    "tenant_id": tenant_id, "engine": name, "error_code": exc.code, "reason": exc.message})
        return rotated

    # ---- roles --------------------------------------------------------------------------------------------------

    async def write_role(
        self, engine_name: str, role_name: object, body: Mapping[str, Any], actor: Actor, *, mode: str,
        access: AccessRecord | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """``mode``: ``create`` (409 ``role_exists`` if it does), ``put`` (create or replace), ``patch`` (change the
        given fields of an existing role). Returns the role as stored and whether it was created."""
        tenant_id = managed_tenant(actor, "dynamic-secrets roles")
        name = check_role_name(role_name)

        async def work(uow: UnitOfWork) -> tuple[dict[str, Any], bool]:
            engine = await self._load(uow, tenant_id, engine_name, access)
            exists = name in engine.roles
            fields = dict(body)
            if mode == "patch":
                fields = {**_role_fields(engine.role(name)), **fields}
            role = check_role(engine.engine_type, fields, timedelta(seconds=engine.max_ttl))
            creating = mode == "create" or not exists
            engine.write_role(name, role, creating=creating, at=self._clock(), actor=actor.identity_id,
                              request_id=actor.request_id)
            uow.add(engine)
            record_outcome(access, Outcome.CREATED if creating else Outcome.OK, engine=engine_name, role=name)
            return role, creating

        return await self._runner.run(work, access=access)

    async def delete_role(
        self, engine_name: str, role_name: str, actor: Actor, access: AccessRecord | None = None
    ) -> None:
        tenant_id = managed_tenant(actor, "dynamic-secrets roles")

        async def work(uow: UnitOfWork) -> None:
            engine = await self._load(uow, tenant_id, engine_name, access)
            engine.role(role_name)
            await uow.lock(f"dynamic_leases:{tenant_id}")
            open_leases = await self._lookup.open_leases_of_engine(uow.conn, engine.engine_id, role_name)
            if open_leases:
                raise EngineInUse(f"The role has {open_leases} open leases; revoke them first (POST "
                                  f"/v1/dynamic/leases/revoke-prefix with prefix {engine_name}/{role_name})",
                                  open_leases=open_leases)
            engine.delete_role(role_name, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            uow.add(engine)
            record_outcome(access, Outcome.REMOVED)

        await self._runner.run(work, access=access)

    # ---- leases -------------------------------------------------------------------------------------------------

    async def issue(
        self, engine_name: str, role_name: str, *, ttl: object, parameters: Mapping[str, Any], actor: Actor,
        access: AccessRecord | None = None,
    ) -> IssuedCredential:
        """A new credential under a new lease. The access record is the request's own (recorded by the HTTP edge
        with the answer's status, before the credential is handed out)."""
        caller = actor.caller
        if caller is None:
            raise AccessDenied("Credentials are issued to a caller")
        tenant_id = caller.require_tenant()
        await self._permissions.require(caller, creds_address(tenant_id, caller.partner_id, engine_name, role_name),
                                        "read")
        engine = await self.engine(tenant_id, engine_name)
        role = engine.role(role_name)
        requested = check_ttl(ttl, "ttl", default=None)
        now = self._clock()
        expires_at, max_expires_at = engine.lease_terms(role_name, requested, now)
        username = render_username(
            role["username_template"], engine_type=engine.engine_type, engine=engine.name, role=role_name,
            display_name=display_name_of(actor.identity_id), random=_random(RANDOM_ALPHABET, RANDOM_LENGTH), at=now,
        )
        lease_id = new_id("lease_")
        if access is not None:
            access.extra.update(engine=engine_name, role=role_name, lease_id=lease_id)
        open_backend = await self._backend(engine)
        try:
            async def grant(uow: UnitOfWork) -> Lease:
                await uow.lock(f"dynamic_leases:{tenant_id}")
                if not await self._lookup.role_exists(uow.conn, engine.engine_id, role_name):
                    raise RoleNotFound(f"The engine {engine_name} has no role named {role_name}", role=role_name)
                for_role, for_tenant = await self._lookup.open_leases(uow.conn, tenant_id, engine.engine_id, role_name)
                if role["max_leases"] is not None:
                    Quota(LEASES_PER_ROLE, role["max_leases"], REVOKE_FIRST).check_room_for_one(for_role)
                self._per_tenant.check_room_for_one(for_tenant)
                lease = Lease(
                    lease_id=lease_id, tenant_id=tenant_id, partner_id=engine.partner_id, engine_id=engine.engine_id,
                    engine_name=engine.name, engine_type=engine.engine_type, role_name=role_name, username=username,
                    issued_at=now, expires_at=expires_at, max_expires_at=max_expires_at,
                    renewable=renewable_of(engine.engine_type, role), requested_by=actor.identity_id,
                    request_id=actor.request_id,
                )
                uow.add(lease)
                return lease

            lease = await self._runner.run(grant)
            credential = NewCredential(
                lease_id=lease_id, username=username, password=_random(PASSWORD_ALPHABET, PASSWORD_LENGTH),
                issued_at=now, expires_at=expires_at, parameters=dict(parameters),
            )
            try:
                created = await open_backend.backend.create(_recipe(role_name, role), credential)
            except TargetError as exc:
                await self._retire(engine.engine_id, only=open_backend)
                await self._end_failed_creation(lease.lease_id, tenant_id, actor)
                raise _target_error(exc, "The credential could not be created") from None
            await self._still_granted(lease, engine, open_backend, role_name, role)
        finally:
            open_backend.users -= 1
            await self._close_if_retired(open_backend)
        return IssuedCredential(lease, created.data)

    async def renew(
        self, lease_id: str, increment: object, actor: Actor, access: AccessRecord | None = None
    ) -> Lease:
        tenant_id, may_manage = self._lease_rights(actor)
        wanted = check_ttl(increment, "increment", default=None)

        async def work(uow: UnitOfWork) -> Lease:
            lease = await self._locked_lease(uow, tenant_id, lease_id, actor, may_manage, access)
            if not may_manage and actor.caller is not None:  # a holder whose grant was taken away renews no more
                await self._permissions.require(
                    actor.caller, creds_address(tenant_id, actor.caller.partner_id, lease.engine_name, lease.role_name),
                    "read")
            before = lease.expires_at
            new_expiry = lease.renew(wanted, at=self._clock(), actor=actor.identity_id, request_id=actor.request_id)
            if new_expiry != before:
                engine, role = await self._engine_and_role(uow.conn, lease)
                open_backend = await self._backend(engine)
                try:
                    await open_backend.backend.renew(_recipe(lease.role_name, role), lease.username, {}, new_expiry)
                except TargetError as exc:
                    raise _target_error(exc, "The lease could not be renewed on the target") from None
                finally:
                    open_backend.users -= 1
                    await self._close_if_retired(open_backend)
            uow.add(lease)
            record_outcome(access, Outcome.OK)
            return lease

        return await self._runner.run(work, access=access)

    async def revoke(self, lease_id: str, actor: Actor, access: AccessRecord | None = None) -> RevocationOutcome:
        """Revoke one lease now (idempotent: a revoked lease stays as it is). A target that fails leaves it
        ``revoking``, retried by the expiry worker."""
        tenant_id, may_manage = self._lease_rights(actor)

        async def work(uow: UnitOfWork) -> RevocationOutcome:
            lease = await self._locked_lease(uow, tenant_id, lease_id, actor, may_manage, access)
            batch = _Batch()
            changed = await self._revoke_one(uow, lease, "requested", actor, batch, audit=False)
            # A target that failed: accepted, the lease is ``revoking`` and the worker retries.
            record_outcome(access, Outcome.OK if lease.state == "revoked" else Outcome.ACCEPTED)
            return RevocationOutcome(lease, changed)

        return await self._runner.run(work, access=access)

    async def revoke_prefix(self, prefix: object, actor: Actor) -> dict[str, int]:
        """Revoke every open lease of an engine (``engine``) or of one of its roles (``engine/role``), in batches
        of one transaction each. Needs an admin of the tenant."""
        tenant_id = managed_tenant(actor, "dynamic-secrets leases")
        if not isinstance(prefix, str) or prefix.count("/") > 1:
            raise ValidationFailed(fields=[{"field": "prefix", "message": "an engine name, or engine/role"}])
        engine_name, _, role_name = prefix.partition("/")
        check_engine_name(engine_name, "prefix")
        if role_name:
            check_role_name(role_name)
        await self.engine(tenant_id, engine_name)
        totals = {"revoked": 0, "revoking": 0}
        retrying: set[UUID] = set()
        while True:
            async def work(uow: UnitOfWork) -> tuple[_Batch, int]:
                claimed = [s for s in await self._lookup.claim_prefix(
                    uow.conn, tenant_id, engine_name, role_name or None, 100 + len(retrying)) if s not in retrying]
                batch = _Batch()
                leases = [await uow.get(stream) for stream in claimed[:100]]
                await self._revoke_many(uow, leases, "prefix", actor, batch)
                for lease in leases:
                    if lease.state != "revoked":
                        retrying.add(lease_stream_id(lease.lease_id))
                return batch, len(leases)

            batch, claimed = await self._runner.run(work)
            totals["revoked"] += batch.revoked
            totals["revoking"] += batch.failed
            if claimed == 0:
                return totals

    async def revoke_due(self, *, limit: int = 100) -> tuple[int, int]:
        """The expiry worker's step: revoke up to ``limit`` leases that are due (expired, or due for a retry) and no
        other server holds; returns (revoked, failed). Each lease's revocation is in the audit log, done by
        ``system:lease-expiry``."""
        actor = Actor(identity_id=EXPIRY_ACTOR, request_id=new_request_id())

        async def work(uow: UnitOfWork) -> _Batch:
            claimed = await self._lookup.claim_due(uow.conn, self._clock(), limit)
            leases = [await uow.get(stream) for stream in claimed]
            batch = _Batch()
            await self._revoke_many(uow, leases, "expired", actor, batch, audit=True)
            uow.accesses.extend(batch.accesses)
            return batch

        batch = await self._runner.run(work)
        return batch.revoked, batch.failed

    async def next_due(self) -> datetime | None:
        async with self._runner.pool.acquire() as conn:
            return await self._lookup.next_due(conn)

    # ---- reading the write side -----------------------------------------------------------------------------------

    async def engine(self, tenant_id: str, name: str) -> DynamicEngine:
        """The engine as it is now, read outside any transaction (for work done before one)."""
        async with self._runner.pool.acquire() as conn:
            engine_id = await self._lookup.engine_id(conn, tenant_id, name)
            engine = None if engine_id is None else await self._runner.repository.get(conn, engine_stream_id(engine_id))
        if not isinstance(engine, DynamicEngine) or engine.deleted or engine.tenant_id != tenant_id:
            raise EngineNotFound(f"No engine named {name[:64]}", engine=name[:64])
        return engine

    async def ca_public_key(self, tenant_id: str, name: str) -> str:
        engine = await self.engine(tenant_id, name)
        if engine.ca_public_key is None:
            raise InvalidConfig(f"A {engine.engine_type} engine has no CA public key")
        return engine.ca_public_key

    # ---- helpers ------------------------------------------------------------------------------------------------

    def _target(
        self, engine_type: str, config: Mapping[str, Any], root: Mapping[str, Any], ca_key: bytes | None
    ) -> EngineTarget:
        return EngineTarget(engine_type=engine_type, config=dict(config), root=dict(root),
                            egress_allow=self._egress_allow, private_key_pem=ca_key)

    async def _verify(
        self, tenant_id: str, partner_id: str, name: str, engine_type: str, config: Mapping[str, Any],
        ca_key: bytes | None,
    ) -> None:
        """Build the engine's backend as it would run and check it works: ``invalid_config`` saying why otherwise,
        and nothing is stored."""
        path = root_credentials_path(config)
        root: dict[str, Any] = {}
        if path is not None:
            root, _ = await self._root.read(tenant_id, partner_id, name, path)
        try:
            backend = self._build(self._target(engine_type, config, root, ca_key))
        except UnsupportedEngine as exc:
            raise InvalidConfig(str(exc)) from None
        try:
            await backend.verify()
        except TargetError as exc:
            raise InvalidConfig(f"The engine could not be verified: {exc}", field="config") from None
        finally:
            await backend.close()

    async def _ca_key(self, engine: DynamicEngine) -> bytes | None:
        if engine.ca_key_ciphertext is None or engine.ca_key_id is None:
            return None
        async with self._runner.pool.acquire() as conn:
            pem = await open_private_key(
                self._keyring, conn, SealedKey(engine.ca_key_ciphertext, engine.ca_key_id), owner=engine.tenant_id,
                kind=SSH_CA_KEY, object_id=engine.engine_id,
            )
        return pem.encode()

    async def _backend(self, engine: DynamicEngine) -> _OpenBackend:
        """The engine's open backend (connections and root credentials kept for ``BACKEND_REUSE_SECONDS``, or until
        the engine changes), counted as in use: the caller decrements ``users`` and calls ``_close_if_retired``."""
        lock = self._opening.setdefault(engine.engine_id, asyncio.Lock())
        async with lock:
            current = self._open.get(engine.engine_id)
            fresh = current is not None and current.version == engine.version and \
                time.monotonic() - current.opened_at < BACKEND_REUSE_SECONDS
            if current is None or not fresh:
                if current is not None:
                    current.retired = True
                    await self._close_if_retired(current)
                path = root_credentials_path(engine.config)
                root: dict[str, Any] = {}
                if path is not None:
                    root, _ = await self._root.read(engine.tenant_id, engine.partner_id, engine.name, path)
                try:
                    backend = self._build(self._target(engine.engine_type, engine.config, root,
                                                       await self._ca_key(engine)))
                except UnsupportedEngine as exc:
                    raise InvalidConfig(str(exc)) from None
                current = _OpenBackend(backend, engine.version, time.monotonic())
                self._open[engine.engine_id] = current
            current.users += 1
            return current

    async def _retire(self, engine_id: str, *, only: _OpenBackend | None = None) -> None:
        """Stop reusing the engine's open backend (``only``: if it is still that one). After a change of the engine,
        and after a target refused: root credentials rotated by another server are then read again next time."""
        current = self._open.get(engine_id)
        if current is not None and (only is None or current is only):
            del self._open[engine_id]
            current.retired = True
            await self._close_if_retired(current)

    @staticmethod
    async def _close_if_retired(open_backend: _OpenBackend) -> None:
        if open_backend.retired and open_backend.users <= 0:
            await open_backend.backend.close()

    async def _restore_root(self, engine: DynamicEngine, now_root: dict[str, Any], old_root: dict[str, Any]) -> None:
        if not engine.engine_type.startswith("database."):
            # An aws rotation deleted the old key already; another rotation would only make a third.
            log.error("the new root credentials of engine %s could not be stored", engine.name)
            return
        backend = self._build(self._target(engine.engine_type, engine.config, now_root, None))
        try:
            password = old_root.get("password")
            if isinstance(password, str):
                await backend.rotate_root(password)
        except TargetError as exc:
            # The class only: a driver's text about a failed password change is no place to trust with one.
            log.error("the previous root password of engine %s could not be restored (%s)", engine.name,
                      type(exc).__name__)
        finally:
            await backend.close()

    async def _load(
        self, uow: UnitOfWork, tenant_id: str, name: str, access: AccessRecord | None
    ) -> DynamicEngine:
        engine_id = await self._lookup.engine_id(uow.conn, tenant_id, name)
        engine = None if engine_id is None else await uow.get(engine_stream_id(engine_id))
        if not isinstance(engine, DynamicEngine) or engine.deleted or engine.tenant_id != tenant_id:
            raise EngineNotFound(f"No engine named {name[:64]}", engine=name[:64])
        if access is not None:
            access.extra["engine"] = name
        return engine

    async def _engine_and_role(self, conn: Any, lease: Lease) -> tuple[DynamicEngine, dict[str, Any]]:
        engine = await self._runner.repository.get(conn, engine_stream_id(lease.engine_id))
        if not isinstance(engine, DynamicEngine) or engine.deleted:
            raise InvalidConfig(f"The lease's engine {lease.engine_name} no longer exists")
        return engine, engine.role(lease.role_name)

    def _lease_rights(self, actor: Actor) -> tuple[str, bool]:
        caller = actor.caller
        if caller is None:
            raise AccessDenied("Leases are changed on behalf of a caller")
        tenant_id = caller.require_tenant()
        may_manage = caller.principal.has_scope("dynamic:manage") and caller.principal.is_tenant_admin
        return tenant_id, may_manage

    async def _locked_lease(
        self, uow: UnitOfWork, tenant_id: str, lease_id: str, actor: Actor, may_manage: bool,
        access: AccessRecord | None,
    ) -> Lease:
        """The lease, its row locked first (see the module's docstring); a lease of someone else needs an admin with
        ``dynamic:manage``, and answers like a missing one to anyone else."""
        stream = await self._lookup.lock_lease(uow.conn, tenant_id, lease_id)
        lease = None if stream is None else await uow.get(stream)
        if not isinstance(lease, Lease) or (not may_manage and lease.requested_by != actor.identity_id):
            raise LeaseNotFound(f"No lease {lease_id[:64]}", lease_id=lease_id[:64])
        if access is not None:
            access.extra.update(lease_id=lease_id, engine=lease.engine_name, role=lease.role_name)
        return lease

    async def _still_granted(
        self, lease: Lease, engine: DynamicEngine, open_backend: _OpenBackend, role_name: str, role: dict[str, Any]
    ) -> None:
        """After the credential was created: was the lease revoked meanwhile (expired already, or revoked by its
        holder while the target was slow)? That revocation found no user to remove, so remove it now, and answer
        that there is no credential. ``FOR SHARE`` waits for a revocation in progress to commit."""
        async with self._runner.pool.acquire() as conn:
            state = await self._lookup.lease_state(conn, lease.tenant_id, lease.lease_id)
        if state == "active":
            return
        try:
            await open_backend.backend.revoke(_recipe(role_name, role), lease.username, {})
        except TargetError as exc:
            log.error("a credential created after its lease was revoked could not be removed",
                      extra={"lease_id": lease.lease_id, "engine": engine.name, "reason": str(exc)})
        raise ServiceUnavailable("The lease was revoked while its credential was being created; request a new one")

    async def _end_failed_creation(self, lease_id: str, tenant_id: str, actor: Actor) -> None:
        async def work(uow: UnitOfWork) -> None:
            stream = await self._lookup.lock_lease(uow.conn, tenant_id, lease_id)
            if stream is None:
                return
            lease = await uow.get(stream)
            await self._revoke_one(uow, lease, "creation_failed", actor, _Batch(), audit=False)

        try:
            await self._runner.run(work)
        except Exception:  # noqa: BLE001 - the lease then simply expires and is revoked by the worker
            log.warning("a lease whose creation failed could not be ended now; it will be on expiry",
                        extra={"lease_id": lease_id})

    async def _revoke_many(
        self, uow: UnitOfWork, leases: Sequence[Lease], reason: str, actor: Actor, batch: _Batch, *,
        audit: bool = False,
    ) -> None:
        """Revoke the leases on their targets, a few at once (the transaction's connection is not touched meanwhile),
        then stage each outcome in ``uow``."""
        pending = [lease for lease in leases if lease.state != "revoked"]
        engines: dict[str, Any] = {}
        for lease in pending:
            if lease.engine_id not in engines:
                engines[lease.engine_id] = await self._runner.repository.get(
                    uow.conn, engine_stream_id(lease.engine_id))
        limit = asyncio.Semaphore(REVOKE_CONCURRENCY)

        async def attempt(lease: Lease) -> str | None:
            async with limit:
                return await self._revoke_on_target(engines[lease.engine_id], lease)

        errors = await asyncio.gather(*(attempt(lease) for lease in pending))
        now = self._clock()
        # Staged by role: each batch then updates the per-role counts in one order, and two never deadlock on them.
        outcomes = sorted(zip(pending, errors, strict=True), key=lambda o: (o[0].engine_id, o[0].role_name))
        for lease, error in outcomes:
            if error is None:
                lease.revoke(reason, at=now, actor=actor.identity_id, request_id=actor.request_id)
                batch.revoked += 1
            else:
                lease.revocation_failed(reason, error, at=now, actor=actor.identity_id)
                batch.failed += 1
                log.warning("a lease's revocation failed; it will be retried", extra={
                    "lease_id": lease.lease_id, "engine": lease.engine_name, "attempts": lease.attempts})
            uow.add(lease)
            if audit:
                batch.accesses.append(_job_record(lease, actor, reason, error, now))

    async def _revoke_one(
        self, uow: UnitOfWork, lease: Lease, reason: str, actor: Actor, batch: _Batch, *, audit: bool
    ) -> bool:
        """Revoke one lease (staged in ``uow``); False when it was already revoked."""
        if lease.state == "revoked":
            return False
        await self._revoke_many(uow, [lease], reason, actor, batch, audit=audit)
        return True

    async def _revoke_on_target(self, engine: Any, lease: Lease) -> str | None:
        """Remove the lease's credential from its target; None when done, else why not (safe to show)."""
        if not isinstance(engine, DynamicEngine) or engine.deleted:
            return f"the engine {lease.engine_name} no longer exists"
        try:
            open_backend = await self._backend(engine)
            try:
                await open_backend.backend.revoke(_recipe(lease.role_name, engine.role(lease.role_name)),
                                                  lease.username, {})
            except TargetError:
                await self._retire(engine.engine_id, only=open_backend)
                raise
            finally:
                open_backend.users -= 1
                await self._close_if_retired(open_backend)
        except TargetError as exc:
            return str(exc)
        except (InvalidConfig, ServiceUnavailable, RoleNotFound) as exc:
            return exc.message
        except Exception as exc:  # noqa: BLE001 - one lease's failure must not undo the batch's other revocations
            # The class only, no traceback: an exception no backend translated may carry a driver's raw text.
            log.error("unexpected failure revoking a lease", extra={"lease_id": lease.lease_id,
                                                                    "error": type(exc).__name__})
            return f"unexpected failure ({type(exc).__name__})"
        return None


def _job_record(lease: Lease, actor: Actor, reason: str, error: str | None, at: datetime) -> AccessRecord:
    """The audit entry of a revocation no request asked for (expiry): by ``actor``, route ``lease-expiry``; a request
    id of its own (an access record's stream is named by it)."""
    return AccessRecord(
        recorded_at=at, request_id=new_request_id(), method="JOB", route="lease-expiry",
        action="dynamic_revoke", partner_id=lease.partner_id, tenant_id=lease.tenant_id,
        identity_id=actor.identity_id, identity_type="service_account", status=200 if error is None else 503,
        error_code=None if error is None else "service_unavailable",
        extra={"lease_id": lease.lease_id, "engine": lease.engine_name, "role": lease.role_name, "reason": reason,
               **({} if error is None else {"attempts": lease.attempts, "error": error})},
    )


def creds_address(tenant_id: str, partner_id: str | None, engine_name: str, role_name: str) -> SecretAddress:
    """Where policies grant a role's credentials: ``read`` on ``dynamic/<engine>/creds/<role>`` (a path in the
    tenant's policy space, as secrets are; docs/dynamic-secrets.md)."""
    return SecretAddress(owner=tenant_id, partner_id=partner_id or "", tenant_id=tenant_id,
                         path=f"dynamic/{check_engine_name(engine_name, 'engine')}/creds/{check_role_name(role_name)}")


def _role_fields(role: Mapping[str, Any]) -> dict[str, Any]:
    """A stored role as request fields (for a PATCH to merge into)."""
    fields = {key: role[key] for key in ("description", "default_ttl", "max_ttl", "max_leases", "username_template",
                                         "creation_statements", "revocation_statements", "renew_statements")}
    return {**{k: v for k, v in fields.items() if v not in (None, [])}, **role["settings"]}
