"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.http import audit, audit_exports, auth, health, metrics, secrets
from scaivault.http import identity
from scaivault.http import policies
from scaivault.http.keys import CONTAINER
from scaivault.http.middleware import front_door

# Secret data is capped at 64 KiB; JSON escaping and metadata fit comfortably under this.
MAX_BODY_BYTES = 512 * 1024


def create_app(settings: Settings | None = None, *, container: Container | None = None) -> web.Application:
    """Build the app. With a ``container`` the caller owns it (tests); otherwise the app builds and closes one."""
    app = web.Application(middlewares=[front_door], client_max_size=MAX_BODY_BYTES)
    health.add_routes(app)
    auth.add_routes(app)
    secrets.add_routes(app)
    metrics.add_routes(app)
    audit.add_routes(app)
    audit_exports.add_routes(app)
    policies.add_routes(app)
    identity.add_routes(app)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        owned = container is None
        app[CONTAINER] = container if container is not None else await build_container(settings or Settings.from_env())
        await app[CONTAINER].start_background()
        yield
        if owned:
            await app[CONTAINER].close()

    app.cleanup_ctx.append(lifecycle)
    return app
