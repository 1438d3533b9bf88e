"""Policies applied to the Secrets API: every endpoint through the evaluator, roles, groups, conditions, the
intersection with scopes, revocation on the very next request, and policy-aware listing."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from projections.secrets import reader as secret_reader
from scaivault.bootstrap import Container
from tests.e2e.conftest import OTHER_TENANT, TENANT
from tests.e2e.helpers import admin, caller_token, error_of, grant, put_secrets

SPEC_PATHS = ("app/db", "app/db/password", "app/db/user", "app/db/primary/password", "app/ssl/cert",
              "service/ssl/key", "ssl/cert", "other/app/db")


async def status(client: TestClient, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> int:
    return (await client.request(method, path, headers=headers, **kwargs)).status


async def test_without_a_role_or_a_binding_nothing_is_allowed(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/db")
    nobody = caller_token(container)
    for method, url, body in [
        ("GET", "/v1/secrets/app/db", None), ("GET", "/v1/secrets/app/db/metadata", None),
        ("GET", "/v1/secrets/app/db/versions", None), ("PUT", "/v1/secrets/app/db", {"data": {"v": 2}}),
        ("PATCH", "/v1/secrets/app/db/metadata", {"metadata": {"owner": "me"}}),
        ("DELETE", "/v1/secrets/app/db", None), ("POST", "/v1/secrets/app/db/restore", None),
        ("GET", "/v1/secrets?prefix=app", None), ("GET", "/v1/secrets/app/nothing-here", None),
    ]:
        response = await client.request(method, url, json=body, headers=nobody)
        assert await error_of(response) == (403, "access_denied"), (method, url)
    batch = await (await client.post("/v1/secrets/batch", json={"paths": ["app/db"]}, headers=nobody)).json()
    assert batch == {"secrets": {}, "errors": {"app/db": {"code": "access_denied",
                                                          "message": "No policy permits read on this path"}}}


@pytest.mark.parametrize("permission,method,url,body,ok", [
    ("read", "GET", "/v1/secrets/app/db/password", None, 200),
    ("list", "GET", "/v1/secrets/app/db/password/metadata", None, 200),
    ("list", "GET", "/v1/secrets/app/db/password/versions", None, 200),
    ("write", "PUT", "/v1/secrets/app/db/password", {"data": {"v": 2}}, 200),
    ("write", "PATCH", "/v1/secrets/app/db/password/metadata", {"metadata": {"owner": "me"}}, 200),
    ("delete", "DELETE", "/v1/secrets/app/db/password", None, 200),
])
async def test_each_endpoint_needs_its_permission(
    client: TestClient, container: Container, permission: str, method: str, url: str, body: Any, ok: int
) -> None:
    await put_secrets(client, container, "app/db/password")
    others = [p for p in ("read", "write", "delete", "list", "rotate") if p != permission]
    await grant(client, container, [{"path_pattern": "app/db/*", "permissions": others}])
    svc = caller_token(container)
    assert await error_of(await client.request(method, url, json=body, headers=svc)) == (403, "access_denied")
    await grant(client, container, [{"path_pattern": "app/db/*", "permissions": [permission]}])
    assert await status(client, method, url, svc, json=body) == ok


async def test_the_spec_glob_table_over_http(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, *SPEC_PATHS)
    table = {
        "app/db": {"app/db"},
        "app/db/*": {"app/db/password", "app/db/user"},
        "app/**": {"app/db", "app/db/password", "app/db/user", "app/db/primary/password", "app/ssl/cert"},
        "**/ssl/*": {"app/ssl/cert", "service/ssl/key"},
    }
    for n, (pattern, expected) in enumerate(table.items()):
        identity = f"sa:glob-{n}"
        await grant(client, container, [{"path_pattern": pattern, "permissions": ["read"]}], identity_id=identity)
        svc = caller_token(container, "secrets:read", identity=identity)
        readable = {p for p in SPEC_PATHS if await status(client, "GET", f"/v1/secrets/{p}", svc) == 200}
        assert readable == expected, pattern


async def test_scopes_and_policies_intersect(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/db")
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["admin"]}])
    read_only_token = caller_token(container, "secrets:read")
    assert await status(client, "GET", "/v1/secrets/app/db", read_only_token) == 200
    assert await error_of(await client.put("/v1/secrets/app/db", json={"data": {}}, headers=read_only_token)) == (
        403, "insufficient_scope"
    )
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}], identity_id="sa:reader")
    reader = caller_token(container, identity="sa:reader")  # every secrets scope, but only read by policy
    assert await status(client, "GET", "/v1/secrets/app/db", reader) == 200
    assert await error_of(await client.put("/v1/secrets/app/db", json={"data": {}}, headers=reader)) == (
        403, "access_denied"
    )


async def test_roles_hold_every_permission_in_their_scope(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/db")
    tenant_admin = caller_token(container, roles=("tenant_admin",))
    assert await status(client, "GET", "/v1/secrets/app/db", tenant_admin) == 200
    assert await status(client, "PUT", "/v1/secrets/app/new", tenant_admin, json={"data": {}}) == 201
    partner_admin = caller_token(container, roles=("partner_admin",))
    assert await status(client, "PUT", f"/v1/t/{OTHER_TENANT}/secrets/app/x", partner_admin, json={"data": {}}) == 201
    assert await status(client, "GET", f"/v1/t/{OTHER_TENANT}/secrets/app/x", partner_admin) == 200
    # tenant_admin of one tenant holds nothing in another (it cannot even act there).
    other_admin = caller_token(container, roles=("tenant_admin",), tenant=OTHER_TENANT)
    assert await status(client, "GET", "/v1/secrets/app/x", other_admin) == 200
    assert await error_of(await client.get("/v1/t/tnt_acme_prod/secrets/app/db", headers=other_admin)) == (
        403, "tenant_access_denied"
    )
    # Some other role is no admin.
    auditor = caller_token(container, roles=("auditor",))
    assert await error_of(await client.get("/v1/secrets/app/db", headers=auditor)) == (403, "access_denied")


async def test_revoking_a_binding_or_deleting_a_policy_holds_from_the_next_request(
    client: TestClient, container: Container
) -> None:
    await put_secrets(client, container, "app/db")
    svc = caller_token(container, "secrets:read")
    policy_id, binding_id = await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}])
    assert await status(client, "GET", "/v1/secrets/app/db", svc) == 200
    revoked = await client.delete(f"/v1/policies/{policy_id}/bindings/{binding_id}", headers=admin(container))
    assert revoked.status == 200
    assert await error_of(await client.get("/v1/secrets/app/db", headers=svc)) == (403, "access_denied")
    policy_id, _ = await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}])
    assert await status(client, "GET", "/v1/secrets/app/db", svc) == 200
    await client.patch(f"/v1/policies/{policy_id}", json={"is_active": False}, headers=admin(container))
    assert await status(client, "GET", "/v1/secrets/app/db", svc) == 403
    await client.patch(f"/v1/policies/{policy_id}", json={"is_active": True}, headers=admin(container))
    assert await status(client, "GET", "/v1/secrets/app/db", svc) == 200
    deleted = await client.delete(f"/v1/policies/{policy_id}?force=true", headers=admin(container))
    assert deleted.status == 200
    assert await error_of(await client.get("/v1/secrets/app/db", headers=svc)) == (403, "access_denied")


async def test_group_bindings_apply_to_the_tokens_groups(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/db")
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}], identity_id="group:sre")
    member = caller_token(container, "secrets:read", identity="user:bob@acme.example", groups=("group:SRE",))
    outsider = caller_token(container, "secrets:read", identity="user:eve@acme.example", groups=("group:dev",))
    assert await status(client, "GET", "/v1/secrets/app/db", member) == 200
    assert await status(client, "GET", "/v1/secrets/app/db", outsider) == 403


async def test_each_condition_fails_with_its_own_code(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "vpn/db", "local/db", "mfa/db", "strict/db", "night/db", "now/db")
    now = datetime.now(UTC)
    later = {"start": f"{(now + timedelta(hours=2)).hour:02d}:00", "end": f"{(now + timedelta(hours=3)).hour:02d}:00"}
    around = {"start": f"{(now - timedelta(hours=1)).hour:02d}:00", "end": f"{(now + timedelta(hours=2)).hour:02d}:00"}
    await grant(client, container, [
        {"path_pattern": "vpn/*", "permissions": ["read"], "conditions": {"ip_ranges": ["10.0.0.0/8"]}},
        {"path_pattern": "local/*", "permissions": ["read"], "conditions": {"ip_ranges": ["127.0.0.0/8", "::1/128"]}},
        {"path_pattern": "mfa/*", "permissions": ["read"], "conditions": {"require_mfa": True}},
        {"path_pattern": "strict/*", "permissions": ["read"],
         "conditions": {"require_mfa": True, "mfa_max_age": "5m"}},
        {"path_pattern": "night/*", "permissions": ["read"], "conditions": {"time_windows": [later]}},
        {"path_pattern": "now/*", "permissions": ["read"], "conditions": {"time_windows": [around]}},
    ])
    plain = caller_token(container, "secrets:read")
    fresh_mfa = caller_token(container, "secrets:read", mfa_verified_at=now - timedelta(minutes=1))
    old_mfa = caller_token(container, "secrets:read", mfa_verified_at=now - timedelta(minutes=30))
    assert await error_of(await client.get("/v1/secrets/vpn/db", headers=plain)) == (403, "ip_not_allowed")
    # X-Forwarded-For is not believed unless its sender is a trusted proxy (none is configured here).
    spoofed = await client.get("/v1/secrets/vpn/db", headers={**plain, "X-Forwarded-For": "10.1.2.3"})
    assert await error_of(spoofed) == (403, "ip_not_allowed")
    assert await status(client, "GET", "/v1/secrets/local/db", plain) == 200
    assert await error_of(await client.get("/v1/secrets/mfa/db", headers=plain)) == (403, "mfa_required")
    assert await status(client, "GET", "/v1/secrets/mfa/db", fresh_mfa) == 200
    assert await status(client, "GET", "/v1/secrets/strict/db", fresh_mfa) == 200
    assert await error_of(await client.get("/v1/secrets/strict/db", headers=old_mfa)) == (403, "mfa_required")
    assert await error_of(await client.get("/v1/secrets/night/db", headers=plain)) == (403, "time_window_violation")
    assert await status(client, "GET", "/v1/secrets/now/db", plain) == 200
    details = (await (await client.get("/v1/secrets/vpn/db", headers=plain)).json())["error"]["details"]
    assert (details["condition"], details["path"]) == ("ip_ranges", "vpn/db")
    assert details["policy_id"].startswith("pol_")


async def test_partner_secrets_keep_the_spec_rule(client: TestClient, container: Container) -> None:
    partner_admin = caller_token(container, roles=("partner_admin",))
    assert await status(client, "PUT", "/v1/partner/secrets/shared/key", partner_admin, json={"data": {}}) == 201
    nobody = caller_token(container)  # no role, no binding: every identity of the partner's tenants may read
    assert await status(client, "GET", "/v1/partner/secrets/shared/key", nobody) == 200
    assert await status(client, "GET", "/v1/partner/secrets?prefix=shared", nobody) == 200
    assert await error_of(await client.put("/v1/partner/secrets/shared/key", json={"data": {}}, headers=nobody)) == (
        403, "access_denied"
    )


# ---- listing ---------------------------------------------------------------------------------------------------


async def list_all(client: TestClient, headers: dict[str, str], prefix: str, limit: int) -> tuple[list[str], int]:
    """Every page of a listing; returns the paths in order and the number of pages."""
    paths: list[str] = []
    cursor, pages = None, 0
    while True:
        query = f"/v1/secrets?prefix={prefix}&limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        response = await client.get(query, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        paths += [secret["path"] for secret in body["secrets"]]
        pages += 1
        assert pages < 500
        if not body["has_more"]:
            assert body["cursor"] is None
            return paths, pages
        cursor = body["cursor"]


async def test_listing_shows_only_what_the_caller_may_list(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, *SPEC_PATHS, "app/db/password-old")
    await grant(client, container, [
        {"path_pattern": "app/db/*", "permissions": ["list"]},
        {"path_pattern": "**/ssl/*", "permissions": ["list"]},
        {"path_pattern": "other/**", "permissions": ["read"]},  # read does not let you list
    ])
    svc = caller_token(container)
    visible, _ = await list_all(client, svc, "", 100)
    assert visible == ["app/db/password", "app/db/password-old", "app/db/user", "app/ssl/cert", "service/ssl/key"]
    for limit in (1, 2, 3):
        assert (await list_all(client, svc, "", limit))[0] == visible
    assert (await list_all(client, svc, "app/db/p", 1))[0] == ["app/db/password", "app/db/password-old"]
    # `**/ssl/*` could match under any prefix: an empty page; a caller whose rules cannot reach the prefix: 403.
    assert (await list_all(client, svc, "other/", 10))[0] == []
    await grant(client, container, [{"path_pattern": "app/db/*", "permissions": ["list"]}], identity_id="sa:narrow")
    narrow = caller_token(container, identity="sa:narrow")
    assert await error_of(await client.get("/v1/secrets?prefix=other/", headers=narrow)) == (403, "access_denied")
    assert (await list_all(client, narrow, "app", 10))[0] == ["app/db/password", "app/db/password-old", "app/db/user"]
    everything, _ = await list_all(client, admin(container), "", 100)
    assert len(everything) == len(SPEC_PATHS) + 1
    batch = await (await client.post("/v1/secrets/batch/metadata", headers=svc, json={
        "paths": ["app/**", "other/app/db", "app/db/user"], "options": {"expand_wildcards": True}})).json()
    assert sorted(batch["secrets"]) == ["app/db/password", "app/db/password-old", "app/db/user", "app/ssl/cert"]
    assert batch["errors"]["other/app/db"]["code"] == "access_denied"


async def test_listing_pages_stay_exact_when_most_entries_are_hidden(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    hidden = [f"team/a/s{n:03d}" for n in range(120)] + [f"team/c/s{n:03d}" for n in range(60)]
    shown = ["team/b/keep", "team/c/s010/ssl/key", "team/d/keep", "zz/ssl/x"]
    await put_secrets(client, container, *hidden, *shown)
    await grant(client, container, [
        {"path_pattern": "team/b/*", "permissions": ["list"]},
        {"path_pattern": "team/d/**", "permissions": ["list"]},
        {"path_pattern": "**/ssl/*", "permissions": ["list"]},  # no literal prefix: the whole tenant is scanned
    ])
    svc = caller_token(container)
    expected = sorted(shown)
    for limit in (1, 2, 100):
        assert (await list_all(client, svc, "", limit))[0] == expected
        assert (await list_all(client, svc, "team/", limit))[0] == expected[:3]
    # With a tiny scan budget, pages end early (some empty) but together still list exactly the visible secrets.
    monkeypatch.setattr(secret_reader, "LIST_SCAN_BUDGET", 7)
    paths, pages = await list_all(client, svc, "", 2)
    assert paths == expected and pages > len(hidden) // 7


async def test_listing_reports_a_failing_condition(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "prod/db")
    await grant(client, container, [{"path_pattern": "prod/**", "permissions": ["list"],
                                     "conditions": {"require_mfa": True}}])
    assert await error_of(await client.get("/v1/secrets?prefix=prod", headers=caller_token(container))) == (
        403, "mfa_required"
    )
    mfa = caller_token(container, mfa_verified_at=datetime.now(UTC))
    assert [s["path"] for s in (await (await client.get("/v1/secrets?prefix=prod", headers=mfa)).json())["secrets"]] \
        == ["prod/db"]


async def test_batch_reads_are_authorized_per_path(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/a", "app/b", "other/c")
    await grant(client, container, [{"path_pattern": "app/*", "permissions": ["read"]}])
    svc = caller_token(container, "secrets:read")
    body = await (await client.post("/v1/secrets/batch", json={"paths": ["app/a", "other/c", "app/b", "app/zz"]},
                                    headers=svc)).json()
    assert sorted(body["secrets"]) == ["app/a", "app/b"]
    assert {path: e["code"] for path, e in body["errors"].items()} == {"other/c": "access_denied",
                                                                       "app/zz": "secret_not_found"}
    fail_fast = await client.post("/v1/secrets/batch", json={"paths": ["app/a", "other/c"],
                                                             "options": {"fail_fast": True}}, headers=svc)
    assert await error_of(fail_fast) == (403, "access_denied")


async def test_group_bindings_follow_the_identity_mirror_from_the_next_request(
    client: TestClient, container: Container
) -> None:
    await put_secrets(client, container, "app/db")
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}], identity_id="group:sre")
    directory = caller_token(container, "identity:read", "identity:admin", identity="user:admin@acme.example",
                             roles=("tenant_admin",))
    bob = await (await client.post(f"/v1/identity/tenants/{TENANT}/users", json={"email": "bob@acme.example"},
                                   headers=directory)).json()
    sre = await (await client.post(f"/v1/identity/tenants/{TENANT}/groups", json={"name": "sre"},
                                   headers=directory)).json()
    bob_token = caller_token(container, "secrets:read", identity="user:bob@acme.example")  # no groups claim
    assert await status(client, "GET", "/v1/secrets/app/db", bob_token) == 403

    membership = f"/v1/identity/groups/{sre['id']}/members/{bob['id']}"
    assert await status(client, "PUT", membership, directory) == 201
    assert await status(client, "GET", "/v1/secrets/app/db", bob_token) == 200
    assert await status(client, "DELETE", membership, directory) == 204
    assert await status(client, "GET", "/v1/secrets/app/db", bob_token) == 403


async def test_a_listing_cursor_never_names_a_secret_the_caller_may_not_list(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secret_reader, "LIST_SCAN_BUDGET", 2)
    await put_secrets(client, container, "app/hidden-a", "app/hidden-b", "app/hidden-c", "app/shown-ok")
    await grant(client, container, [{"path_pattern": "app/*-ok", "permissions": ["list"]}])
    svc, cursor, listed = caller_token(container), None, []
    while True:
        query = "prefix=app/" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(f"/v1/secrets?{query}", headers=svc)).json()
        listed += [item["path"] for item in body["secrets"]]
        cursor = body["cursor"]
        if cursor is None:
            break
        assert b"hidden" not in base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    assert listed == ["app/shown-ok"]


async def test_lowering_max_versions_below_what_is_kept_needs_delete(client: TestClient, container: Container) -> None:
    """Destroying history is ``delete``'s to do: a writer without it may set ``max_versions`` (a PUT with the
    option, as the docs' examples do) but not lower it below the versions kept, by PATCH or by PUT."""
    for n in range(3):
        response = await client.put("/v1/secrets/app/capped", json={"data": {"n": n}}, headers=admin(container))
        assert response.status in (200, 201)
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read", "write", "list"]}])
    writer = caller_token(container)
    for method, url, body in (
        ("PATCH", "/v1/secrets/app/capped/metadata", {"max_versions": 1}),
        ("PUT", "/v1/secrets/app/capped", {"data": {"n": 9}, "options": {"max_versions": 2}}),
    ):
        response = await client.request(method, url, json=body, headers=writer)
        assert await error_of(response) == (403, "access_denied")
        assert (await response.json())["error"]["details"]["reason"] == "delete_required"
    versions = await (await client.get("/v1/secrets/app/capped/versions", headers=writer)).json()
    assert [v["version"] for v in versions["versions"]] == [3, 2, 1]  # nothing destroyed, nothing written
    # Setting a cap that destroys nothing, or writing a new secret with one, needs only write.
    widened = await client.patch("/v1/secrets/app/capped/metadata", json={"max_versions": 5}, headers=writer)
    assert widened.status == 200
    created = await client.put("/v1/secrets/app/new", json={"data": {"n": 1}, "options": {"max_versions": 2}},
                               headers=writer)
    assert created.status == 201
    # With delete, the same lowering goes through.
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["delete"]}])
    response = await client.patch("/v1/secrets/app/capped/metadata", json={"max_versions": 1}, headers=writer)
    assert response.status == 200, await response.text()


