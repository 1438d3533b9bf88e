"""``/v1/metrics``: Prometheus exposition. Its labels name tenants of every partner, so on the API port it needs the
``admin`` scope and the ``super_admin`` role (an operator, not one partner's admin); unauthenticated only on the
internal address ``METRICS_BIND_ADDRESS``, which should not be reachable from outside."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from scaivault.bootstrap import Container
from scaivault.domain.errors import AccessDenied, InsufficientScope
from scaivault.http.context import authenticated_principal
from scaivault.http.keys import CONTAINER


def _exposition(container: Container) -> web.Response:
    response = web.Response(body=container.metrics.exposition())
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def metrics(request: web.Request) -> web.Response:
    principal = await authenticated_principal(request)
    if not principal.has_scope("admin"):
        raise InsufficientScope("This request needs the scope admin", required_scope="admin")
    if not principal.has_role("super_admin"):
        raise AccessDenied("Metrics span every partner: they need the super_admin role")
    return _exposition(request.app[CONTAINER])


metrics.audit_action = "metrics_read"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/metrics", metrics)


async def start_internal_metrics(container: Container, host: str, port: int) -> web.AppRunner:
    """Serve the metrics without authentication on an internal-only address; the caller cleans the runner up."""

    async def internal(_: web.Request) -> web.Response:
        return _exposition(container)

    app = web.Application()
    app.router.add_get("/v1/metrics", internal)
    app.router.add_get("/metrics", internal)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
