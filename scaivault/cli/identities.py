"""``scaivault identities``: manage the identity mirror without ScaiKey (users, groups, members, roles), and run a
sync from ScaiKey by hand.

The operator acts as ``system:cli``, through the same commands (and events) as the API, and reads through the same
directory (``projections/identity/directory.py``): ``--json`` prints the API's documents, one per line. An operator
with the database and the root key is above the API's role rules: ``users roles`` may grant any role, super_admin
included, and ``members add`` may add anyone. Users and groups are named by id or by e-mail address / group name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import click

from commands.actor import Actor
from projections.identity.directory import OPERATOR, IdentityDirectory, Listing, PageRequest
from scaivault.bootstrap import Container
from scaivault.domain.errors import TenantNotFound
from scaivault.domain.identities import ACTIVE, ROLES, parse_roles, profile_of_group, profile_of_user
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.serialization import dumps, format_timestamp

T = TypeVar("T")
Runner = Callable[[Callable[[Container], Awaitable[Any]]], Any]
CLI_ACTOR = Actor(identity_id="system:cli", request_id=None)
OPERATOR_ROLES = frozenset({"super_admin"})
LIST_PAGE_SIZE = 1000


async def _tenant(container: Container, tenant_id: str) -> str:
    tenant_id = parse_tenant_id(tenant_id)
    if await container.tenants.partner_of(tenant_id) is None:
        raise TenantNotFound("No such tenant; register it first (scaivault tenants create)", tenant_id=tenant_id)
    return tenant_id


def _directory(container: Container) -> IdentityDirectory:
    return container.identity.directory


async def _user_id(container: Container, tenant_id: str, reference: str) -> str:
    return str((await _directory(container).user(tenant_id, reference))["id"])


async def _group_id(container: Container, tenant_id: str, reference: str) -> str:
    return str((await _directory(container).group(tenant_id, reference))["id"])


async def _every(list_page: Callable[[PageRequest], Awaitable[Listing]]) -> list[dict[str, Any]]:
    """Every item of a list, page after page."""
    items: list[dict[str, Any]] = []
    page = PageRequest(1, LIST_PAGE_SIZE)
    while True:
        listing = await list_page(page)
        items.extend(listing.items)
        if not listing.has_more:
            return items
        page = PageRequest(page.page + 1, page.page_size)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    return str(value)


def _print_documents(documents: list[dict[str, Any]], as_json: bool, columns: tuple[str, ...]) -> None:
    for document in documents:
        if as_json:
            click.echo(dumps(document).decode())
        else:
            click.echo("  ".join(_cell(document.get(column)) for column in columns))


def identities_group(run: Runner) -> click.Group:
    """The ``identities`` command group; ``run`` is the CLI's container runner (``scaivault.cli.main._run``)."""

    @click.group("identities")
    def identities() -> None:
        """The identity mirror: users, groups, memberships, roles; sync from ScaiKey."""

    tenant_option = click.option("--tenant", "tenant_id", required=True, help="Tenant id, tnt_...")
    json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
    group_option = click.option("--group", "group", required=True, help="Group id or name.")
    user_option = click.option("--user", "user", required=True, help="User id or e-mail address.")

    def in_tenant(tenant_id: str, work: Callable[[Container, str], Awaitable[T]]) -> T:
        """``work(container, tenant)`` through the CLI's runner, once the tenant is known to be registered."""

        async def call(container: Container) -> T:
            return await work(container, await _tenant(container, tenant_id))

        return run(call)

    @identities.group("users")
    def users() -> None:
        """Users of a tenant."""

    @users.command("create")
    @tenant_option
    @click.option("--email", required=True)
    @click.option("--name", "display_name", default=None, help="Display name (default: the e-mail address).")
    @click.option("--status", default=ACTIVE, show_default=True)
    @click.option("--mfa", "mfa_enabled", is_flag=True, help="The user has MFA enabled.")
    def users_create(tenant_id: str, email: str, display_name: str | None, status: str, mfa_enabled: bool) -> None:
        """Create a user; prints its id."""
        raw = {"email": email, "display_name": display_name, "status": status, "mfa_enabled": mfa_enabled}

        async def create(container: Container, tenant: str) -> str:
            return await container.identity.commands.create_user(
                tenant, profile_of_user(raw), CLI_ACTOR, actor_roles=OPERATOR_ROLES
            )

        click.echo(in_tenant(tenant_id, create))

    @users.command("list")
    @tenant_option
    @click.option("--query", "query", default=None, help="Part of the e-mail address or display name.")
    @json_option
    def users_list(tenant_id: str, query: str | None, as_json: bool) -> None:
        """List users (id, e-mail, status, roles, groups)."""
        users = in_tenant(
            tenant_id, lambda c, tenant: _every(lambda page: _directory(c).users(tenant, page, query=query))
        )
        _print_documents(users, as_json, ("id", "email", "status", "roles", "groups"))

    @users.command("remove")
    @tenant_option
    @user_option
    def users_remove(tenant_id: str, user: str) -> None:
        """Remove a user (and its memberships)."""

        async def remove(container: Container, tenant: str) -> None:
            await container.identity.commands.remove_user(
                tenant, await _user_id(container, tenant, user), CLI_ACTOR, actor_roles=OPERATOR_ROLES
            )

        in_tenant(tenant_id, remove)
        click.echo("removed")

    @users.command("roles")
    @tenant_option
    @user_option
    @click.option("--roles", required=True, help=f"Comma- or space-separated, of: {', '.join(ROLES)}; '' for none.")
    def users_roles(tenant_id: str, user: str, roles: str) -> None:
        """Replace a user's roles."""

        async def assign(container: Container) -> list[str]:
            wanted = parse_roles(roles.replace(",", " ").split())  # inside the run: its errors are reported like all
            tenant = await _tenant(container, tenant_id)
            user_id = await _user_id(container, tenant, user)
            return await container.identity.commands.set_roles(
                tenant, user_id, wanted, CLI_ACTOR, changer_roles=OPERATOR_ROLES
            )

        click.echo(" ".join(run(assign)) or "(no roles)")

    @identities.group("groups")
    def groups() -> None:
        """Groups of a tenant."""

    @groups.command("create")
    @tenant_option
    @click.option("--name", required=True)
    @click.option("--description", default=None)
    def groups_create(tenant_id: str, name: str, description: str | None) -> None:
        """Create a group; prints its id."""
        raw = {"name": name, "description": description}

        async def create(container: Container, tenant: str) -> str:
            return await container.identity.commands.create_group(tenant, profile_of_group(raw), CLI_ACTOR)

        click.echo(in_tenant(tenant_id, create))

    @groups.command("list")
    @tenant_option
    @json_option
    def groups_list(tenant_id: str, as_json: bool) -> None:
        """List groups (id, name, status, members)."""
        groups = in_tenant(tenant_id, lambda c, tenant: _every(lambda page: _directory(c).groups(tenant, page)))
        _print_documents(groups, as_json, ("id", "name", "status", "member_count"))

    @groups.command("remove")
    @tenant_option
    @group_option
    def groups_remove(tenant_id: str, group: str) -> None:
        """Remove a group (and every membership in it)."""

        async def remove(container: Container, tenant: str) -> None:
            await container.identity.commands.remove_group(tenant, await _group_id(container, tenant, group), CLI_ACTOR)

        in_tenant(tenant_id, remove)
        click.echo("removed")

    @identities.group("members")
    def members() -> None:
        """Group memberships."""

    def change_membership(tenant_id: str, group: str, user: str, *, adding: bool) -> None:
        async def apply(container: Container, tenant: str) -> bool:
            return await container.identity.commands.change_membership(
                tenant, await _group_id(container, tenant, group), await _user_id(container, tenant, user),
                CLI_ACTOR, adding=adding, actor_roles=OPERATOR_ROLES,
            )

        changed = in_tenant(tenant_id, apply)
        click.echo(("added" if adding else "removed") if changed else "unchanged")

    @members.command("add")
    @tenant_option
    @group_option
    @user_option
    def members_add(tenant_id: str, group: str, user: str) -> None:
        """Add a user to a group."""
        change_membership(tenant_id, group, user, adding=True)

    @members.command("remove")
    @tenant_option
    @group_option
    @user_option
    def members_remove(tenant_id: str, group: str, user: str) -> None:
        """Remove a user from a group."""
        change_membership(tenant_id, group, user, adding=False)

    @members.command("list")
    @tenant_option
    @group_option
    @json_option
    def members_list(tenant_id: str, group: str, as_json: bool) -> None:
        """List a group's members (user id, e-mail, type, added)."""

        async def fetch(container: Container, tenant: str) -> list[dict[str, Any]]:
            group_id = await _group_id(container, tenant, group)
            return await _every(lambda page: _directory(container).members(tenant, group_id, page))

        _print_documents(in_tenant(tenant_id, fetch), as_json, ("user_id", "email", "membership_type", "added_at"))

    @identities.command("sync")
    @click.option("--partner", "partner_id", default=None, help="Only this partner, ptn_...")
    @click.option("--tenant", "tenant_id", default=None, help="Only this tenant, tnt_...")
    def sync(partner_id: str | None, tenant_id: str | None) -> None:
        """Sync from ScaiKey (SCAIKEY_URL) now and wait for it; prints the run (its counts in ``stats``) as JSON.
        Exit 1 if it failed."""
        from scaivault.identity.sync import SyncScope

        async def run_sync(container: Container) -> dict[str, Any]:
            scope = SyncScope(
                partner_id=parse_partner_id(partner_id) if partner_id else None,
                tenant_id=parse_tenant_id(tenant_id) if tenant_id else None,
            )
            synchronizer = container.identity.synchronizer
            started = await synchronizer.start(scope, CLI_ACTOR, trigger="cli")
            await synchronizer.wait()
            return await _directory(container).sync_run(OPERATOR, started.sync_id)

        outcome = run(run_sync)
        click.echo(dumps(outcome).decode())
        if outcome["status"] != "completed":
            raise SystemExit(1)

    return identities
