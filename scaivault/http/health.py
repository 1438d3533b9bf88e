"""Liveness, readiness, detailed health and version (spec reference/system, operations/health-and-monitoring).

``/v1/health/detailed`` shows pool statistics and the event store's global positions, which span every partner: on
the API port it needs the ``admin`` scope and the ``super_admin`` role (an operator, not one partner's admin), like
the metrics; on the internal address ``METRICS_BIND_ADDRESS`` it is served without authentication. It names the worker
process that answers (``worker``: index, count, whether it runs the singleton jobs; and, on the API port, its pid)."""

from __future__ import annotations

import platform
from datetime import UTC, datetime

from aiohttp import web

import scaivault
from scaivault.health import HealthChecks
from scaivault.http.context import Callers
from scaivault.http.operators import require_operator
from scaivault.http.responses import json_response
from scaivault.http.routing import UNAUDITED, RouteTable


async def health(request: web.Request) -> web.Response:
    return json_response({"status": "healthy", "timestamp": datetime.now(UTC)})


async def version(request: web.Request) -> web.Response:
    return json_response(
        {
            "version": scaivault.__version__,
            "api_version": "v1",
            "python": platform.python_version(),
            "event_store": "postgresql",
        }
    )


class HealthApi:
    def __init__(self, callers: Callers, checks: HealthChecks) -> None:
        self._callers = callers
        self._checks = checks

    def add_routes(self, table: RouteTable) -> None:
        table.add("GET", "/v1/health", health, action=UNAUDITED)
        table.add("GET", "/v1/health/ready", self.ready, action=UNAUDITED)
        table.add("GET", "/v1/health/detailed", self.detailed, action="health_detailed")
        table.add("GET", "/v1/version", version, action=UNAUDITED)

    async def ready(self, request: web.Request) -> web.Response:
        body, ready = await self._checks.readiness()
        return json_response(body, status=200 if ready else 503)

    async def detailed(self, request: web.Request) -> web.Response:
        require_operator(await self._callers.principal(request), "Detailed health")
        return json_response(await self._checks.detailed(with_pid=True))

    async def detailed_unauthenticated(self, request: web.Request) -> web.Response:
        """For the internal address only (no process id there: nobody authenticated asks)."""
        return json_response(await self._checks.detailed())
