"""The composition root: builds every collaborator from Settings, once, for the server and the CLI alike."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

from commands.acme import AcmeCommands
from commands.audit_exports import AuditExportCommands
from commands.dns_providers import DnsProviderCommands
from commands.dynamic import REVOKE_FIRST, DynamicCommands
from commands.pki import PkiCommands, PublicationUrls
from commands.pki_requests import CsrRequestCommands, TrustAnchorCommands
from commands.policies import PolicyCommands
from commands.rotation import RotationCommands
from commands.secret_policies import SecretPolicyCommands
from commands.secrets import SecretCommands
from commands.subscriptions import SubscriptionCommands
from commands.tenancy import TenancyCommands
from commands.tokens import TokenCommands
from commands.unit_of_work import UnitOfWorkRunner
from commands.webhooks import WebhookCommands
from projections.acme.lookup import PostgresAcmeLookup
from projections.acme.projection import AcmeProjection
from projections.acme.projector import project_acme_event
from projections.acme.reader import AcmeReader
from projections.audit.projector import AuditLogProjection
from projections.audit.reader import AuditLogReader
from projections.audit_exports.lookup import PostgresAuditExportLookup
from projections.audit_exports.projection import AuditExportsProjection
from projections.audit_exports.projector import project_audit_export
from projections.audit_exports.reader import AuditExportReader
from projections.dns_providers.lookup import PostgresDnsProviderLookup
from projections.dns_providers.projection import DnsProvidersProjection
from projections.dns_providers.projector import project_dns_provider_event
from projections.dns_providers.reader import DnsProviderReader
from projections.dynamic.lookup import PostgresDynamicLookup
from projections.dynamic.projection import DynamicProjection
from projections.dynamic.projector import project_dynamic_event
from projections.dynamic.reader import DynamicReader
from projections.event_index import EventIndexProjection
from projections.fanout.projection import FanOutProjection
from projections.fanout.retention import trim_outbox
from projections.fanout.sinks import FanOutSink
from projections.identity.projection import IdentityProjection
from projections.identity.projector import project_identity_event
from projections.identity.queries import policy_groups
from projections.identity.roles import MirroredRoles
from projections.maintenance.rebuild import ReadModel
from projections.maintenance.retention import enforce_audit_retention
from projections.pki.lookup import PostgresPkiLookup
from projections.pki.projection import PkiProjection
from projections.pki.projector import project_pki_event
from projections.pki.reader import PkiReader
from projections.pki_requests.lookup import PostgresPkiRequestLookup
from projections.pki_requests.projection import PkiRequestsProjection
from projections.pki_requests.projector import project_pki_request_event
from projections.pki_requests.reader import PkiRequestReader
from projections.policies.projection import PoliciesProjection
from projections.policies.projector import project_policy_event
from projections.policies.reader import PolicyReader
from projections.quotas.lookup import PostgresQuotaLookup
from projections.rotation.lookup import PostgresRotationLookup
from projections.rotation.projection import RotationProjection
from projections.rotation.projector import project_rotation_event
from projections.rotation.reader import RotationReader
from projections.runner import Projection, ProjectionRunner
from projections.secret_policies.lookup import PostgresSecretPolicyLookup
from projections.secret_policies.projection import SecretPoliciesProjection
from projections.secret_policies.projector import project_secret_policy_event
from projections.secret_policies.reader import SecretPolicyReader
from projections.secrets.lookup import PostgresSecretLookup
from projections.secrets.projection import SecretsProjection
from projections.secrets.projector import project_secret_event
from projections.secrets.reader import SecretReader
from projections.subscriptions.fanout import SubscriptionSink
from projections.subscriptions.polling import FeedSignal, SubscriptionPolls
from projections.subscriptions.projection import SubscriptionsProjection
from projections.subscriptions.projector import project_subscription_event
from projections.subscriptions.reader import SubscriptionReader
from projections.tenancy.directory import TenantDirectory
from projections.tenancy.lookup import PostgresTenancyLookup
from projections.tenancy.projection import TenancyProjection
from projections.tenancy.projector import project_tenancy
from projections.webhooks.fanout import WebhookSink
from projections.webhooks.lookup import PostgresWebhookLookup
from projections.webhooks.projection import WebhooksProjection
from projections.webhooks.projector import project_webhook_event
from projections.webhooks.reader import WebhookReader
from scaivault.acme.challenges import TlsAlpn01Responder
from scaivault.acme.client import AcmeClient
from scaivault.acme.worker import AcmeOrderWorker
from scaivault.audit.access_records import AccessRecorder
from scaivault.audit.chain import CHAIN_KEY_NAME
from scaivault.audit.exports.credentials import RequesterCredentials
from scaivault.audit.exports.worker import AuditExportWorker
from scaivault.auth.authenticator import TokenAuthenticator
from scaivault.auth.authorization import Authorizer, bump_generation
from scaivault.auth.effective_principals import EffectivePrincipals
from scaivault.auth.issuer import BuiltinIssuer
from scaivault.auth.jwks import JwksClient
from scaivault.auth.revocation import REVOCATION_CHANNEL, RevocationCache
from scaivault.auth.revocation import purge_expired as purge_expired_revocations
from scaivault.auth.secret_permissions import AuthorizedSecretPermissions
from scaivault.clock import utcnow
from scaivault.config import Settings
from scaivault.crypto.ca_keys import CaKeys
from scaivault.crypto.keyring import KeyRing
from scaivault.crypto.root_keys import root_key_provider
from scaivault.database import create_pool, embedded_postgres_url
from scaivault.dns.factory import verify_provider
from scaivault.dns.service import DnsProviderService
from scaivault.domain.durations import parse_duration
from scaivault.domain.quotas import (
    LEASES_PER_TENANT,
    SUBSCRIPTIONS_PER_IDENTITY,
    SUBSCRIPTIONS_PER_TENANT,
    WEBHOOKS_PER_TENANT,
    Quota,
)
from scaivault.dynamic.expiry import LeaseExpiryWorker
from scaivault.dynamic.root_credentials import PolicyBoundRootCredentials
from scaivault.egress import parse_allow_list
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.migrations import apply_migrations
from scaivault.eventstore.recorder import EventStoreListener, PostgresEventStore
from scaivault.eventstore.repository import Repository
from scaivault.health import HealthChecks
from scaivault.identity.services import IdentityServices, build_identity_services
from scaivault.metrics import Metrics
from scaivault.ratelimit import RateLimiter
from scaivault.rotation.scheduler import RotationScheduler
from scaivault.tasks import cancel_and_wait, run_supervised
from scaivault.webhooks.client import WebhookClient
from scaivault.webhooks.dispatcher import DeliveryDispatcher, RetryPolicy
from scaivault.webhooks.service import WebhookDeliveries
from scaivault.webhooks.targets import SigningSecrets
from scaivault.workers import ALONE, WorkerRole

log = logging.getLogger(__name__)

REVOCATION_POLL_SECONDS = 2.0
HOUSEKEEPING_SECONDS = 60.0


@dataclass(frozen=True)
class BackgroundJob:
    """Work a serving process runs beside requests, started and stopped by the app's cleanup context."""

    name: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


