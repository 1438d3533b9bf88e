"""``scaivault``: the server (``serve``) and the operator's commands (``tenants``, ``token``, ``keys``, ``migrate``,
``audit``, ``events``, ``projections``, ``identities``); the README lists them all.

Every command reads the same configuration as the server (DATABASE_URL, SCAIVAULT_DATA_DIR, ...), so tokens it
issues are the ones the server accepts. Exit codes follow the spec's CLI page: 1 general, 2 authentication,
3 authorization, 4 not found, 5 validation.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

import click
import orjson

import scaivault
from projections.maintenance.rebuild import ReadModel, Rebuilder, RebuildReport
from scaivault.bootstrap import Container, build_container, read_models
from scaivault.config import ConfigurationError, Settings
from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import ScaiVaultError
from scaivault.logs import configure_logging

T = TypeVar("T")

EXIT_BY_STATUS_CLASS = {401: 2, 403: 3, 404: 4, 400: 5, 422: 5}


def _settings() -> Settings:
    try:
        return Settings.from_env()
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(5)


def _run(action: Callable[[Container], Awaitable[T]]) -> T:
    """Run ``action`` with a container built from the environment; map our errors to the CLI's exit codes."""
    settings = _settings()
    configure_logging("warn", settings.log_format)

    async def main() -> T:
        container = await build_container(settings)
        try:
            return await action(container)
        finally:
            await container.close()

    try:
        return asyncio.run(main())
    except ScaiVaultError as exc:
        from scaivault.http.status import status_of

        click.echo(f"error: {exc.code}: {exc.message}", err=True)
        sys.exit(EXIT_BY_STATUS_CLASS.get(status_of(exc.code), 1))
    except ConfigurationError as exc:
        click.echo(str(exc), err=True)
        sys.exit(5)


@click.group()
@click.version_option(scaivault.__version__, prog_name="scaivault")
def main() -> None:
    """ScaiVault server and operator commands."""


@main.command()
@click.option("--demo", is_flag=True, help="Register a demo partner and tenant and print an admin token.")
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Server processes behind BIND_ADDRESS (default: SCAIVAULT_WORKERS, else one per usable core).",
)
def serve(demo: bool, workers: int | None) -> None:
    """Run the API server on BIND_ADDRESS: one process, or a supervisor with N worker processes on the one port."""
    from scaivault.cli.serve import serve as run_server
    from scaivault.workers import usable_cores

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    run_server(settings, demo=demo, workers=workers or settings.workers or usable_cores())


@main.command("serve-worker", hidden=True)
@click.option("--index", type=int, required=True)
@click.option("--of", "count", type=int, required=True)
@click.option("--parent", "parent_pid", type=int, required=True)
@click.option("--ready-fd", type=int, required=True)
def serve_worker(index: int, count: int, parent_pid: int, ready_fd: int) -> None:
    """One worker of `serve --workers N`, started by its supervisor (not a command for operators)."""
    from scaivault.cli.serve import serve_as_worker
    from scaivault.workers import WorkerRole, die_with_parent

    die_with_parent(parent_pid)
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format, worker=index)
    serve_as_worker(settings, WorkerRole(index, count), ready_fd=ready_fd)


@main.group()
def tenants() -> None:
    """Partners and tenants."""


@tenants.command("create")
@click.option("--partner", "partner_id", required=True, help="Partner id, ptn_...")
@click.option("--tenant", "tenant_id", required=True, help="Tenant id, tnt_...")
@click.option("--name", default=None, help="Display name of the tenant.")
def tenants_create(partner_id: str, tenant_id: str, name: str | None) -> None:
    """Register a tenant (and its partner, if new). Idempotent."""
    created = _run(lambda c: c.tenancy_commands.register_tenant(partner_id, tenant_id, name=name))
    click.echo(f"{'created' if created else 'exists'} {partner_id}/{tenant_id}")


@main.group()
def token() -> None:
    """Tokens of the built-in issuer, and personal access tokens."""


