"""``scaivault identities ...`` as operators run it: real processes, the server's configuration."""

from __future__ import annotations

import orjson

from tests.e2e.helpers import run_cli, run_cli_async
from tests.scaikey_standin import CLIENT_ID, CLIENT_SECRET, ScaiKeyStandIn

T = ("--tenant", "tnt_x")


def test_users_groups_members_and_roles_from_the_cli(cli_env: dict[str, str]) -> None:
    assert run_cli(cli_env, "tenants", "create", "--partner", "ptn_x", "--tenant", "tnt_x").returncode == 0
    created = run_cli(cli_env, "identities", "users", "create", *T, "--email", "Alice@X.example", "--name", "Alice")
    assert created.returncode == 0, created.stderr
    user_id = created.stdout.strip()
    assert user_id.startswith("usr_")
    group = run_cli(cli_env, "identities", "groups", "create", *T, "--name", "sre").stdout.strip()
    assert group.startswith("grp_")
    added = run_cli(cli_env, "identities", "members", "add", *T, "--group", "sre", "--user", "alice@x.example")
    assert (added.returncode, added.stdout.strip()) == (0, "added"), added.stderr
    again = run_cli(cli_env, "identities", "members", "add", *T, "--group", group, "--user", user_id)
    assert again.stdout.strip() == "unchanged"
    roles = run_cli(
        cli_env, "identities", "users", "roles", *T, "--user", user_id, "--roles", "super_admin,tenant_admin"
    )
    assert roles.stdout.strip() == "super_admin tenant_admin", roles.stderr

    listed = run_cli(cli_env, "identities", "users", "list", *T, "--json")
    users = [orjson.loads(line) for line in listed.stdout.splitlines()]
    assert [(u["id"], u["email"], u["roles"], u["groups"]) for u in users] == [
        (user_id, "alice@x.example", ["super_admin", "tenant_admin"], [group])
    ]
    assert users[0]["created_at"].endswith("Z")  # the API's documents, timestamps included
    text = run_cli(cli_env, "identities", "users", "list", *T).stdout.split()
    assert text == [user_id, "alice@x.example", "ACTIVE", "super_admin,tenant_admin", group]
    members = run_cli(cli_env, "identities", "members", "list", *T, "--group", "sre").stdout
    assert user_id in members and "DIRECT" in members
    assert "sre" in run_cli(cli_env, "identities", "groups", "list", *T).stdout

    # Errors map to the CLI's exit codes: not found 4, validation 5.
    missing = run_cli(cli_env, "identities", "members", "add", *T, "--group", "nope", "--user", user_id)
    assert missing.returncode == 4 and "identity_not_found" in missing.stderr
    unknown_tenant = run_cli(cli_env, "identities", "users", "list", "--tenant", "tnt_nope")
    assert unknown_tenant.returncode == 4 and "tenant_not_found" in unknown_tenant.stderr
    bad_role = run_cli(cli_env, "identities", "users", "roles", *T, "--user", user_id, "--roles", "root")
    assert bad_role.returncode == 5 and "invalid_role" in bad_role.stderr
    duplicate = run_cli(cli_env, "identities", "users", "create", *T, "--email", "alice@x.example")
    assert duplicate.returncode == 1 and "identity_exists" in duplicate.stderr
    no_scaikey = run_cli(cli_env, "identities", "sync")
    assert no_scaikey.returncode == 5 and "SCAIKEY_URL" in no_scaikey.stderr

    left = run_cli(cli_env, "identities", "members", "remove", *T, "--group", "sre", "--user", user_id)
    assert left.stdout.strip() == "removed"
    assert run_cli(cli_env, "identities", "groups", "remove", *T, "--group", "sre").returncode == 0
    assert run_cli(cli_env, "identities", "users", "remove", *T, "--user", user_id).returncode == 0
    assert run_cli(cli_env, "identities", "users", "list", *T).stdout == ""


async def test_sync_from_the_cli_against_scaikey(
    cli_env: dict[str, str], standin: tuple[ScaiKeyStandIn, str]
) -> None:
    """The stand-in ScaiKey serves from this process, so the CLI runs as an asyncio subprocess (the loop keeps
    serving while it waits)."""
    env = {**cli_env, "SCAIKEY_URL": standin[1], "SCAIKEY_CLIENT_ID": CLIENT_ID, "SCAIKEY_CLIENT_SECRET": CLIENT_SECRET}
    synced = await run_cli_async(env, "identities", "sync", "--tenant", "tnt_acme_prod")
    assert synced.returncode == 0, synced.stderr
    report = orjson.loads(synced.stdout)
    assert report["status"] == "completed" and report["stats"]["users_created"] == 2
    assert CLIENT_SECRET not in synced.stdout + synced.stderr