def forever(name: str, work: Callable[[], Coroutine[Any, Any, None]]) -> BackgroundJob:
    """A job that is one task running ``work`` until it is stopped; work that fails is logged and started again
    (``run_supervised``), so a job never ends unnoticed."""
    tasks: list[asyncio.Task[None]] = []

    async def start() -> None:
        tasks.append(asyncio.create_task(run_supervised(name, work), name=name))

    async def stop() -> None:
        await cancel_and_wait(tasks)
        tasks.clear()

    return BackgroundJob(name, start, stop)


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
    principals: EffectivePrincipals
    access_recorder: AccessRecorder
    runner: UnitOfWorkRunner
    tenants: TenantDirectory
    http_session: aiohttp.ClientSession | None
    metrics: Metrics
    projections: ProjectionRunner
    authorizer: Authorizer
    rate_limiter: RateLimiter
    health: HealthChecks
    # the write side
    secret_commands: SecretCommands
    tenancy_commands: TenancyCommands
    token_commands: TokenCommands
    policy_commands: PolicyCommands
    rotation_commands: RotationCommands
    secret_policy_commands: SecretPolicyCommands
    subscription_commands: SubscriptionCommands
    audit_exports: AuditExportCommands
    identity: IdentityServices
    # the read side
    secret_reader: SecretReader
    audit_export_reader: AuditExportReader
    audit_log: AuditLogReader
    policy_reader: PolicyReader
    rotation_reader: RotationReader
    secret_policy_reader: SecretPolicyReader
    subscription_reader: SubscriptionReader
    # long polls of subscriptions, woken by this process's feed listener (``feed_signal``)
    subscription_polls: SubscriptionPolls
    feed_signal: FeedSignal
    # webhooks: management, reads, test sends and redeliveries, and the outbox worker (one per process)
    webhook_commands: WebhookCommands
    webhook_reader: WebhookReader
    webhook_deliveries: WebhookDeliveries
    webhook_dispatcher: DeliveryDispatcher
    webhook_client: WebhookClient
    # DNS providers (ACME DNS-01): management, reads, and the clients ACME opens for a name
    dns_provider_commands: DnsProviderCommands
    dns_provider_reader: DnsProviderReader
    dns_providers: DnsProviderService
    # the internal PKI: CAs, roles, certificates, CRLs and OCSP
    pki_commands: PkiCommands
    pki_reader: PkiReader
    # ACME: accounts and orders, and the worker that drives orders (one per process; orders claimed by lock)
    acme_commands: AcmeCommands
    acme_reader: AcmeReader
    acme_worker: AcmeOrderWorker
    # the PKI's CSR workflow and trust anchors
    csr_request_commands: CsrRequestCommands
    trust_anchor_commands: TrustAnchorCommands
    pki_request_reader: PkiRequestReader
    # dynamic secrets: engines, roles, leases, and the worker revoking expired leases (one per process; claims skip
    # what another holds)
    dynamic_commands: DynamicCommands
    dynamic_reader: DynamicReader
    lease_expiry: LeaseExpiryWorker
    # background work
    export_worker: AuditExportWorker
    rotation_scheduler: RotationScheduler
    # which serving process this is (``serve --workers N``); a single process is worker 0 of 1
    worker: WorkerRole

    def background_jobs(self, *, singletons: bool = True) -> list[BackgroundJob]:
        """What a serving process runs besides answering requests, in start order (stopped in reverse).

        Every process runs the per-process jobs: its own access records' group commit, its rate limiter's Redis
        probe, keeping its caches current (revocations, authorization), waking its subscriptions' long polls
        (the feed listener) and sending webhook deliveries (claims skip what another process holds, so every
        process shares the sending work). ``singletons``: whether it also runs the jobs that one process runs for
        all on this database (the primary worker of ``serve --workers N``, or every single-process server): the catch-up
        projections (unless ``SCAIVAULT_RUN_PROJECTIONS=false``),
        housekeeping, the audit-export worker and the rotation scheduler. These keep their own guards (advisory
        locks, idempotent work), so several servers on one database remain safe; ``singletons`` only keeps a
        server's other workers from holding connections to wait on them."""
        jobs = [
            BackgroundJob("access-records", self.access_recorder.start, self.access_recorder.close),
            BackgroundJob("rate-limit-redis-probe", self.rate_limiter.start, self.rate_limiter.close),
        ]
        if singletons and self.settings.run_projections:
            jobs.append(BackgroundJob("projections", self.projections.start, self.projections.stop))
        jobs.append(forever("revocation-sync", self._sync_revocations))
        if singletons:
            jobs += [forever("housekeeping", self._housekeeping), forever("audit-exports", self.export_worker.run)]
            jobs.append(forever("rotation-scheduler", self.rotation_scheduler.run))
        jobs.append(forever("authorization-sync", lambda: self.authorizer.run_sync(self.database_url)))
        jobs.append(forever("subscription-feed", lambda: self.feed_signal.run(self.database_url)))
        jobs.append(forever("webhook-deliveries", self.webhook_dispatcher.run))
        jobs.append(forever("acme-orders", self.acme_worker.run))
        jobs.append(forever("lease-expiry", self.lease_expiry.run))
        return jobs

    @contextlib.asynccontextmanager
    async def running_background(self) -> AsyncIterator[None]:
        """The background jobs running, outside an app (benchmarks, tests); a serving app runs each in its cleanup
        context instead."""
        started: list[BackgroundJob] = []
        try:
            for job in self.background_jobs(singletons=self.worker.singletons):
                await job.start()
                started.append(job)
            yield
        finally:
            for job in reversed(started):
                await job.stop()

    async def _sync_revocations(self) -> None:
        async with EventStoreListener(self.database_url, channel=REVOCATION_CHANNEL) as listener:
            while True:
                try:
                    await self.revocations.refresh(self.pool)
                except Exception as exc:  # noqa: BLE001 - never let the sync die: revocations must keep arriving
                    log.warning("revocation refresh failed: %s", type(exc).__name__)
                await listener.wait(REVOCATION_POLL_SECONDS)

    async def _housekeeping(self) -> None:
        """Purge soft-deleted secrets past retention, webhooks' previous signing secrets whose overlap ended,
        revocations of tokens long expired and audit entries past retention. Idempotent, so every server may run it."""
        while True:
            try:
                purged = await self.secret_commands.purge_expired_deletions()
                if purged:
                    log.info("purged secrets past their retention", extra={"count": purged})
                forgotten = await self.webhook_commands.forget_expired_previous_secrets()
                if forgotten:
                    log.info("previous webhook signing secrets destroyed", extra={"count": forgotten})
                async with self.pool.acquire() as conn:
                    await purge_expired_revocations(conn)
                retention = await enforce_audit_retention(
                    self.pool, self.keyring, retention=parse_duration(self.settings.audit_retention), now=utcnow()
                )
                if retention.removed_entries:
                    log.info("audit entries past retention removed", extra={"count": retention.removed_entries})
                now = utcnow()
                trimmed = await trim_outbox(
                    self.pool, feed_before=now - parse_duration(self.settings.event_feed_retention),
                    deliveries_before=now - parse_duration(self.settings.delivery_retention),
                )
                if trimmed.deliveries or trimmed.feed_entries:
                    log.info("outbox trimmed", extra={"deliveries": trimmed.deliveries, "feed": trimmed.feed_entries})
                if trimmed.orphaned_queues or trimmed.orphaned_deliveries:
                    log.info("leftovers of deleted receivers removed", extra={
                        "queues": trimmed.orphaned_queues, "deliveries": trimmed.orphaned_deliveries,
                    })
            except Exception as exc:  # noqa: BLE001 - a failed round is retried next time; the job must not die
                log.warning("housekeeping failed: %s", type(exc).__name__)
            await asyncio.sleep(HOUSEKEEPING_SECONDS)

    async def close(self) -> None:
        """Release what the container holds (a serving app has stopped its background jobs first)."""
        await self.identity.close()
        await self.webhook_client.close()
        if self.http_session is not None:
            await self.http_session.close()
        try:
            await asyncio.wait_for(self.pool.close(), timeout=10)
        except TimeoutError:  # a connection still held by a stuck task: do not wait for it for ever
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


