"""/v1/policies over HTTP (spec reference/policies): every endpoint, its errors, who may call it, tenant isolation,
and the dry run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT, TENANT
from tests.e2e.helpers import (
    POLICY_SCOPES,
    admin,
    bind,
    caller_token,
    create_policy,
    error_of,
    grant,
    put_secrets,
)

READ_PROD = {"path_pattern": "environments/production/**", "permissions": ["read", "list"],
             "conditions": {"ip_ranges": ["10.0.0.0/8"], "require_mfa": True}}
READ_CERTS = {"path_pattern": "shared/certificates/*", "permissions": ["read"]}


async def test_the_spec_guide_example_creates_a_policy(client: TestClient, container: Container) -> None:
    body = {"name": "production-read-only", "description": "Developers read production from the VPN with MFA",
            "rules": [READ_PROD, READ_CERTS]}
    response = await client.post("/v1/policies", json=body, headers=admin(container))
    created = await response.json()
    assert response.status == 201
    assert created["id"].startswith("pol_") and response.headers["Location"] == f"/v1/policies/{created['id']}"
    assert created["is_active"] is True and created["created_at"].endswith("Z")
    assert (created["name"], created["description"], created["rules"], created["scope"]) == (
        body["name"], body["description"], [READ_PROD, READ_CERTS], "tenant"
    )
    assert created["bindings"] == [] and created["rule_count"] == 2
    fetched = await (await client.get(f"/v1/policies/{created['id']}", headers=admin(container))).json()
    assert fetched == created


async def test_your_first_integration_walkthrough(client: TestClient, container: Container) -> None:
    """getting-started/your-first-integration: store as admin, create a one-path read policy, bind the service
    account; the service reads exactly that path."""
    await put_secrets(client, container, "integrations/salesforce/oauth", "integrations/stripe/secret-key")
    policy = await create_policy(client, admin(container), [
        {"path_pattern": "integrations/salesforce/oauth", "permissions": ["read"]}
    ], name="reporting-service-salesforce", description="Reporting reads the Salesforce credential")
    response = await client.post(f"/v1/policies/{policy['id']}/bindings", headers=admin(container),
                                 json={"identity_type": "service_account", "identity_id": "sa:reporting-service"})
    assert response.status == 201
    service = caller_token(container, "secrets:read", identity="sa:reporting-service")
    assert (await client.get("/v1/secrets/integrations/salesforce/oauth", headers=service)).status == 200
    assert await error_of(await client.get("/v1/secrets/integrations/stripe/secret-key", headers=service)) == (
        403, "access_denied"
    )


async def test_listing_gives_summaries_with_counts_and_pages(client: TestClient, container: Container) -> None:
    ids = [(await create_policy(client, admin(container), [READ_CERTS], name=f"p{n}"))["id"] for n in range(5)]
    await bind(client, admin(container), ids[0], "group:sre")
    await client.patch(f"/v1/policies/{ids[1]}", json={"is_active": False}, headers=admin(container))
    page = await (await client.get("/v1/policies?limit=2", headers=admin(container))).json()
    assert [p["id"] for p in page["policies"]] == ids[:1] + ids[2:3]  # the inactive one is left out
    assert page["has_more"] is True
    assert page["policies"][0] == {
        "id": ids[0], "name": "p0", "scope": "tenant", "rule_count": 1, "binding_count": 1, "is_active": True,
        "created_at": page["policies"][0]["created_at"], "updated_at": page["policies"][0]["updated_at"],
    }
    rest = await (await client.get(f"/v1/policies?limit=2&cursor={page['cursor']}", headers=admin(container))).json()
    assert [p["id"] for p in rest["policies"]] == ids[3:] and rest["has_more"] is False and rest["cursor"] is None
    everything = await (await client.get("/v1/policies?include_inactive=true", headers=admin(container))).json()
    assert [p["id"] for p in everything["policies"]] == ids
    for query in ("?limit=0", "?limit=abc", "?scope=global", "?include_inactive=maybe", "?cursor=%%%",
                  f"?cursor={page['cursor']}&include_inactive=true"):
        response = await client.get(f"/v1/policies{query}", headers=admin(container))
        assert (await error_of(response))[0] == 400, query


async def parameter_error(response: Any) -> tuple[int, str, str | None]:
    """Status, error code and ``details.parameter`` of a refused request."""
    error = (await response.json())["error"]
    return response.status, error["code"], error.get("details", {}).get("parameter")


async def test_bad_query_parameters_name_the_parameter(client: TestClient, container: Container) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS])
    bindings = f"/v1/policies/{policy['id']}/bindings"
    for url, parameter in [
        ("/v1/policies?limit=0", "limit"), ("/v1/policies?limit=1001", "limit"), ("/v1/policies?limit=-1", "limit"),
        ("/v1/policies?limit=1e2", "limit"), ("/v1/policies?scope=global", "scope"), ("/v1/policies?scope=", "scope"),
        ("/v1/policies?include_inactive=maybe", "include_inactive"), (f"{bindings}?limit=abc", "limit"),
    ]:
        assert await parameter_error(await client.get(url, headers=admin(container))) == (
            400, "invalid_request", parameter
        ), url
    forced = await client.delete(f"/v1/policies/{policy['id']}?force=maybe", headers=admin(container))
    assert await parameter_error(forced) == (400, "invalid_request", "force")
    assert (await client.get(f"/v1/policies/{policy['id']}", headers=admin(container))).status == 200
    assert (await client.get("/v1/policies?limit=1000&include_inactive=1", headers=admin(container))).status == 200


async def test_a_cursor_from_another_listing_is_refused(client: TestClient, container: Container) -> None:
    ids = [(await create_policy(client, admin(container), [READ_CERTS], name=f"p{n}"))["id"] for n in range(2)]
    for policy_id in ids:
        for identity in ("group:a", "group:b"):
            await bind(client, admin(container), policy_id, identity)

    async def cursor_of(url: str) -> str:
        page = await (await client.get(url, headers=admin(container))).json()
        assert page["has_more"] is True
        return str(page["cursor"])

    policies = await cursor_of("/v1/policies?limit=1")
    with_inactive = await cursor_of("/v1/policies?limit=1&include_inactive=true")
    first_bindings = await cursor_of(f"/v1/policies/{ids[0]}/bindings?limit=1")
    for url in [
        f"/v1/policies?limit=1&include_inactive=true&cursor={policies}",  # other parameters
        f"/v1/policies?limit=1&scope=tenant&cursor={policies}",
        f"/v1/policies?limit=1&cursor={with_inactive}",
        f"/v1/policies?limit=1&cursor={first_bindings}",  # another kind of listing
        f"/v1/policies/{ids[1]}/bindings?limit=1&cursor={first_bindings}",  # another policy's bindings
        f"/v1/policies/{ids[0]}/bindings?limit=1&cursor={policies}",
        "/v1/policies?cursor=%%%", "/v1/policies?cursor=bm90IGpzb24",  # not a cursor at all
    ]:
        assert await parameter_error(await client.get(url, headers=admin(container))) == (
            400, "invalid_cursor", "cursor"
        ), url
    resumed = await client.get(f"/v1/policies/{ids[0]}/bindings?limit=1&cursor={first_bindings}",
                               headers=admin(container))
    assert resumed.status == 200 and len((await resumed.json())["bindings"]) == 1


async def test_replace_keeps_bindings_and_patch_changes_only_what_it_names(
    client: TestClient, container: Container
) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS], description="first")
    binding = await bind(client, admin(container), policy["id"])
    url = f"/v1/policies/{policy['id']}"
    replaced = await (await client.put(url, json={"name": "renamed", "rules": [READ_PROD]},
                                       headers=admin(container))).json()
    assert (replaced["name"], replaced["rules"], replaced["description"]) == ("renamed", [READ_PROD], None)
    assert [b["id"] for b in replaced["bindings"]] == [binding["id"]]
    patched = await (await client.patch(url, json={"description": "second"}, headers=admin(container))).json()
    assert (patched["name"], patched["rules"], patched["description"]) == ("renamed", [READ_PROD], "second")
    cleared = await (await client.patch(url, json={"description": None}, headers=admin(container))).json()
    assert cleared["description"] is None
    assert await error_of(await client.patch(url, json={"name": None}, headers=admin(container))) == (
        422, "validation_error"
    )
    assert await error_of(await client.patch(url, json={"scope": "partner"}, headers=admin(container))) == (
        400, "invalid_policy"
    )
    assert await error_of(await client.put(url, json={"rules": [READ_PROD]}, headers=admin(container))) == (
        422, "validation_error"
    )


async def test_delete_refuses_a_bound_policy_unless_forced(client: TestClient, container: Container) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS])
    binding = await bind(client, admin(container), policy["id"])
    url = f"/v1/policies/{policy['id']}"
    response = await client.delete(url, headers=admin(container))
    assert await error_of(response) == (409, "policy_in_use")
    assert (await client.get(url, headers=admin(container))).status == 200
    forced = await client.delete(f"{url}?force=true", headers=admin(container))
    assert forced.status == 200 and (await forced.json())["removed_bindings"] == [binding["id"]]
    for method in ("GET", "PUT", "PATCH", "DELETE"):
        response = await client.request(method, url, json={"name": "x", "rules": [READ_CERTS]},
                                        headers=admin(container))
        assert await error_of(response) == (404, "policy_not_found"), method
    unbound = await create_policy(client, admin(container), [READ_CERTS])
    assert (await client.delete(f"/v1/policies/{unbound['id']}", headers=admin(container))).status == 200


async def test_bindings_list_create_expire_and_delete(client: TestClient, container: Container) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS])
    url = f"/v1/policies/{policy['id']}/bindings"
    expires = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    first = await bind(client, admin(container), policy["id"], "group:sre", expires_at=expires)
    assert first["id"].startswith("bnd_") and first["identity_type"] == "group" and first["expired"] is False
    assert datetime.fromisoformat(first["expires_at"]) == datetime.fromisoformat(expires)
    second = await bind(client, admin(container), policy["id"], "user:Bob@Acme.example")
    assert second["identity_id"] == "user:bob@acme.example"
    duplicate = await client.post(url, json={"identity_type": "group", "identity_id": "group:sre"},
                                  headers=admin(container))
    assert await error_of(duplicate) == (409, "binding_exists")
    page = await (await client.get(f"{url}?limit=1", headers=admin(container))).json()
    assert [b["id"] for b in page["bindings"]] == [first["id"]] and page["has_more"] is True
    rest = await (await client.get(f"{url}?limit=1&cursor={page['cursor']}", headers=admin(container))).json()
    assert [b["id"] for b in rest["bindings"]] == [second["id"]] and rest["has_more"] is False
    assert (await client.delete(f"{url}/{first['id']}", headers=admin(container))).status == 200
    assert await error_of(await client.delete(f"{url}/{first['id']}", headers=admin(container))) == (
        404, "binding_not_found"
    )
    for body, expected in [
        ({"identity_type": "user", "identity_id": "sa:svc"}, (400, "invalid_policy")),
        ({"identity_type": "robot", "identity_id": "sa:svc"}, (400, "invalid_policy")),
        ({"identity_type": "user", "identity_id": "user:a@x", "expires_at": "2001-01-01T00:00:00Z"},
         (400, "invalid_policy")),
        ({"identity_type": "user"}, (422, "validation_error")),
        ({"identity_type": "user", "identity_id": "user:a@x", "role": "admin"}, (422, "validation_error")),
    ]:
        assert await error_of(await client.post(url, json=body, headers=admin(container))) == expected, body
    assert await error_of(await client.get("/v1/policies/pol_missing/bindings", headers=admin(container))) == (
        404, "policy_not_found"
    )


async def test_invalid_policies_get_the_spec_codes(client: TestClient, container: Container) -> None:
    cases = [
        ({"name": "x", "rules": [{"path_pattern": "/app/**", "permissions": ["read"]}]}, (400, "invalid_glob")),
        ({"name": "x", "rules": [{"path_pattern": "secrets/*.key", "permissions": ["read"]}]}, (400, "invalid_glob")),
        ({"name": "x", "rules": [{"path_pattern": "a", "permissions": ["sudo"]}]}, (400, "invalid_policy")),
        ({"name": "x", "rules": []}, (400, "invalid_policy")),
        ({"name": "x", "rules": [{"path_pattern": "a", "permissions": ["read"],
                                  "conditions": {"ip_ranges": ["not-a-cidr"]}}]}, (400, "invalid_policy")),
        ({"name": "x", "rules": [{"path_pattern": "a", "permissions": ["read"],
                                  "conditions": {"require_mfa": "yes"}}]}, (422, "validation_error")),
        ({"name": "x", "rules": [{"path_pattern": "a", "permissions": ["read"], "conditions": {"geo": "nl"}}]},
         (422, "validation_error")),
        ({"name": "x", "rules": [{"path_pattern": "a", "permissions": "read"}]}, (422, "validation_error")),
        ({"name": "x", "rules": [READ_CERTS], "owner": "me"}, (422, "validation_error")),
        ({"rules": [READ_CERTS]}, (422, "validation_error")),
        ({"name": "", "rules": [READ_CERTS]}, (400, "invalid_policy")),
    ]
    for body, expected in cases:
        response = await client.post("/v1/policies", json=body, headers=admin(container))
        assert await error_of(response) == expected, body
    glob = await (await client.post("/v1/policies", json=cases[0][0], headers=admin(container))).json()
    assert glob["error"]["details"]["field"] == "rules[0].path_pattern"
    not_json = await client.post("/v1/policies", data=b"{", headers=admin(container))
    assert await error_of(not_json) == (400, "invalid_request")
    listed = await (await client.get("/v1/policies", headers=admin(container))).json()
    assert listed["policies"] == []  # a failed request changes nothing


async def test_who_may_read_and_change_policies(client: TestClient, container: Container) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS])
    url = f"/v1/policies/{policy['id']}"
    no_scope = caller_token(container, "secrets:read", roles=("tenant_admin",))
    assert await error_of(await client.get(url, headers=no_scope)) == (403, "insufficient_scope")
    reader = caller_token(container, "policies:read", roles=("tenant_admin",))
    assert (await client.get(url, headers=reader)).status == 200
    assert await error_of(await client.patch(url, json={"name": "x"}, headers=reader)) == (403, "insufficient_scope")
    # policies:write without an admin role cannot grant itself anything
    writer = caller_token(container, *POLICY_SCOPES)
    assert (await client.get(url, headers=writer)).status == 200
    escalate = {"name": "mine", "rules": [{"path_pattern": "**", "permissions": ["admin"]}]}
    assert await error_of(await client.post("/v1/policies", json=escalate, headers=writer)) == (403, "access_denied")
    assert await error_of(await client.post(f"{url}/bindings", headers=writer,
                                            json={"identity_type": "service_account", "identity_id": "sa:svc"})) == (
        403, "access_denied"
    )


async def test_policies_are_confined_to_their_tenant(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/db")
    policy_id, _ = await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}])
    other_admin = admin(container, tenant=OTHER_TENANT)
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, f"/v1/policies/{policy_id}", json={"name": "x"}, headers=other_admin)
        assert await error_of(response) == (404, "policy_not_found"), method
    assert (await (await client.get("/v1/policies", headers=other_admin)).json())["policies"] == []
    # The same identity in another tenant is not bound there.
    svc_elsewhere = caller_token(container, "secrets:read", tenant=OTHER_TENANT)
    await client.put("/v1/secrets/app/db", json={"data": {"v": 1}}, headers=other_admin)
    assert await error_of(await client.get("/v1/secrets/app/db", headers=svc_elsewhere)) == (403, "access_denied")
    assert (await client.get("/v1/secrets/app/db", headers=caller_token(container, "secrets:read"))).status == 200
    # A partner admin manages another tenant's policies under /v1/t/{tenant}/.
    partner_admin = admin(container, roles=("partner_admin",))
    assert (await client.get(f"/v1/t/{OTHER_TENANT}/policies/{policy_id}", headers=partner_admin)).status == 404
    theirs = await create_policy(client, partner_admin, [READ_CERTS], base=f"/v1/t/{OTHER_TENANT}")
    listed = await (await client.get("/v1/policies", headers=other_admin)).json()
    assert [p["id"] for p in listed["policies"]] == [theirs["id"]]
    foreign_admin = admin(container, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    assert await error_of(await client.get(f"/v1/t/{OTHER_TENANT}/policies", headers=foreign_admin)) == (
        403, "tenant_access_denied"
    )


async def test_partner_scoped_policies(client: TestClient, container: Container) -> None:
    partner_admin = admin(container, roles=("partner_admin",))
    rules = [{"path_pattern": "shared/**", "permissions": ["read"]}]
    assert await error_of(await client.post("/v1/policies", json={"name": "p", "rules": rules, "scope": "partner"},
                                            headers=admin(container))) == (403, "access_denied")
    policy = await create_policy(client, partner_admin, rules, scope="partner")
    assert policy["scope"] == "partner"
    await bind(client, partner_admin, policy["id"], "group:platform")
    # Tenant admins see it, but may not change it.
    assert (await client.get(f"/v1/policies/{policy['id']}", headers=admin(container))).status == 200
    assert await error_of(await client.patch(f"/v1/policies/{policy['id']}", json={"name": "x"},
                                             headers=admin(container))) == (403, "access_denied")
    scoped = await (await client.get("/v1/policies?scope=partner", headers=admin(container))).json()
    assert [p["id"] for p in scoped["policies"]] == [policy["id"]]
    assert (await (await client.get("/v1/policies?scope=tenant", headers=admin(container))).json())["policies"] == []
    # It grants in every tenant of the partner, and in no other partner's.
    for tenant in (TENANT, OTHER_TENANT):
        await client.put(f"/v1/t/{tenant}/secrets/shared/config", json={"data": {"v": 1}}, headers=partner_admin)
        member = caller_token(container, "secrets:read", tenant=tenant, groups=("group:platform",))
        assert (await client.get("/v1/secrets/shared/config", headers=member)).status == 200, tenant
    foreign = caller_token(container, "secrets:read", tenant=FOREIGN_TENANT, partner=OTHER_PARTNER,
                           groups=("group:platform",))
    foreign_admin = admin(container, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    assert (await client.put("/v1/secrets/shared/config", json={"data": {"v": 1}}, headers=foreign_admin)).status == 201
    assert (await client.get("/v1/secrets/shared/config", headers=foreign)).status == 403


async def test_the_dry_run_says_which_policy_and_rule_decided(client: TestClient, container: Container) -> None:
    policy_id, _ = await grant(client, container, [READ_CERTS, READ_PROD], identity_id="group:dev")
    url = "/v1/policies/test"
    reader = caller_token(container, "policies:read", identity="user:auditor@acme.example")
    allowed = await (await client.post(url, headers=reader, json={
        "identity_id": "group:dev", "path": "shared/certificates/root", "permission": "read"})).json()
    assert allowed == {"identity_id": "group:dev", "evaluated_at": allowed["evaluated_at"], "allowed": True,
                       "path": "shared/certificates/root", "permission": "read", "decided_by": "policy",
                       "policy_id": policy_id, "policy_name": "test-policy", "rule_index": 0, "code": None,
                       "failed_condition": None, "reason": allowed["reason"]}
    # A user in the group: the dry run knows its groups only from the identity mirror, so it is not bound here.
    denied = await (await client.post(url, headers=reader, json={
        "identity_id": "sa:svc", "path": "shared/certificates/root", "permission": "read"})).json()
    assert (denied["allowed"], denied["code"], denied["policy_id"]) == (False, "access_denied", None)
    prod = {"identity_id": "group:dev", "path": "environments/production/db", "permission": "list"}
    outside = await (await client.post(url, headers=reader, json={**prod, "context": {"source_ip": "8.8.8.8"}})).json()
    assert (outside["code"], outside["policy_id"], outside["rule_index"]) == ("ip_not_allowed", policy_id, 1)
    no_mfa = await (await client.post(url, headers=reader, json={**prod, "context": {"source_ip": "10.0.0.1"}})).json()
    assert no_mfa["code"] == "mfa_required"
    ok = await (await client.post(url, headers=reader, json={
        **prod, "context": {"source_ip": "10.0.0.1", "mfa_verified": True}})).json()
    assert ok["allowed"] is True
    before = (datetime.now(UTC) - timedelta(days=365)).isoformat()
    earlier = await (await client.post(url, headers=reader, json={
        **prod, "context": {"source_ip": "10.0.0.1", "mfa_verified": True, "timestamp": before}})).json()
    assert earlier["allowed"] is True and earlier["evaluated_at"].startswith(before[:19])
    me = caller_token(container, "policies:read", roles=("tenant_admin",), identity="user:admin@acme.example")
    mine = await (await client.post(url, headers=me, json={
        "identity_id": "user:admin@acme.example", "path": "anything", "permission": "admin"})).json()
    assert (mine["allowed"], mine["decided_by"]) == (True, "role:tenant_admin")
    for body, expected in [
        ({**prod, "permission": "sudo"}, (422, "validation_error")),
        ({**prod, "path": "/bad//path"}, (400, "invalid_path")),
        ({**prod, "context": {"source_ip": "nope"}}, (400, "invalid_request")),
        ({**prod, "extra": 1}, (422, "validation_error")),
    ]:
        assert await error_of(await client.post(url, headers=reader, json=body)) == expected, body
    no_scope = caller_token(container, "secrets:read")
    assert await error_of(await client.post(url, headers=no_scope, json=prod)) == (403, "insufficient_scope")


async def test_the_dry_run_writes_no_audit_record(client: TestClient, container: Container) -> None:
    reader = caller_token(container, "policies:read")
    dry = await client.post("/v1/policies/test", headers=reader,
                            json={"identity_id": "sa:svc", "path": "app/db", "permission": "read"})
    assert dry.status == 200
    listed = await client.get("/v1/policies", headers=reader)  # audited: durable before its answer
    assert listed.status == 200

    async def recorded(route: str) -> int:
        return await container.pool.fetchval(
            """SELECT count(*) FROM scaivault_events WHERE topic = 'scaivault.domain.access:AccessRecorded'
               AND convert_from(state, 'UTF8')::jsonb ->> 'route' = $1""", route)

    assert await recorded("/v1/policies") == 1
    assert await recorded("/v1/policies/test") == 0


async def test_policy_changes_are_audited_with_their_actions(client: TestClient, container: Container) -> None:
    policy = await create_policy(client, admin(container), [READ_CERTS])
    binding = await bind(client, admin(container), policy["id"])
    await client.patch(f"/v1/policies/{policy['id']}", json={"name": "n"}, headers=admin(container))
    await client.delete(f"/v1/policies/{policy['id']}/bindings/{binding['id']}", headers=admin(container))
    await client.delete(f"/v1/policies/{policy['id']}", headers=admin(container))
    actions = [row["action"] for row in await container.pool.fetch(
        """SELECT convert_from(state, 'UTF8')::jsonb ->> 'action' AS action FROM scaivault_events
           WHERE topic = 'scaivault.domain.access:AccessRecorded' ORDER BY notification_id""")]
    assert actions == ["policy_create", "policy_bind", "policy_update", "policy_unbind", "policy_delete"]


async def test_a_policy_id_with_a_nul_is_not_found(client: TestClient, container: Container) -> None:
    for method, url in (("GET", "/v1/policies/pol_%00"), ("GET", "/v1/policies/pol_%00/bindings"),
                        ("DELETE", "/v1/policies/pol_%00"), ("PATCH", "/v1/policies/pol_%00")):
        response = await client.request(method, url, json={"name": "n"} if method == "PATCH" else None,
                                        headers=admin(container))
        assert await error_of(response) == (404, "policy_not_found"), (method, url)


EDGE_TIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "9999-12-31T23:00:00Z")


@pytest.mark.parametrize("expires_at", EDGE_TIMES)
async def test_binding_expiry_at_the_calendars_edge_is_a_validation_error(
    client: TestClient, container: Container, expires_at: str
) -> None:
    policy = await create_policy(client, admin(container), [{"path_pattern": "app/*", "permissions": ["read"]}])
    response = await client.post(f"/v1/policies/{policy['id']}/bindings", headers=admin(container), json={
        "identity_type": "service_account", "identity_id": "sa:svc", "expires_at": expires_at})
    assert await error_of(response) == (422, "validation_error")
    assert (await (await client.get(f"/v1/policies/{policy['id']}", headers=admin(container))).json())["bindings"] == []


@pytest.mark.parametrize("field", ["timestamp", "mfa_verified_at"])
@pytest.mark.parametrize("moment", EDGE_TIMES)
async def test_dry_run_times_at_the_calendars_edge_are_a_validation_error(
    client: TestClient, container: Container, field: str, moment: str
) -> None:
    # A rule in a zone east of UTC: evaluating year 9999 there would overflow.
    await grant(client, container, [{"path_pattern": "app/*", "permissions": ["read"], "conditions": {
        "time_windows": [{"start": "00:00", "end": "24:00", "timezone": "Pacific/Kiritimati"}]}}])
    response = await client.post("/v1/policies/test", headers=admin(container), json={
        "identity_id": "sa:svc", "path": "app/db", "permission": "read",
        "context": {"mfa_verified": True, field: moment}})
    assert await error_of(response) == (422, "validation_error")


async def test_dry_run_still_takes_an_offset_timestamp(client: TestClient, container: Container) -> None:
    await grant(client, container, [{"path_pattern": "app/*", "permissions": ["read"]}])
    response = await client.post("/v1/policies/test", headers=admin(container), json={
        "identity_id": "sa:svc", "path": "app/db", "permission": "read",
        "context": {"timestamp": "2026-01-01T12:00:00+02:00"}})
    body = await response.json()
    assert response.status == 200, body
    assert (body["allowed"], body["evaluated_at"]) == (True, "2026-01-01T10:00:00.000000Z")
