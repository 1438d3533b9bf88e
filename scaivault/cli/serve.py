"""``scaivault serve``: the API server, as one process or as a supervisor with N worker processes behind one port
(``--workers``, docs/adr/0016-several-worker-processes-behind-one-port.md).

One worker is one process, as ``serve`` always was: start-up, the app and its background jobs, all here. With N > 1
this process does the once-only start-up (configuration, the embedded PostgreSQL when there is no DATABASE_URL,
migrations, the root key and the issuer's key, ``--demo``, the TLS files, the port), then supervises N workers
(``scaivault/supervisor.py``), each a new process serving with its own container (pool, caches, jobs) through the
same code as a single process, on a socket of its own bound with SO_REUSEPORT. Worker 0 runs the singleton jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import sys
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta

import click

from scaivault.bootstrap import Container, build_container, database_url
from scaivault.config import ConfigurationError, Settings
from scaivault.database import name_sessions
from scaivault.domain.errors import ScaiVaultError
from scaivault.supervisor import Supervisor, say_ready
from scaivault.workers import ALONE, WorkerRole

DEMO_PARTNER = "ptn_demo"
DEMO_TENANT = "tnt_demo"
DEMO_SCOPES = (
    "secrets:read secrets:write secrets:delete secrets:list secrets:rotate policies:read policies:write "
    "audit:read audit:export admin"
)
# What the supervisor gives workers beyond their shutdown timeout to stop their jobs and close their pools.
STOP_MARGIN_SECONDS = 15.0


def serve(settings: Settings, *, demo: bool, workers: int) -> None:
    if workers == 1:
        serve_in_this_process(settings, demo=demo)
    else:
        supervise(settings, demo=demo, workers=workers)


@contextlib.contextmanager
def exiting_on_start_errors() -> Iterator[None]:
    """A server that cannot start says why in one line and exits: 1, or 5 for a configuration error."""
    try:
        yield
    except ScaiVaultError as exc:
        click.echo(f"error: {exc.code}: {exc.message}", err=True)
        sys.exit(1)
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(5)
    except OSError as exc:
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(1)


def new_event_loop(settings: Settings) -> asyncio.AbstractEventLoop:
    """The loop requests are served on (SCAIVAULT_EVENT_LOOP): uvloop by default, asyncio's own where uvloop is not
    installed (it has no Windows build) or not wanted."""
    if settings.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def serve_in_this_process(
    settings: Settings,
    *,
    demo: bool = False,
    role: WorkerRole = ALONE,
    migrate: bool = True,
    on_listening: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: a single-process server (``role`` ALONE), or one worker of several, which binds
    with SO_REUSEPORT and calls ``on_listening`` once it listens."""
    from aiohttp import web

    from scaivault.http.app import create_app

    async def app_factory() -> web.Application:
        container = await build_container(settings, migrate=migrate, worker=role)
        try:
            if demo:
                await print_demo_credentials(container)
            app = create_app(container, internal_address=True)
        except BaseException:
            await container.close()
            raise

        async def close(_: web.Application) -> None:
            await container.close()

        app.on_cleanup.append(close)
        return app

    ssl_context = tls_context(settings)
    loop = new_event_loop(settings)
    listening = on_listening or (lambda: click.echo(f"ScaiVault listening on {settings.public_url}", err=True))
    with exiting_on_start_errors():
        web.run_app(
            app_factory(),
            host=settings.host,
            port=settings.port,
            ssl_context=ssl_context,
            shutdown_timeout=settings.shutdown_timeout_seconds,
            access_log=None,
            reuse_port=None if role.alone else True,
            print=lambda text: listening(),
            loop=loop,
        )


def serve_as_worker(settings: Settings, role: WorkerRole, *, ready_fd: int) -> None:
    """Worker ``role.index`` of ``serve --workers N``: started by the supervisor, which did the start-up."""
    name_sessions(role.session_suffix())
    serve_in_this_process(settings, role=role, migrate=False, on_listening=lambda: say_ready(ready_fd))