def fan_out_projection(sinks: Sequence[FanOutSink] = ()) -> FanOutProjection:
    """The outbox of webhooks and subscriptions: run by the same runner as the read models, never rebuilt (a
    rebuild would deliver history again)."""
    return FanOutProjection(sinks)


def read_models(keyring: KeyRing) -> list[ReadModel]:
    """Every read model built from events, inline ones first (in the order a full rebuild takes them)."""
    inline = [ReadModel(TenancyProjection(), inline=True), ReadModel(SecretsProjection(), inline=True),
              ReadModel(AuditExportsProjection(), inline=True),
              ReadModel(PoliciesProjection(), inline=True), ReadModel(IdentityProjection(), inline=True),
              ReadModel(RotationProjection(), inline=True),
              ReadModel(SecretPoliciesProjection(), inline=True), ReadModel(SubscriptionsProjection(), inline=True),
              ReadModel(WebhooksProjection(), inline=True), ReadModel(DnsProvidersProjection(), inline=True),
              ReadModel(PkiProjection(), inline=True), ReadModel(PkiRequestsProjection(), inline=True),
              ReadModel(AcmeProjection(), inline=True), ReadModel(DynamicProjection(), inline=True)]
    return inline + [ReadModel(projection, inline=False) for projection in catch_up_projections(keyring)]


