"""The composition root: builds every collaborator from Settings, once, for the server and the CLI alike."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg

from commands.audit_exports import AuditExportCommands
from commands.audit_retention import enforce_audit_retention
from commands.policies import PolicyCommands
from commands.secrets import SecretCommands
from commands.tenancy import TenancyCommands
from projections.identity.projection import IdentityProjection
from projections.identity.projector import project_identity_event
from projections.identity.queries import groups_of
from commands.unit_of_work import UnitOfWorkRunner, utcnow
from projections.secrets.projector import project_secret_event
from projections.tenancy import TenancyProjection, project_tenancy
from projections.audit.projector import AuditLogProjection
from projections.audit_exports import AuditExportsProjection, project_audit_export
from projections.policies.projection import PoliciesProjection
from projections.policies.projector import project_policy_event
from projections.event_index import EventIndexProjection
from projections.rebuild import ReadModel
from projections.runner import Projection, ProjectionRunner
from projections.secrets.projection import SecretsProjection
from projections.tenant_directory import TenantDirectory
from scaivault.audit.access_records import AccessRecorder
from scaivault.audit.exports import AuditExportWorker
from scaivault.audit.chain import CHAIN_KEY_NAME
from scaivault.auth.authenticator import TokenAuthenticator
from scaivault.auth.authorization import Authorizer, bump_generation
from scaivault.auth.issuer import BuiltinIssuer
from scaivault.auth.jwks import JwksClient
from scaivault.auth.revocation import REVOCATION_CHANNEL, RevocationCache
from scaivault.auth.revocation import purge_expired as purge_expired_revocations
from scaivault.config import Settings
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.root_keys import root_key_provider
from scaivault.database import create_pool, embedded_postgres_url
from scaivault.domain.durations import parse_duration
from scaivault.egress import parse_allow_list
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.migrations import apply_migrations
from scaivault.eventstore.recorder import EventStoreListener, PostgresEventStore
from scaivault.eventstore.repository import Repository
from scaivault.identity.services import IdentityServices, build_identity_services
from scaivault.metrics import Metrics
from scaivault.ratelimit import RateLimiter
from scaivault.tasks import cancel_and_wait

log = logging.getLogger(__name__)

REVOCATION_POLL_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 60.0


@dataclass
class Container:
    settings: Settings
    database_url: str
    pool: asyncpg.Pool
    store: PostgresEventStore
    repository: Repository
    keyring: KeyRing
    issuer: BuiltinIssuer
    revocations: RevocationCache
    authenticator: TokenAuthenticator
    access_recorder: AccessRecorder
    runner: UnitOfWorkRunner
    secret_commands: SecretCommands
    tenancy_commands: TenancyCommands
    tenants: TenantDirectory
    http_session: aiohttp.ClientSession | None
    metrics: Metrics
    projections: ProjectionRunner
    audit_exports: AuditExportCommands
    export_worker: AuditExportWorker
    authorizer: Authorizer
    policy_commands: PolicyCommands
    identity: IdentityServices
    rate_limiter: RateLimiter
    started_at: float = field(default_factory=time.monotonic)
    encryption_checked_at: float = float("-inf")  # last successful root-key round trip (readiness)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def start_background(self) -> None:
        """Jobs a serving process runs: access-record group commit, revocation sync, housekeeping."""
        await self.access_recorder.start()
        await self.rate_limiter.start()
        if self.settings.run_projections:
            await self.projections.start()
        self._tasks.append(asyncio.create_task(self._sync_revocations(), name="revocation-sync"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        self._tasks.append(asyncio.create_task(self.export_worker.run(), name="audit-exports"))
        self._tasks.append(asyncio.create_task(self.authorizer.run_sync(self.database_url), name="authorization-sync"))

    async def _sync_revocations(self) -> None:
        async with EventStoreListener(self.database_url, channel=REVOCATION_CHANNEL) as listener:
            while True:
                try:
                    await self.revocations.refresh(self.pool)
                except Exception as exc:  # never let the sync die: revocations must keep arriving
                    log.warning("revocation refresh failed: %s", type(exc).__name__)
                await listener.wait(REVOCATION_POLL_SECONDS)

    async def _housekeeping(self) -> None:
        """Purge soft-deleted secrets past retention and revocations of tokens long expired. Idempotent, so every
        server may run it."""
        while True:
            try:
                purged = await self.secret_commands.purge_expired_deletions()
                if purged:
                    log.info("purged secrets past their retention", extra={"count": purged})
                async with self.pool.acquire() as conn:
                    await purge_expired_revocations(conn)
                retention = await enforce_audit_retention(
                    self.pool, self.keyring, retention=parse_duration(self.settings.audit_retention), now=utcnow()
                )
                if retention.removed_entries:
                    log.info("audit entries past retention removed", extra={"count": retention.removed_entries})
            except Exception as exc:  # a failed round is retried next time; the job must not die
                log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def close(self) -> None:
        await self.projections.stop()
        await cancel_and_wait(self._tasks)
        await self.access_recorder.close()
        await self.identity.close()
        await self.rate_limiter.close()
        if self.http_session is not None:
            await self.http_session.close()
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except asyncio.TimeoutError:  # a connection still held by a stuck task: do not wait for it for ever
            log.warning("database pool did not close in time; terminating its connections")
            self.pool.terminate()


def catch_up_projections(keyring: KeyRing) -> list[Projection]:
    """The read models built by the projection runner (the inline ones live in the command transaction)."""
    chain_key: bytes | None = None

    async def audit_chain_key(conn: asyncpg.Connection) -> bytes:
        nonlocal chain_key
        if chain_key is None:
            chain_key = await keyring.system_key(conn, CHAIN_KEY_NAME)
        return chain_key

    return [AuditLogProjection(audit_chain_key), EventIndexProjection()]


def read_models(keyring: KeyRing) -> list[ReadModel]:
    """Every read model built from events, inline ones first (in the order a full rebuild takes them)."""
    inline = [ReadModel(TenancyProjection(), inline=True), ReadModel(SecretsProjection(), inline=True),
              ReadModel(AuditExportsProjection(), inline=True),
              ReadModel(PoliciesProjection(), inline=True), ReadModel(IdentityProjection(), inline=True)]
    return inline + [ReadModel(projection, inline=False) for projection in catch_up_projections(keyring)]


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_postgres_url(settings.data_dir)


async def build_container(settings: Settings, *, migrate: bool = True) -> Container:
    url = database_url(settings)
    pool = await create_pool(url, max_size=settings.db_pool_size, lock_timeout=settings.event_lock_timeout_seconds)
    try:
        if migrate:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
        store = PostgresEventStore(lock_timeout_seconds=settings.event_lock_timeout_seconds)
        repository = Repository(store, create_mapper(), snapshot_interval=settings.snapshot_interval)
        keyring = KeyRing(root_key_provider(settings))
        runner = UnitOfWorkRunner(
            pool, repository, [project_secret_event, project_tenancy, project_audit_export, project_identity_event,
                          project_policy_event]
        )
        async with pool.acquire() as conn:
            issuer = await BuiltinIssuer.load(
                conn, keyring.root, issuer=settings.builtin_issuer, audience=settings.token_audience
            )
        revocations = RevocationCache()
        await revocations.refresh(pool)
        http_session = None
        jwks = None
        if settings.scaikey_jwks_url or settings.scaikey_url:
            http_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
            jwks_url = settings.scaikey_jwks_url or settings.scaikey_url.rstrip("/") + "/.well-known/jwks.json"
            jwks = JwksClient(jwks_url, http_session)
        authenticator = TokenAuthenticator(
            pool,
            issuer=issuer,
            jwks=jwks,
            scaikey_issuer=settings.scaikey_issuer or settings.scaikey_url,
            audience=settings.token_audience,
            revocations=revocations,
            # The sync task refreshes every 2 s; should it stall, requests refresh inline (or fail closed) after 5 s.
            revocation_max_age=5.0,
        )
        metrics = Metrics()
        metrics.watch_pool(pool.get_size, pool.get_idle_size)
        projections = ProjectionRunner(
            url, store, repository.mapper, catch_up_projections(keyring), on_progress=metrics.projection_progress
        )
        if settings.unsafe_skip_read_audit:
            log.warning("SCAIVAULT_UNSAFE_SKIP_READ_AUDIT is set: reads leave no access record (benchmarks only)")
        access_recorder = AccessRecorder(
            pool, repository, timeout=settings.audit_timeout_seconds, metrics=metrics,
            skip=settings.unsafe_skip_read_audit,
        )
        audit_exports = AuditExportCommands(runner)
        export_worker = AuditExportWorker(
            dsn=url,
            pool=pool,
            store=store,
            commands=audit_exports,
            keyring=keyring,
            access_recorder=access_recorder,
            export_dir=settings.exports_directory,
            egress_allow=parse_allow_list(settings.egress_allow),
        )
        authorizer = Authorizer(pool, groups_of=groups_of)
        return Container(
            settings=settings,
            database_url=url,
            pool=pool,
            store=store,
            repository=repository,
            keyring=keyring,
            issuer=issuer,
            revocations=revocations,
            authenticator=authenticator,
            access_recorder=access_recorder,
            runner=runner,
            secret_commands=SecretCommands(
                runner,
                keyring,
                delete_retention=parse_duration(settings.delete_retention),
                default_max_versions=settings.default_max_versions,
            ),
            tenancy_commands=TenancyCommands(runner, keyring),
            tenants=TenantDirectory(pool),
            http_session=http_session,
            metrics=metrics,
            projections=projections,
            audit_exports=audit_exports,
            export_worker=export_worker,
            authorizer=authorizer,
            policy_commands=PolicyCommands(runner, on_change=authorizer.invalidate),
            identity=build_identity_services(
                settings,
                pool=pool,
                runner=runner,
                tenancy=TenancyCommands(runner, keyring),
                tenants=TenantDirectory(pool),
                http_session=http_session,
                # Policy evaluation caches group memberships: other servers learn of a change when its transaction
                # commits (the generation), this one at once (invalidate).
                on_membership_changed=authorizer.invalidate,
                membership_changed_in_transaction=bump_generation,
            ),
            rate_limiter=RateLimiter.from_settings(settings, metrics),
        )
    except BaseException:
        await pool.close()
        raise