@pytest.mark.parametrize("granted_through", ["direct binding", "token group", "mirrored group"])
async def test_a_suspended_user_gets_nothing_from_policies(
    client: TestClient, container: Container, granted_through: str
) -> None:
    """A user the identity mirror holds in the tenant with no ACTIVE record is denied everything policies grant:
    bindings naming it, its mirrored groups and the groups its token claims. The answer is a missing policy's,
    whether or not the secret exists; the listing and the dry run agree."""
    await put_secrets(client, container, "app/db")
    directory = caller_token(container, "identity:read", "identity:admin", identity="user:admin@acme.example",
                             roles=("tenant_admin",))
    bound = "user:carol@acme.example" if granted_through == "direct binding" else "group:ops"
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read", "list"]}], identity_id=bound)
    ops = await (await client.post(f"/v1/identity/tenants/{TENANT}/groups", json={"name": "ops"},
                                   headers=directory)).json()
    claimed = ("group:ops",) if granted_through == "token group" else ()
    carol = caller_token(container, "secrets:read", "secrets:list", identity="user:carol@acme.example",
                         groups=claimed)

    async def mirror_carol(user_status: str) -> str:
        response = await client.post(f"/v1/identity/tenants/{TENANT}/users",
                                     json={"email": "carol@acme.example", "status": user_status}, headers=directory)
        assert response.status == 201, await response.text()
        user_id: str = (await response.json())["id"]
        if granted_through == "mirrored group":
            assert await status(client, "PUT", f"/v1/identity/groups/{ops['id']}/members/{user_id}", directory) == 201
        return user_id

    active = await mirror_carol("ACTIVE")
    assert await status(client, "GET", "/v1/secrets/app/db", carol) == 200
    assert await status(client, "GET", "/v1/secrets?prefix=app", carol) == 200
    # Suspended: the record is replaced by a SUSPENDED one (the API sets a status when it creates a user).
    assert await status(client, "DELETE", f"/v1/identity/users/{active}", directory) in (200, 204)
    await mirror_carol("SUSPENDED")

    for url in ("/v1/secrets/app/db", "/v1/secrets/app/nothing-here", "/v1/secrets?prefix=app"):
        assert await error_of(await client.get(url, headers=carol)) == (403, "access_denied"), url
    batch = await (await client.post("/v1/secrets/batch", json={"paths": ["app/db"]}, headers=carol)).json()
    assert batch["errors"]["app/db"]["code"] == "access_denied"
    dry_run = await client.post("/v1/policies/test", headers=admin(container), json={
        "identity_id": "user:carol@acme.example", "path": "app/db", "permission": "read"})
    assert (await dry_run.json())["allowed"] is False