def database_url(settings: Settings) -> str:
    return settings.database_url or embedded_postgres_url(settings.data_dir)


async def build_container(
    settings: Settings, *, migrate: bool = True, worker: WorkerRole = ALONE
) -> Container:
    """``worker``: which process of ``serve --workers N`` this container serves (in-process rate-limit buckets hold
    1/N of each limit; ``Container.background_jobs``); a single process by default."""
    url = database_url(settings)
    pool = await create_pool(
        url, max_size=settings.pool_size(worker.count), lock_timeout=settings.event_lock_timeout_seconds
    )
    http_session: aiohttp.ClientSession | None = None
    try:
        if migrate:
            async with pool.acquire() as conn:
                await apply_migrations(conn)
        store = PostgresEventStore(lock_timeout_seconds=settings.event_lock_timeout_seconds)
        repository = Repository(store, create_mapper(), snapshot_interval=settings.snapshot_interval)
        keyring = KeyRing(root_key_provider(settings))
        metrics = Metrics()
        metrics.watch_pool(pool.get_size, pool.get_idle_size)
        runner = UnitOfWorkRunner(
            pool, repository,
            [project_secret_event, project_tenancy, project_audit_export, project_identity_event, project_policy_event,
             project_secret_policy_event, project_subscription_event, project_webhook_event,
             project_rotation_event, project_dns_provider_event, project_pki_event,
             project_pki_request_event, project_acme_event, project_dynamic_event],
            conflict_keys=SecretsProjection.concurrent_write_keys,
            timed=lambda: metrics.stage["command"],
        )
        async with pool.acquire() as conn:
            issuer = await BuiltinIssuer.load(
                conn, keyring.root, issuer=settings.builtin_issuer, audience=settings.token_audience
            )
        revocations = RevocationCache()
        await revocations.refresh(pool)
        jwks = None
        jwks_url = settings.scaikey_jwks_url or (
            settings.scaikey_url and settings.scaikey_url.rstrip("/") + "/.well-known/jwks.json"
        )
        if jwks_url:
            http_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
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
        projections = ProjectionRunner(
            url, store, repository.mapper,
            [*catch_up_projections(keyring), fan_out_projection([SubscriptionSink(), WebhookSink()])],
            on_progress=metrics.projection_progress,
        )
        if settings.unsafe_skip_read_audit:
            log.warning("SCAIVAULT_UNSAFE_SKIP_READ_AUDIT is set: reads leave no access record (benchmarks only)")
        access_recorder = AccessRecorder(
            pool, repository, timeout=settings.audit_timeout_seconds, metrics=metrics,
            skip=settings.unsafe_skip_read_audit,
        )
        # One cache of the identity mirror's records: callers' roles, and who the authorizer cuts off.
        mirrored_roles = MirroredRoles(pool)
        principals = EffectivePrincipals(authenticator, mirrored_roles)
        authorizer = Authorizer(pool, groups_of=policy_groups, standing=mirrored_roles)
        secret_permissions = AuthorizedSecretPermissions(authorizer)
        tenants = TenantDirectory(pool)
        tenancy_commands = TenancyCommands(runner, keyring)
        rate_limiter = RateLimiter.from_settings(settings, metrics, processes=worker.count)
        identity = build_identity_services(
            settings,
            pool=pool,
            runner=runner,
            tenancy=tenancy_commands,
            tenants=tenants,
            http_session=http_session,
            roles=mirrored_roles,
            # Policy evaluation caches group memberships and identities' standing: other servers learn of a change
            # when its transaction commits (the generation), this one at once (invalidate).
            on_authorization_changed=authorizer.invalidate,
            authorization_changed_in_transaction=bump_generation,
        )
        secret_reader = SecretReader(pool, repository, keyring, authorizer, metrics)
        rotation_lookup = PostgresRotationLookup()
        rotation_commands = RotationCommands(
            runner, keyring, rotation_lookup, PostgresSecretPolicyLookup(), secret_permissions
        )
        subscription_reader = SubscriptionReader(pool, authorizer)
        feed_signal = FeedSignal()
        audit_exports = AuditExportCommands(runner, secret_permissions, PostgresAuditExportLookup())
        egress_allow = parse_allow_list(settings.egress_allow)
        quota_counts = PostgresQuotaLookup()
        webhook_client = WebhookClient(egress_allow, timeout_seconds=settings.webhook_timeout_seconds)
        signing_secrets = SigningSecrets(keyring)
        ca_keys = CaKeys(keyring)
        pki_commands = PkiCommands(runner, PostgresPkiLookup(), keyring, ca_keys, PublicationUrls(settings.public_url))
        secret_commands = SecretCommands(
            runner,
            keyring,
            PostgresSecretLookup(),
            secret_permissions,
            delete_retention=parse_duration(settings.delete_retention),
            default_max_versions=settings.default_max_versions,
            secret_policies=PostgresSecretPolicyLookup(),
            rotation=rotation_lookup,
        )
        dns_providers = DnsProviderService(pool, keyring, allow=egress_allow)
        acme_client = AcmeClient(egress_allow)
        acme_lookup = PostgresAcmeLookup()
        acme_commands = AcmeCommands(
            runner, keyring, acme_client, secret_commands, acme_lookup, dns_providers,
            own_hosts=frozenset({urlsplit(settings.public_url).hostname or ""}) - {""},
        )
        tls_alpn = None
        if settings.acme_tls_alpn_address:
            alpn_host, _, alpn_port = settings.acme_tls_alpn_address.rpartition(":")
            tls_alpn = TlsAlpn01Responder(alpn_host, int(alpn_port))
        acme_worker = AcmeOrderWorker(pool, acme_commands, acme_client, acme_lookup, dns_providers, tls_alpn=tls_alpn)
        acme_commands.wake_with(acme_worker.wake)
        webhook_dispatcher = DeliveryDispatcher(
            pool, signing_secrets, webhook_client, dsn=url,
            retry=RetryPolicy(
                max_attempts=settings.webhook_max_attempts, base_seconds=settings.webhook_retry_base_seconds,
                cap_seconds=settings.webhook_retry_max_seconds,
            ),
            concurrency=settings.webhook_concurrency, per_target=settings.webhook_concurrency_per_target,
            lease_seconds=settings.webhook_lease,
        )
        dynamic_commands = DynamicCommands(
            runner, keyring, PostgresDynamicLookup(),
            PolicyBoundRootCredentials(secret_reader, authorizer, access_recorder), secret_commands,
            secret_permissions, per_tenant=Quota(LEASES_PER_TENANT, settings.max_leases_per_tenant, REVOKE_FIRST),
            egress_allow=egress_allow,
        )
        export_worker = AuditExportWorker(
            dsn=url,
            pool=pool,
            store=store,
            commands=audit_exports,
            # The job reads an S3 export's credentials on its requester's behalf, as a GET would.
            credentials=RequesterCredentials(secret_reader, principals, access_recorder),
            export_dir=settings.exports_directory,
            egress_allow=parse_allow_list(settings.egress_allow),
        )
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
            principals=principals,
            access_recorder=access_recorder,
            runner=runner,
            tenants=tenants,
            http_session=http_session,
            metrics=metrics,
            projections=projections,
            authorizer=authorizer,
            rate_limiter=rate_limiter,
            health=HealthChecks(pool, keyring, rate_limiter, projections, worker),
            secret_commands=secret_commands,
            tenancy_commands=tenancy_commands,
            token_commands=TokenCommands(runner, issuer, PostgresTenancyLookup()),
            policy_commands=PolicyCommands(
                runner, changed_in_transaction=bump_generation, on_change=authorizer.invalidate
            ),
            secret_policy_commands=SecretPolicyCommands(runner, PostgresSecretPolicyLookup()),
            subscription_commands=SubscriptionCommands(
                runner, keyring, quota_counts,
                per_identity=Quota(SUBSCRIPTIONS_PER_IDENTITY, settings.max_subscriptions_per_identity),
                per_tenant=Quota(SUBSCRIPTIONS_PER_TENANT, settings.max_subscriptions_per_tenant),
                egress_allow=parse_allow_list(settings.egress_allow),
            ),
            audit_exports=audit_exports,
            identity=identity,
            secret_reader=secret_reader,
            audit_export_reader=AuditExportReader(pool),
            audit_log=AuditLogReader(pool, keyring),
            policy_reader=PolicyReader(pool, authorizer),
            rotation_commands=rotation_commands,
            rotation_reader=RotationReader(pool, authorizer),
            rotation_scheduler=RotationScheduler(
                rotation_commands, interval_seconds=parse_duration(settings.scheduler_interval).total_seconds(),
                also=[pki_commands.run_due, acme_commands.run_due, dynamic_commands.rotate_due_roots],
            ),
            secret_policy_reader=SecretPolicyReader(pool),
            subscription_reader=subscription_reader,
            subscription_polls=SubscriptionPolls(pool, subscription_reader, authorizer, feed_signal),
            feed_signal=feed_signal,
            webhook_commands=WebhookCommands(
                runner, keyring, PostgresWebhookLookup(), quota_counts,
                per_tenant=Quota(WEBHOOKS_PER_TENANT, settings.max_webhooks_per_tenant), http_allowed=egress_allow,
            ),
            webhook_reader=WebhookReader(pool),
            webhook_deliveries=WebhookDeliveries(
                pool, signing_secrets, webhook_client, wake_dispatcher=webhook_dispatcher.wake
            ),
            webhook_dispatcher=webhook_dispatcher,
            webhook_client=webhook_client,
            dns_provider_commands=DnsProviderCommands(
                runner, keyring, PostgresDnsProviderLookup(),
                functools.partial(verify_provider, allow=egress_allow), http_allowed=egress_allow,
            ),
            dns_provider_reader=DnsProviderReader(pool),
            dns_providers=dns_providers,
            pki_commands=pki_commands,
            pki_reader=PkiReader(pool, ca_keys),
            acme_commands=acme_commands,
            acme_reader=AcmeReader(pool),
            acme_worker=acme_worker,
            csr_request_commands=CsrRequestCommands(runner, PostgresPkiRequestLookup(), pki_commands),
            trust_anchor_commands=TrustAnchorCommands(runner, PostgresPkiRequestLookup()),
            pki_request_reader=PkiRequestReader(pool),
            dynamic_commands=dynamic_commands,
            dynamic_reader=DynamicReader(pool),
            lease_expiry=LeaseExpiryWorker(dynamic_commands),
            export_worker=export_worker,
            worker=worker,
        )
    except BaseException:  # nothing half-built may outlive a failed start
        if http_session is not None:
            await http_session.close()
        await pool.close()
        raise
