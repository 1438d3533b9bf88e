"""Routes as data: each API module lists its routes with the audit action of each, and the app factory installs
them. The front door reads a matched route's action from here (``UNAUDITED``: the route leaves no access record:
liveness, readiness, version, the policy dry run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.web_urldispatcher import AbstractRoute

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Unaudited:
    """The action of a route that leaves no access record."""


UNAUDITED = Unaudited()
UNKNOWN_ACTION = "unknown"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Handler
    action: str | Unaudited


@dataclass
class RouteTable:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, path: str, handler: Handler, *, action: str | Unaudited) -> None:
        self.routes.append(Route(method, path, handler, action))

    def install(self, router: web.UrlDispatcher) -> dict[AbstractRoute, str | Unaudited]:
        """Register every route, in order (so sub-resources come before catch-all paths); return each installed
        route's audit action."""
        actions: dict[AbstractRoute, str | Unaudited] = {}
        for route in self.routes:
            installed = router.add_route(route.method, route.path, route.handler)
            actions[installed] = route.action
        return actions
