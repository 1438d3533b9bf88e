"""/v1/identity over real HTTP, without ScaiKey: identities managed through the API, tenant isolation, the role
rules, mirrored roles in authorization, and every error code of the area."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from projections.identity.queries import groups_of
from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import error_of

READ = ("identity:read",)
ADMIN = ("identity:read", "identity:admin")
ADMIN_ID = "user:admin@acme.example"


def admin(token: TokenFactory, **kwargs: Any) -> dict[str, str]:
    kwargs.setdefault("identity", ADMIN_ID)
    kwargs.setdefault("roles", ("tenant_admin",))
    return bearer(token(*ADMIN, **kwargs))


async def create_user(client: TestClient, headers: dict[str, str], email: str, tenant: str = TENANT) -> dict[str, Any]:
    response = await client.post(f"/v1/identity/tenants/{tenant}/users", json={"email": email}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def create_group(client: TestClient, headers: dict[str, str], name: str, tenant: str = TENANT) -> dict[str, Any]:
    response = await client.post(f"/v1/identity/tenants/{tenant}/groups", json={"name": name}, headers=headers)
    assert response.status == 201, await response.text()
    return await response.json()


async def test_users_groups_and_members_managed_through_the_api(client: TestClient, token: TokenFactory) -> None:
    headers = admin(token)
    alice = await create_user(client, headers, "Alice@Acme.example")
    assert (alice["email"], alice["display_name"], alice["status"], alice["source"]) == (
        "alice@acme.example", "Alice@Acme.example", "ACTIVE", "scaivault"
    )
    assert alice["id"].startswith("usr_") and alice["last_synced_at"] is None
    bob = await create_user(client, headers, "bob@acme.example")
    sre = await create_group(client, headers, "SRE")
    assert sre["name"] == "sre" and sre["id"].startswith("grp_")

    added = await client.put(f"/v1/identity/groups/{sre['id']}/members/{alice['id']}", headers=headers)
    again = await client.put(f"/v1/identity/groups/{sre['id']}/members/{alice['id']}", headers=headers)
    assert (added.status, again.status) == (201, 200)
    members = await (await client.get(f"/v1/identity/groups/{sre['id']}/members", headers=headers)).json()
    assert members["total"] == 1
    assert [(m["user_id"], m["email"], m["membership_type"]) for m in members["members"]] == [
        (alice["id"], "alice@acme.example", "DIRECT")
    ]
    assert members["members"][0]["added_at"].endswith("Z")

    users = await (await client.get(f"/v1/identity/tenants/{TENANT}/users", headers=headers)).json()
    assert users["total"] == 2 and [u["email"] for u in users["users"]] == ["alice@acme.example", "bob@acme.example"]
    assert users["users"][0]["groups"] == [sre["id"]]
    searched = await (await client.get(f"/v1/identity/tenants/{TENANT}/users?q=BOB", headers=headers)).json()
    assert [u["id"] for u in searched["users"]] == [bob["id"]]
    paged = await (await client.get(f"/v1/identity/tenants/{TENANT}/users?page=2&page_size=1", headers=headers)).json()
    assert (paged["total"], [u["id"] for u in paged["users"]], paged["has_more"]) == (2, [bob["id"]], False)
    groups = await (await client.get(f"/v1/identity/tenants/{TENANT}/groups", headers=headers)).json()
    assert [(g["name"], g["member_count"]) for g in groups["groups"]] == [("sre", 1)]

    resolved = await (await client.get("/v1/identity/resolve/user/user:alice@acme.example", headers=headers)).json()
    assert (resolved["id"], resolved["type"], resolved["identity_ref"]) == (
        alice["id"], "user", "user:alice@acme.example"
    )
    assert [g["identity_ref"] for g in resolved["groups"]] == ["group:sre"]
    assert resolved["effective_groups"] == sorted([sre["id"], "group:sre"])
    by_name = await (await client.get("/v1/identity/resolve/group/group:sre", headers=headers)).json()
    assert (by_name["id"], by_name["type"], by_name["member_count"]) == (sre["id"], "group", 1)

    removed = await client.delete(f"/v1/identity/groups/{sre['id']}/members/{alice['id']}", headers=headers)
    assert removed.status == 204
    assert await error_of(
        await client.delete(f"/v1/identity/groups/{sre['id']}/members/{alice['id']}", headers=headers)
    ) == (404, "identity_not_found")
    assert (await client.delete(f"/v1/identity/groups/{sre['id']}", headers=headers)).status == 204
    assert (await client.delete(f"/v1/identity/users/{bob['id']}", headers=headers)).status == 204
    assert await error_of(await client.get(f"/v1/identity/users/{bob['id']}", headers=headers)) == (
        404, "identity_not_found"
    )


async def test_groups_of_answers_for_policy_bindings(client: TestClient, token: TokenFactory, container: Any) -> None:
    headers = admin(token)
    alice = await create_user(client, headers, "alice@acme.example")
    sre, ops = await create_group(client, headers, "sre"), await create_group(client, headers, "ops")
    for group in (sre, ops):
        await client.put(f"/v1/identity/groups/{group['id']}/members/{alice['id']}", headers=headers)
    expected = sorted([sre["id"], ops["id"], "group:sre", "group:ops"])
    for identity in (alice["id"], "user:alice@acme.example", "user:ALICE@acme.example"):
        assert await groups_of(container.pool, TENANT, identity) == expected
    assert await groups_of(container.pool, OTHER_TENANT, alice["id"]) == []  # another tenant knows no such user
    # Each creation and membership change raised the tenant's authorization generation, so every server's policy
    # cache forgets what it knew: one user, two groups, two memberships.
    assert await container.pool.fetchval(
        "SELECT generation FROM scaivault_authorization_generations WHERE owner = $1", TENANT
    ) == 5
    assert await groups_of(container.pool, None, alice["id"]) == []


async def test_duplicate_names_and_malformed_input_get_their_codes(client: TestClient, token: TokenFactory) -> None:
    headers = admin(token)
    await create_user(client, headers, "alice@acme.example")
    await create_group(client, headers, "sre")
    base = f"/v1/identity/tenants/{TENANT}"
    cases = [
        (client.post(base + "/users", json={"email": "ALICE@acme.example"}, headers=headers), 409, "identity_exists"),
        (client.post(base + "/groups", json={"name": "SRE"}, headers=headers), 409, "identity_exists"),
        (client.post(base + "/users", json={"email": "no-at-sign"}, headers=headers), 422, "validation_error"),
        (client.post(base + "/users", json={"email": "a@b.c", "rolez": []}, headers=headers), 422, "validation_error"),
        (client.post(base + "/groups", json={"name": "has space"}, headers=headers), 422, "validation_error"),
        (client.post(base + "/users", data=b"{not json", headers=headers), 400, "invalid_request"),
        (client.get(base + "/users?page=0", headers=headers), 400, "invalid_request"),
        (client.get(base + "/users?page_size=1001", headers=headers), 400, "invalid_request"),
        (client.get(base + "/users?status=not-a-status", headers=headers), 400, "invalid_request"),
        (client.get("/v1/identity/tenants?partner_id=PTN", headers=headers), 400, "invalid_request"),
        (client.get("/v1/identity/resolve/robot/x", headers=headers), 400, "invalid_request"),
        (client.get("/v1/identity/resolve/service_account/sa:ci", headers=headers), 404, "identity_not_found"),
        (client.get("/v1/identity/resolve/user/nobody@acme.example", headers=headers), 404, "identity_not_found"),
        (client.get("/v1/identity/users/not-an-id", headers=headers), 404, "identity_not_found"),
        (client.get("/v1/identity/groups/grp_missing/members", headers=headers), 404, "identity_not_found"),
        (client.get("/v1/identity/tenants/tnt_nope/users", headers=headers), 403, "tenant_access_denied"),
        (client.get("/v1/identity/tenants/TNT/users", headers=headers), 400, "invalid_request"),
        (client.get("/v1/identity/sync/syn_x", headers=headers), 404, "not_found"),
        (client.post("/v1/identity/sync", headers=headers), 400, "invalid_request"),  # no ScaiKey configured
        (client.post("/v1/identity/webhooks/scaikey", data=b"{}"), 404, "not_found"),  # no receiver configured
    ]
    for request, status, code in cases:
        assert await error_of(await request) == (status, code)
    users = await (await client.get(base + "/users", headers=headers)).json()
    assert users["total"] == 1  # the failed requests changed nothing


async def test_scopes_and_admin_roles_gate_the_endpoints(client: TestClient, token: TokenFactory) -> None:
    no_scope = bearer(token("secrets:read", roles=("tenant_admin",)))
    reader = bearer(token(*READ, roles=()))
    admin_scope_no_role = bearer(token(*ADMIN, roles=()))
    base = f"/v1/identity/tenants/{TENANT}"
    assert await error_of(await client.get(base + "/users", headers=no_scope)) == (403, "insufficient_scope")
    assert (await client.get(base + "/users", headers=reader)).status == 200
    assert await error_of(await client.post(base + "/users", json={"email": "a@b.c"}, headers=reader)) == (
        403, "insufficient_scope"
    )
    assert await error_of(
        await client.post(base + "/users", json={"email": "a@b.c"}, headers=admin_scope_no_role)
    ) == (403, "access_denied")
    assert await error_of(await client.get("/v1/identity/roles")) == (401, "authentication_required")
    roles = await (await client.get("/v1/identity/roles", headers=no_scope)).json()  # any authenticated caller
    assert [r["name"] for r in roles["roles"]] == ["super_admin", "partner_admin", "tenant_admin"]


async def test_a_tenant_never_sees_another_tenants_identities(client: TestClient, token: TokenFactory) -> None:
    prod_admin = admin(token)
    alice = await create_user(client, prod_admin, "alice@acme.example")
    sre = await create_group(client, prod_admin, "sre")
    dev_reader = bearer(token(*READ, tenant=OTHER_TENANT, identity="user:dan@acme.example", roles=()))
    dev_admin = admin(token, tenant=OTHER_TENANT, identity="user:dana@acme.example")

    # Naming the other tenant is refused (it is not the token's, and the caller is no partner admin).
    assert await error_of(await client.get(f"/v1/identity/tenants/{TENANT}/users", headers=dev_reader)) == (
        403, "tenant_access_denied"
    )
    # A foreign user or group looks exactly like a missing one.
    for path in (f"/v1/identity/users/{alice['id']}", f"/v1/identity/groups/{sre['id']}/members",
                 f"/v1/identity/users/{alice['id']}/roles", "/v1/identity/resolve/user/alice@acme.example",
                 "/v1/identity/resolve/group/sre"):
        foreign = await client.get(path, headers=dev_reader)
        missing = await client.get(path.replace(alice["id"], "usr_missing").replace(sre["id"], "grp_missing")
                                   .replace("alice@", "nobody@").replace("group/sre", "group/nope"), headers=dev_reader)
        foreign_body, missing_body = await foreign.json(), await missing.json()
        assert foreign.status == missing.status == 404
        assert foreign_body["error"]["code"] == missing_body["error"]["code"] == "identity_not_found"
        assert foreign_body["error"]["message"] == missing_body["error"]["message"]
    for request in (
        client.put(f"/v1/identity/groups/{sre['id']}/members/{alice['id']}", headers=dev_admin),
        client.delete(f"/v1/identity/users/{alice['id']}", headers=dev_admin),
        client.delete(f"/v1/identity/groups/{sre['id']}", headers=dev_admin),
    ):
        assert await error_of(await request) == (404, "identity_not_found")
    dev_users = await (await client.get(f"/v1/identity/tenants/{OTHER_TENANT}/users", headers=dev_reader)).json()
    assert dev_users == {"users": [], "total": 0, "page": 1, "page_size": 50, "has_more": False}

    # A partner admin reaches its partner's tenants (path, prefix or header), never another partner's.
    partner_admin = bearer(token(*READ, tenant=OTHER_TENANT, roles=("partner_admin",)))
    assert (await client.get(f"/v1/identity/tenants/{TENANT}/users", headers=partner_admin)).status == 200
    via_prefix = await client.get(f"/v1/t/{TENANT}/identity/users/{alice['id']}", headers=partner_admin)
    assert via_prefix.status == 200
    via_header = await client.get(f"/v1/identity/users/{alice['id']}", headers={**partner_admin, "X-Tenant-ID": TENANT})
    assert via_header.status == 200
    assert await error_of(
        await client.get(f"/v1/identity/tenants/{FOREIGN_TENANT}/users", headers=partner_admin)
    ) == (403, "tenant_access_denied")


async def test_partner_and_tenant_listings_follow_the_callers_reach(client: TestClient, token: TokenFactory) -> None:
    reader = bearer(token(*READ, roles=()))
    partner_admin = bearer(token(*READ, roles=("partner_admin",)))
    super_admin = bearer(token(*READ, roles=("super_admin",)))

    async def ids(path: str, headers: dict[str, str], key: str) -> list[str]:
        response = await client.get(path, headers=headers)
        assert response.status == 200, await response.text()
        return [item["id"] for item in (await response.json())[key]]

    assert await ids("/v1/identity/partners", reader, "partners") == [PARTNER]
    assert await ids("/v1/identity/partners", super_admin, "partners") == sorted([PARTNER, OTHER_PARTNER])
    assert await ids("/v1/identity/tenants", reader, "tenants") == [TENANT]
    assert await ids("/v1/identity/tenants", partner_admin, "tenants") == sorted([TENANT, OTHER_TENANT])
    assert await ids(f"/v1/identity/tenants?partner_id={OTHER_PARTNER}", super_admin, "tenants") == [FOREIGN_TENANT]
    assert await error_of(
        await client.get(f"/v1/identity/tenants?partner_id={OTHER_PARTNER}", headers=partner_admin)
    ) == (403, "tenant_access_denied")
    partners = await (await client.get("/v1/identity/partners?status=ACTIVE", headers=reader)).json()
    assert partners["partners"][0] == {"id": PARTNER, "name": PARTNER, "slug": None, "region": None, "status": "ACTIVE",
                                       "last_synced_at": None}
    assert partners["total"] == 1


async def put_roles(client: TestClient, headers: dict[str, str], user_id: str, roles: list[str]) -> Any:
    return await client.put(f"/v1/identity/users/{user_id}/roles", json={"roles": roles}, headers=headers)


async def test_the_role_rules_over_http(client: TestClient, token: TokenFactory) -> None:
    manager = admin(token)
    bob = await create_user(client, manager, "bob@acme.example")
    carol = await create_user(client, manager, "carol@acme.example")
    pa = await create_user(client, manager, "pa@acme.example")
    partner_admin_id = "user:pa@acme.example"

    # Only super_admin / partner_admin change roles.
    assert await error_of(await put_roles(client, manager, bob["id"], ["tenant_admin"])) == (403, "access_denied")
    # Seed the partner admin's own mirrored roles as an operator would (a super_admin).
    root = admin(token, identity="user:root@acme.example", roles=("super_admin",))
    assert (await put_roles(client, root, pa["id"], ["partner_admin"])).status == 200
    pa_headers = admin(token, identity=partner_admin_id, roles=("partner_admin",))
    granted = await put_roles(client, pa_headers, bob["id"], ["tenant_admin"])
    assert granted.status == 200 and (await granted.json())["roles"] == ["tenant_admin"]
    # Only a super_admin grants super_admin.
    assert await error_of(await put_roles(client, pa_headers, carol["id"], ["super_admin"])) == (403, "access_denied")
    assert (await put_roles(client, root, carol["id"], ["super_admin"])).status == 200
    # ... or takes it away.
    assert await error_of(await put_roles(client, pa_headers, carol["id"], [])) == (403, "access_denied")
    # No one raises their own privileges; lowering them is allowed.
    assert await error_of(await put_roles(client, pa_headers, pa["id"], ["partner_admin", "tenant_admin"])) == (
        403, "access_denied"
    )
    assert await error_of(await put_roles(client, pa_headers, pa["id"], ["super_admin"])) == (403, "access_denied")
    # Unknown roles and bad bodies.
    assert await error_of(await put_roles(client, root, bob["id"], ["root"])) == (400, "invalid_role")
    assert await error_of(await client.put(f"/v1/identity/users/{bob['id']}/roles", json={"roles": "tenant_admin"},
                                           headers=root)) == (422, "validation_error")
    assert await error_of(await put_roles(client, root, "usr_missing", ["tenant_admin"])) == (404, "identity_not_found")
    read = await (await client.get(f"/v1/identity/users/{bob['id']}/roles", headers=manager)).json()
    assert read == {"user_id": bob["id"], "roles": ["tenant_admin"], "managed_by": "scaivault"}
    lowered = await put_roles(client, pa_headers, pa["id"], [])
    assert lowered.status == 200 and (await lowered.json())["roles"] == []


async def test_mirrored_roles_are_authoritative_for_identities_the_mirror_knows(
    client: TestClient, token: TokenFactory
) -> None:
    root = admin(token, identity="user:root@acme.example", roles=("super_admin",))
    eve = await create_user(client, root, "eve@acme.example")
    # Eve's token claims partner_admin; the mirror knows Eve and gives her no role: the mirror wins.
    eve_token = bearer(token(*READ, identity="user:Eve@acme.example", roles=("partner_admin",)))
    whoami = await (await client.get("/v1/auth/whoami", headers=eve_token)).json()
    assert whoami["roles"] == []
    assert await error_of(await client.get(f"/v1/identity/tenants/{OTHER_TENANT}/users", headers=eve_token)) == (
        403, "tenant_access_denied"
    )
    # Granted here, the role counts at once (this server forgets its cache on the change).
    assert (await put_roles(client, root, eve["id"], ["partner_admin"])).status == 200
    assert (await client.get(f"/v1/identity/tenants/{OTHER_TENANT}/users", headers=eve_token)).status == 200
    # An identity the mirror does not know keeps its token's roles.
    stranger = bearer(token(*READ, identity="user:stranger@acme.example", roles=("partner_admin",)))
    assert (await (await client.get("/v1/auth/whoami", headers=stranger)).json())["roles"] == ["partner_admin"]


async def test_no_one_adds_themselves_to_a_group(client: TestClient, token: TokenFactory) -> None:
    root = admin(token, identity="user:root@acme.example", roles=("super_admin",))
    me = await create_user(client, root, "me@acme.example")
    assert (await put_roles(client, root, me["id"], ["tenant_admin"])).status == 200
    group = await create_group(client, root, "payments")
    mine = admin(token, identity="user:me@acme.example")
    refused = await client.put(f"/v1/identity/groups/{group['id']}/members/{me['id']}", headers=mine)
    assert await error_of(refused) == (403, "access_denied")
    assert (await refused.json())["error"]["details"]["reason"] == "self_elevation"
    assert (await client.put(f"/v1/identity/groups/{group['id']}/members/{me['id']}", headers=root)).status == 201
    assert (await client.delete(f"/v1/identity/groups/{group['id']}/members/{me['id']}", headers=mine)).status == 204


async def test_every_change_is_an_event_and_every_request_an_access_record(
    client: TestClient, token: TokenFactory, container: Any
) -> None:
    headers = admin(token)
    alice = await create_user(client, headers, "alice@acme.example")
    await client.get(f"/v1/identity/users/{alice['id']}", headers=headers)
    topics = [r["topic"] for r in await container.pool.fetch("SELECT topic FROM scaivault_events")]
    assert "scaivault.domain.identities:User.Created" in topics
    actions = await container.pool.fetch(
        "SELECT state FROM scaivault_events WHERE topic = 'scaivault.domain.access:AccessRecorded'"
    )
    recorded = [bytes(row["state"]) for row in actions]
    assert any(b'"identity_write"' in state and b"201" in state for state in recorded)
    assert any(b'"identity_read"' in state for state in recorded)  # answered only once its record was durable


# --- reach: a record speaks for the token's roles only as far as its author reached ---------------------------------

PARTNER_ADMIN_ID = "user:pa@acme.example"


async def roles_now(client: TestClient, headers: dict[str, str]) -> list[str]:
    whoami = await client.get("/v1/auth/whoami", headers=headers)
    assert whoami.status == 200, await whoami.text()
    return list((await whoami.json())["roles"])


async def outside_reach(response: Any) -> bool:
    if response.status != 403:
        return False
    return bool((await response.json())["error"]["details"].get("reason") == "outside_reach")


async def test_a_tenant_admins_record_takes_nothing_from_a_partner_admin(
    client: TestClient, token: TokenFactory
) -> None:
    tenant_admin = admin(token)
    partner_admin = admin(token, identity=PARTNER_ADMIN_ID, roles=("partner_admin",))
    shadow = await create_user(client, tenant_admin, "PA@acme.example")
    # The record's author reaches tenant_admin only: the partner admin's token keeps partner_admin.
    assert await roles_now(client, partner_admin) == ["partner_admin"]
    assert (await client.get(f"/v1/identity/tenants/{OTHER_TENANT}/users", headers=partner_admin)).status == 200
    # The record still speaks for what the tenant admin reaches: a tenant_admin claim of the same address goes.
    assert await roles_now(client, admin(token, identity=PARTNER_ADMIN_ID, roles=("tenant_admin",))) == []
    assert (await client.delete(f"/v1/identity/users/{shadow['id']}", headers=tenant_admin)).status == 204


async def test_a_tenant_admin_cannot_undo_a_partner_admins_demotion(client: TestClient, token: TokenFactory) -> None:
    tenant_admin = admin(token)
    partner_admin = admin(token, identity=PARTNER_ADMIN_ID, roles=("partner_admin",))
    bob_token = bearer(token(*READ, identity="user:bob@acme.example", roles=("tenant_admin",)))
    bob = await create_user(client, tenant_admin, "bob@acme.example")
    assert (await put_roles(client, partner_admin, bob["id"], ["tenant_admin"])).status == 200
    assert await roles_now(client, bob_token) == ["tenant_admin"]
    assert (await put_roles(client, partner_admin, bob["id"], [])).status == 200  # demoted by the partner admin
    assert await roles_now(client, bob_token) == []
    # Deleting the record would hand bob's token its tenant_admin back: not the tenant admin's to decide.
    refused = await client.delete(f"/v1/identity/users/{bob['id']}", headers=tenant_admin)
    assert await outside_reach(refused)
    assert await roles_now(client, bob_token) == []
    assert (await client.delete(f"/v1/identity/users/{bob['id']}", headers=partner_admin)).status == 204


async def test_a_tenant_admin_cannot_undo_a_partner_admins_suspension(client: TestClient, token: TokenFactory) -> None:
    tenant_admin = admin(token)
    partner_admin = admin(token, identity=PARTNER_ADMIN_ID, roles=("partner_admin",))
    carol_token = bearer(token(*READ, identity="user:carol@acme.example", roles=("tenant_admin",)))
    suspended = await client.post(f"/v1/identity/tenants/{TENANT}/users",
                                  json={"email": "carol@acme.example", "status": "SUSPENDED"}, headers=partner_admin)
    assert suspended.status == 201
    carol = await suspended.json()
    assert await roles_now(client, carol_token) == []
    refused = await client.delete(f"/v1/identity/users/{carol['id']}", headers=tenant_admin)
    assert await outside_reach(refused)
    recreated = await client.post(f"/v1/identity/tenants/{TENANT}/users", json={"email": "carol@acme.example"},
                                  headers=tenant_admin)
    assert await error_of(recreated) == (409, "identity_exists")
    assert await roles_now(client, carol_token) == []


async def test_no_one_changes_a_user_whose_mirrored_roles_rank_above_its_own(
    client: TestClient, token: TokenFactory
) -> None:
    tenant_admin = admin(token)
    partner_admin = admin(token, identity=PARTNER_ADMIN_ID, roles=("partner_admin",))
    root = admin(token, identity="user:root@acme.example", roles=("super_admin",))
    dave = await create_user(client, tenant_admin, "dave@acme.example")
    group = await create_group(client, tenant_admin, "ops")
    assert (await put_roles(client, root, dave["id"], ["partner_admin"])).status == 200
    for request in (
        client.put(f"/v1/identity/groups/{group['id']}/members/{dave['id']}", headers=tenant_admin),
        client.delete(f"/v1/identity/users/{dave['id']}", headers=tenant_admin),
    ):
        assert await outside_reach(await request)
    # Within its reach, a partner admin changes roles a super admin set, and keeps the record out of lower reach.
    assert (await put_roles(client, partner_admin, dave["id"], ["tenant_admin"])).status == 200
    assert (await client.put(f"/v1/identity/groups/{group['id']}/members/{dave['id']}",
                             headers=tenant_admin)).status == 201
    assert await outside_reach(await client.delete(f"/v1/identity/users/{dave['id']}", headers=partner_admin))
    assert (await client.delete(f"/v1/identity/users/{dave['id']}", headers=root)).status == 204


async def test_introspection_reports_the_roles_the_subject_holds_now(client: TestClient, token: TokenFactory) -> None:
    tenant_admin = admin(token)
    introspector = bearer(token("admin", identity="user:auditor@acme.example", roles=()))
    await create_user(client, tenant_admin, "erin@acme.example")
    await create_user(client, tenant_admin, "pa@acme.example")

    async def introspected_roles(subject: str) -> list[str]:
        response = await client.post("/v1/auth/introspect", json={"token": subject}, headers=introspector)
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["active"] is True
        return list(body["roles"])

    # The mirror knows erin and gives her no role: her token's tenant_admin is not what she holds.
    assert await introspected_roles(token(*READ, identity="user:erin@acme.example", roles=("tenant_admin",))) == []
    # A tenant admin's record does not reach a partner admin's role.
    assert await introspected_roles(token(*READ, identity=PARTNER_ADMIN_ID, roles=("partner_admin",))) == [
        "partner_admin"
    ]
    unknown = token(*READ, identity="user:nobody@acme.example", roles=("tenant_admin",))
    assert await introspected_roles(unknown) == ["tenant_admin"]


# --- query strings: each bad parameter is 400 invalid_request naming it ----------------------------------------------

USERS = f"/v1/identity/tenants/{TENANT}/users"


@pytest.mark.parametrize(("url", "parameter"), [
    (USERS + "?page=0", "page"),
    (USERS + "?page=-1", "page"),
    (USERS + "?page=1.5", "page"),
    (USERS + "?page=%EF%BC%91", "page"),  # a full-width digit one: not ASCII
    (USERS + "?page=1000001", "page"),
    (USERS + "?page=", "page"),
    (USERS + "?page_size=0", "page_size"),
    (USERS + "?page_size=1001", "page_size"),
    (USERS + "?page_size=ten", "page_size"),
    (USERS + "?status=not-a-status", "status"),
    (USERS + "?status=", "status"),
    (USERS + "?status=%00", "status"),
    (USERS + "?q=", "q"),
    (USERS + "?q=" + "x" * 257, "q"),
    (USERS + "?q=a%00b", "q"),  # PostgreSQL text cannot hold a NUL (this was a 500)
    (f"/v1/identity/tenants/{TENANT}/groups?status=active!", "status"),
    (f"/v1/identity/tenants/{TENANT}/groups?page_size=0", "page_size"),
    ("/v1/identity/partners?status=1", "status"),
    ("/v1/identity/tenants?partner_id=PTN", "partner_id"),
    ("/v1/identity/tenants?partner_id=", "partner_id"),
    ("/v1/identity/sync/history?page=0", "page"),
    ("/v1/identity/groups/grp_x/members?page_size=100000", "page_size"),
    ("/v1/identity/resolve/robot/x", "identity_type"),
])
async def test_bad_query_parameters_are_invalid_requests_naming_them(
    client: TestClient, token: TokenFactory, url: str, parameter: str
) -> None:
    response = await client.get(url, headers=admin(token))
    assert await error_of(response) == (400, "invalid_request"), url
    error = (await response.json())["error"]
    assert error["details"]["parameter"] == parameter
    assert error["message"].startswith(f"'{parameter}' ") or parameter == "identity_type"


async def test_good_query_parameters_within_their_bounds(client: TestClient, token: TokenFactory) -> None:
    headers = admin(token)
    await create_user(client, headers, "Zoe@acme.example")
    for query, total in (("q=OE@ACME", 1), ("q=" + "x" * 256, 0), ("status=active", 1), ("status=SUSPENDED", 0),
                         ("page=1000000&page_size=1000", 1), ("q=zoe&q=nobody", 1)):  # repeated: the first
        response = await client.get(f"{USERS}?{query}", headers=headers)
        assert response.status == 200, (query, await response.text())
        assert (await response.json())["total"] == total, query
    last = await (await client.get(f"{USERS}?page=1000000&page_size=1000", headers=headers)).json()
    assert (last["users"], last["page"], last["page_size"], last["has_more"]) == ([], 1000000, 1000, False)


HUGE = "0" * 11 + "1" + "0" * 5000  # past int()'s digit limit, and its first 12 characters read as 1


@pytest.mark.parametrize("query", [
    f"page={HUGE}", f"page_size={HUGE}", "page_size=0000000000010000", "page=0000000000010000000",
])
async def test_identity_paging_numbers_are_bounded_by_their_whole_value(
    client: TestClient, token: TokenFactory, query: str
) -> None:
    for url in (USERS, f"/v1/identity/tenants/{TENANT}/groups", "/v1/identity/partners", "/v1/identity/sync/history"):
        response = await client.get(f"{url}?{query}", headers=admin(token, roles=("partner_admin",)))
        assert await error_of(response) == (400, "invalid_request"), url


async def test_identity_paging_still_takes_leading_zeros_within_bounds(client: TestClient, token: TokenFactory) -> None:
    response = await client.get(f"{USERS}?page=01&page_size=0010", headers=admin(token, roles=("partner_admin",)))
    assert response.status == 200
    body = await response.json()
    assert (body["page"], body["page_size"]) == (1, 10)


async def test_resolving_an_identity_named_with_a_nul_is_not_found(client: TestClient, token: TokenFactory) -> None:
    for kind in ("user", "group"):
        response = await client.get(f"/v1/identity/resolve/{kind}/a%00b",
                                    headers=admin(token, roles=("partner_admin",)))
        assert await error_of(response) == (404, "identity_not_found"), kind
