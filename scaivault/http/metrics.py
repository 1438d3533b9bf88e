"""``/v1/metrics``: Prometheus exposition. Its labels name tenants of every partner, so on the API port it needs the
``admin`` scope and the ``super_admin`` role; unauthenticated only on the internal address ``METRICS_BIND_ADDRESS``,
which should not be reachable from outside (it also serves ``/v1/health/detailed``)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from scaivault.http.context import Callers
from scaivault.http.health import HealthApi
from scaivault.http.operators import require_operator
from scaivault.http.routing import RouteTable
from scaivault.metrics import Metrics


class MetricsApi:
    def __init__(self, callers: Callers, metrics: Metrics) -> None:
        self._callers = callers
        self._metrics = metrics

    def add_routes(self, table: RouteTable) -> None:
        table.add("GET", "/v1/metrics", self.metrics, action="metrics_read")

    def exposition(self, request: web.Request | None = None) -> web.Response:
        response = web.Response(body=self._metrics.exposition())
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def metrics(self, request: web.Request) -> web.Response:
        require_operator(await self._callers.principal(request), "Metrics")
        return self.exposition()


async def start_internal_address(metrics: MetricsApi, health: HealthApi, host: str, port: int) -> web.AppRunner:
    """Serve metrics and detailed health without authentication on an internal-only address; the caller cleans
    the runner up."""

    async def exposition(_: web.Request) -> web.Response:
        return metrics.exposition()

    app = web.Application()
    app.router.add_get("/v1/metrics", exposition)
    app.router.add_get("/metrics", exposition)
    app.router.add_get("/v1/health/detailed", health.detailed_unauthenticated)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
