"""The aiohttp application factory: the HTTP half of the composition root. Every API object gets the services it
uses from the container, its routes go into one table (with their audit actions), and the container's background
jobs run in the app's cleanup context."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

from scaivault.auth.authenticator import MAX_TOKEN_LENGTH
from scaivault.bootstrap import BackgroundJob, Container
from scaivault.egress import parse_allow_list
from scaivault.http import secrets
from scaivault.http.acme import AcmeApi
from scaivault.http.audit import AuditApi
from scaivault.http.audit_exports import AuditExportsApi
from scaivault.http.auth import AuthApi
from scaivault.http.context import Callers
from scaivault.http.dns_providers import DnsProvidersApi
from scaivault.http.dynamic import DynamicApi
from scaivault.http.health import HealthApi
from scaivault.http.identity import IdentityManagementApi, IdentityReadsApi, IdentitySyncApi, ScaiKeyWebhookApi
from scaivault.http.metrics import MetricsApi, start_internal_address
from scaivault.http.middleware import FrontDoor
from scaivault.http.pki import PkiApi
from scaivault.http.pki_requests import PkiRequestsApi
from scaivault.http.policies import PoliciesApi
from scaivault.http.responses import MAX_BODY_BYTES
from scaivault.http.rotation import RotationApi
from scaivault.http.routing import RouteTable, Unaudited
from scaivault.http.secret_policies import SecretPoliciesApi
from scaivault.http.subscriptions import SubscriptionsApi
from scaivault.http.webhooks import WebhooksApi
from scaivault.ratelimit.http import RequestCharges

log = logging.getLogger(__name__)

MAX_AUTHORIZATION_BYTES = MAX_TOKEN_LENGTH + 1024

# The audit action of every installed route (what the front door records), for diagnostics and tests.
ROUTE_ACTIONS: web.AppKey[dict[AbstractRoute, str | Unaudited]] = web.AppKey("route_actions")


def _running(job: BackgroundJob) -> Callable[[web.Application], AsyncIterator[None]]:
    async def context(_: web.Application) -> AsyncIterator[None]:
        await job.start()
        yield
        await job.stop()

    return context


def create_app(container: Container, *, internal_address: bool = False) -> web.Application:
    """The API over ``container`` (which the caller owns and closes). ``internal_address``: also serve metrics and
    detailed health, unauthenticated, on ``METRICS_BIND_ADDRESS`` (the server does; tests need not); worker i of
    ``serve --workers N`` on its port + i."""
    charges = RequestCharges(container.rate_limiter)
    callers = Callers(container.principals, container.tenants, charges, container.metrics)
    health = HealthApi(callers, container.health)
    metrics = MetricsApi(callers, container.metrics)
    table = RouteTable()
    health.add_routes(table)
    AuthApi(callers, container.principals).add_routes(table)
    secrets.add_routes(
        table,
        secrets.SecretReadsApi(callers, container.secret_reader, charges),
        secrets.SecretWritesApi(callers, container.secret_commands, container.metrics),
    )
    metrics.add_routes(table)
    AuditApi(callers, container.audit_log).add_routes(table)
    PoliciesApi(callers, container.policy_commands, container.policy_reader).add_routes(table)
    RotationApi(callers, container.rotation_commands, container.rotation_reader).add_routes(table)
    WebhooksApi(
        callers, container.webhook_commands, container.webhook_reader, container.webhook_deliveries
    ).add_routes(table)
    SecretPoliciesApi(callers, container.secret_policy_commands, container.secret_policy_reader).add_routes(table)
    DnsProvidersApi(callers, container.dns_provider_commands, container.dns_provider_reader).add_routes(table)
    PkiApi(callers, container.pki_commands, container.pki_reader, charges).add_routes(table)
    AcmeApi(callers, container.acme_commands, container.acme_reader).add_routes(table)
    PkiRequestsApi(callers, container.csr_request_commands, container.trust_anchor_commands,
                   container.pki_request_reader).add_routes(table)
    DynamicApi(callers, container.dynamic_commands, container.dynamic_reader).add_routes(table)
    SubscriptionsApi(
        callers, container.subscription_commands, container.subscription_reader, container.subscription_polls
    ).add_routes(table)
    AuditExportsApi(
        callers, container.audit_exports, container.audit_export_reader, container.export_worker.wake
    ).add_routes(table)
    identity = container.identity
    IdentityReadsApi(callers, identity.directory).add_routes(table)
    IdentityManagementApi(callers, identity.commands, identity.directory).add_routes(table)
    IdentitySyncApi(callers, identity.synchronizer, identity.directory).add_routes(table)
    ScaiKeyWebhookApi(identity.webhooks, identity.webhook_secrets).add_routes(table)

    # The parser's header limit (8 KiB by default) must admit the longest token the authenticator accepts: a longer
    # header is answered by the parser itself, in plain text quoting the header's start, and logged so.
    app = web.Application(client_max_size=MAX_BODY_BYTES, handler_args={"max_field_size": MAX_AUTHORIZATION_BYTES})
    actions = table.install(app.router)
    app[ROUTE_ACTIONS] = actions
    front_door = FrontDoor(
        access_recorder=container.access_recorder,
        metrics=container.metrics,
        trusted_proxies=parse_allow_list(container.settings.trusted_proxies),
        actions=actions,
    )
    app.middlewares.append(front_door.handle)
    # The singleton jobs run in one process of a server: the primary worker (every single-process server).
    for job in container.background_jobs(singletons=container.worker.singletons):
        app.cleanup_ctx.append(_running(job))
    address = container.worker.internal_address(container.settings.metrics_bind_address)
    if internal_address and address != "off":
        host, _, port = address.rpartition(":")
        app.cleanup_ctx.append(_running(_internal_address(metrics, health, host, int(port))))
    return app


def _internal_address(metrics: MetricsApi, health: HealthApi, host: str, port: int) -> BackgroundJob:
    runners: list[web.AppRunner] = []

    async def start() -> None:
        try:
            runners.append(await start_internal_address(metrics, health, host, port))
        except OSError as exc:  # losing the internal listener must not take the secrets API down with it
            log.error("internal address not served", extra={"address": f"{host}:{port}", "error": str(exc)})

    async def stop() -> None:
        for runner in runners:
            await runner.cleanup()

    return BackgroundJob("internal-address", start, stop)