def supervise(settings: Settings, *, demo: bool, workers: int) -> None:
    """The once-only start-up, then ``workers`` worker processes until SIGTERM/SIGINT (exit 0), or until a worker
    cannot be kept running (exit 1)."""
    tls_context(settings)  # checked here, once; each worker loads its own
    with exiting_on_start_errors():
        url = database_url(settings)  # starts the embedded PostgreSQL when there is no DATABASE_URL
        settings = settings.model_copy(update={"database_url": url})
        asyncio.run(_prepare(settings, demo=demo))
    try:
        reserved = reserve_address(settings.host, settings.port)
    except OSError as exc:
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(1)
    parent = os.getpid()

    def command(index: int, ready_fd: int) -> Sequence[str]:
        return [
            sys.executable, "-m", "scaivault.cli.main", "serve-worker",
            "--index", str(index), "--of", str(workers), "--parent", str(parent), "--ready-fd", str(ready_fd),
        ]

    supervisor = Supervisor(
        workers,
        command,
        # The workers use the database found here (the embedded one's socket, too) and migrate nothing.
        env={**os.environ, "DATABASE_URL": url},
        stop_timeout=settings.shutdown_timeout_seconds + STOP_MARGIN_SECONDS,
        on_ready=lambda: click.echo(f"ScaiVault listening on {settings.public_url} ({workers} workers)", err=True),
    )
    try:
        status = asyncio.run(supervisor.run())
    finally:
        for sock in reserved:
            sock.close()
    if status:
        sys.exit(status)


async def _prepare(settings: Settings, *, demo: bool) -> None:
    """What one process does before any worker starts: migrations, the root key's check, the issuer's signing key
    (made on first start), the demo tenant and its token. Nothing of it stays open."""
    container = await build_container(settings)
    try:
        if demo:
            await print_demo_credentials(container)
    finally:
        await container.close()


def reserve_address(host: str, port: int) -> list[socket.socket]:
    """Bind the API's address, without listening, with SO_REUSEPORT as the workers will: a port another program
    holds fails here, once, with a clear message, and while the supervisor lives no program that does not set
    SO_REUSEPORT can take the port while a worker restarts. Sockets that do not listen get no connections."""
    reserved: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            sock = socket.socket(family, kind, proto)
            reserved.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except BaseException:
        for sock in reserved:
            sock.close()
        raise
    return reserved


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """The server's TLS context, or None for plain HTTP; unreadable files stop start-up (exit 5)."""
    if not (settings.tls_cert_file and settings.tls_key_file):
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        click.echo(f"invalid configuration: TLS_CERT_FILE/TLS_KEY_FILE: {exc.strerror or exc}", err=True)
        sys.exit(5)
    return context


async def print_demo_credentials(container: Container) -> None:
    await container.tenancy_commands.register_tenant(DEMO_PARTNER, DEMO_TENANT, name="Demo tenant")
    token = container.issuer.issue(
        identity_id="user:admin@demo.example",
        tenant_id=DEMO_TENANT,
        partner_id=DEMO_PARTNER,
        scopes=DEMO_SCOPES.split(),
        roles=("tenant_admin", "partner_admin"),
        ttl=timedelta(hours=12),
    )
    url = container.settings.public_url
    # Deliberately printed to the operator's terminal (stdout), never logged.
    click.echo(
        f"\nScaiVault demo ready at {url}\n"
        f"Partner {DEMO_PARTNER}, tenant {DEMO_TENANT}; an admin token valid for 12 hours:\n\n"
        f"  export SCAIVAULT_URL={url}\n  export SCAIVAULT_TOKEN={token}\n\n"
        f'  curl -s -H "Authorization: Bearer $SCAIVAULT_TOKEN" $SCAIVAULT_URL/v1/auth/whoami\n'
    )