@token.command("issue")
@click.option("--partner", "partner_id", required=True)
@click.option("--tenant", "tenant_id", default=None, help="Omit for a partner-level token.")
@click.option("--identity", "identity_id", required=True, help="user:<email>, sa:<name>")
@click.option("--scopes", required=True, help='Space-separated, e.g. "secrets:read secrets:write"')
@click.option("--roles", default="", help="Space- or comma-separated, e.g. tenant_admin")
@click.option("--groups", default="", help="Space- or comma-separated, e.g. group:sre")
@click.option("--ttl", default=None, help="Lifetime: 1h for a JWT (default), 90d for a PAT (default)")
@click.option("--pat", is_flag=True, help="Issue an opaque personal access token (skt_...) instead of a JWT.")
def token_issue(
    partner_id: str,
    tenant_id: str | None,
    identity_id: str,
    scopes: str,
    roles: str,
    groups: str,
    ttl: str | None,
    pat: bool,
) -> None:
    """Print a new token, and nothing else."""
    from commands.tokens import IssueToken

    command = IssueToken(
        partner_id=partner_id,
        tenant_id=tenant_id,
        identity_id=identity_id,
        scopes=tuple(scopes.replace(",", " ").split()),
        roles=tuple(roles.replace(",", " ").split()),
        groups=tuple(groups.replace(",", " ").split()),
        ttl=parse_duration(ttl) if ttl else (timedelta(days=90) if pat else timedelta(hours=1)),
        personal_access_token=pat,
    )
    click.echo(_run(lambda c: c.token_commands.issue(command)))


@token.command("revoke")
@click.argument("token_or_id")
def token_revoke(token_or_id: str) -> None:
    """Revoke a token: a PAT (skt_... or its pat_ id), a JWT, or a JWT's jti (tok_...)."""
    revoked = _run(lambda c: c.token_commands.revoke(token_or_id))
    click.echo("revoked" if revoked else "unknown or already revoked")
    if not revoked:
        sys.exit(4)


@main.group()
def audit() -> None:
    """The audit log."""


@audit.command("verify")
@click.option("--tenant", "tenant_id", default=None, help="One tenant's chain (default: every chain).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def audit_verify(tenant_id: str | None, as_json: bool) -> None:
    """Recompute the audit chains; report the first entry altered, removed or reordered. Exit 1 if any is broken."""
    from projections.audit.queries import chains
    from projections.audit.verification import verify_audit_chain

    async def verify(container: Container) -> dict[str, dict[str, Any]]:
        names = [tenant_id] if tenant_id is not None else await chains(container.pool)
        return {name: await verify_audit_chain(container.pool, container.keyring, name) for name in names}

    reports = _run(verify)
    if as_json:
        click.echo(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, report in reports.items():
            label = name or "(no tenant)"
            if report["valid"]:
                click.echo(f"{label}: ok, {report['verified_entries']} entries")
            else:
                broken = report["first_invalid"]
                click.echo(f"{label}: BROKEN at {broken['id']}: {broken['problem']} ({broken['detail']})")
    if not all(report["valid"] for report in reports.values()):
        sys.exit(1)


@main.group()
def projections() -> None:
    """Read models: list, status, rebuild, verify."""


def _read_models(container: Container, name: str | None, everything: bool) -> list[ReadModel]:
    models = read_models(container.keyring)
    if everything:
        return models
    chosen = [model for model in models if model.name == name]
    if not chosen:
        raise click.BadParameter(f"unknown read model {name!r}; known: {', '.join(m.name for m in models)}")
    return chosen


@projections.command("list")
def projections_list() -> None:
    """Every read model, how it is kept current, and its tables."""

    async def describe(container: Container) -> list[ReadModel]:
        return read_models(container.keyring)

    for model in _run(describe):
        kind = "inline (in each command's transaction)" if model.inline else "catch-up (projection runner)"
        click.echo(f"{model.name:<12} {kind:<42} {', '.join(model.projection.tables)}")


@projections.command("status")
@click.option("--json", "as_json", is_flag=True)
def projections_status(as_json: bool) -> None:
    """Position, head and lag of the catch-up projections, and any failure."""

    async def status(container: Container) -> dict[str, Any]:
        return await container.projections.status(container.pool)

    report = _run(status)
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    for name, entry in report.items():
        line = (
            f"{name:<12} {entry['state']:<8} position {entry['position']} / head {entry['head']} (lag {entry['lag']})"
        )
        if entry["state"] == "failed":
            line += f": stopped at event {entry['failed_notification_id']}: {entry['error']}"
        click.echo(line)


def _progress_reporter(name: str) -> Callable[[int, int], None]:
    """A bar with rate and ETA on a terminal; a plain line every few seconds otherwise."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(desc=f"rebuild {name}", unit="ev", unit_scale=True, file=sys.stderr)

        def update(position: int, head: int) -> None:
            bar.total = head
            bar.n = position
            bar.refresh()

        return update
    started, last = time.monotonic(), [0.0]

    def line(position: int, head: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2 or position >= head:
            last[0] = now
            rate = position / max(now - started, 1e-9)
            eta = (head - position) / rate if rate else 0
            click.echo(f"{name}: {position}/{head} events, {rate:,.0f} events/s, eta {eta:,.0f}s", err=True)

    return line


@projections.command("run")
def projections_run() -> None:
    """Run the catch-up projections (audit log, event index) in this process until SIGINT/SIGTERM, for servers
    started with SCAIVAULT_RUN_PROJECTIONS=false. Several may run: each projection is run by one at a time."""
    import signal

    async def work(container: Container) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await container.projections.start()
        click.echo(f"running projections: {', '.join(container.projections.projections)}", err=True)
        await stop.wait()
        click.echo("stopping projections", err=True)

    _run(work)


@projections.command("rebuild")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True, help="Rebuild every read model.")
def projections_rebuild(name: str | None, everything: bool) -> None:
    """Rebuild NAME (or --all) beside the live model, then swap it in; serving never stops."""
    if not name and not everything:
        raise click.UsageError("name a read model, or --all")

    async def rebuild(container: Container) -> list[RebuildReport]:
        rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
        return [
            await rebuilder.rebuild(model, _progress_reporter(model.name))
            for model in _read_models(container, name, everything)
        ]

    for report in _run(rebuild):
        click.echo(f"rebuilt {report.name}: {report.events} events in {report.seconds:.1f}s"
                   f" ({report.rate:,.0f} events/s), at position {report.position}")


@projections.command("verify")
@click.argument("name", required=False)
@click.option("--all", "everything", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
def projections_verify(name: str | None, everything: bool, as_json: bool) -> None:
    """Rebuild a scratch copy at the live position and compare checksums. Exit 1 on any difference."""
    if not name and not everything:
        raise click.UsageError("name a read model, or --all")

    async def verify(container: Container) -> list[dict[str, Any]]:
        rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
        return [await rebuilder.verify(model) for model in _read_models(container, name, everything)]

    reports = _run(verify)
    if as_json:
        click.echo(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode())
    else:
        for report in reports:
            verdict = "identical" if report["identical"] else "DIFFERENT"
            click.echo(f"{report['name']}: {verdict} at position {report['position']}")
            for table, sums in report["tables"].items():
                if not sums["identical"]:
                    click.echo(f"  {table}: live {sums['live']} rebuilt {sums['rebuilt']}")
    if not all(report["identical"] for report in reports):
        sys.exit(1)


@main.group()
def keys() -> None:
    """The key hierarchy."""


@keys.command("rotate-root")
def keys_rotate_root() -> None:
    """Make a new root key and re-wrap every partner key under it (secret ciphertext is not rewritten)."""

    async def rotate(container: Container) -> int:
        async with container.pool.acquire() as conn:
            return await container.keyring.rotate_root_key(conn)

    click.echo(f"re-wrapped {_run(rotate)} partner keys")


@main.command()
def migrate() -> None:
    """Apply schema migrations (the server also does this at start-up). Needs only the database."""
    from scaivault.bootstrap import database_url
    from scaivault.database import connect
    from scaivault.eventstore.migrations import apply_migrations

    settings = _settings()

    async def apply() -> list[str]:
        conn = await connect(database_url(settings))
        try:
            return await apply_migrations(conn)
        finally:
            await conn.close()

    applied = asyncio.run(apply())
    click.echo(f"applied {', '.join(applied)}" if applied else "schema up to date")


def _events_group() -> click.Group:
    from scaivault.cli.events import events_group

    return events_group(_run)


main.add_command(_events_group())  # scaivault events list|show: the event log, read-only


def _identities_group() -> click.Group:
    from scaivault.cli.identities import identities_group

    return identities_group(_run)


main.add_command(_identities_group())  # scaivault identities users|groups|members|sync: the identity mirror


if __name__ == "__main__":
    main()
