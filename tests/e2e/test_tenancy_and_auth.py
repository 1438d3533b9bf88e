"""Tenancy over HTTP: isolation, tenant resolution, partner secrets; and the auth endpoints."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT, TokenFactory, bearer


async def error_code(response) -> str:  # type: ignore[no-untyped-def]
    return (await response.json())["error"]["code"]


async def test_same_path_in_two_tenants_is_two_secrets(client: TestClient, token: TokenFactory) -> None:
    prod, dev = token(), token(tenant=OTHER_TENANT)
    await client.put("/v1/secrets/app/db/password", json={"data": {"pw": "prod"}}, headers=bearer(prod))
    assert (await client.get("/v1/secrets/app/db/password", headers=bearer(dev))).status == 404
    await client.put("/v1/secrets/app/db/password", json={"data": {"pw": "dev"}}, headers=bearer(dev))
    prod_value = await (await client.get("/v1/secrets/app/db/password", headers=bearer(prod))).json()
    dev_value = await (await client.get("/v1/secrets/app/db/password", headers=bearer(dev))).json()
    assert (prod_value["data"], dev_value["data"]) == ({"pw": "prod"}, {"pw": "dev"})
    assert dev_value["version"] == 1
    listing = await (await client.get("/v1/secrets", headers=bearer(dev))).json()
    assert [s["path"] for s in listing["secrets"]] == ["app/db/password"]


async def test_another_tenants_secret_looks_exactly_like_no_secret(client: TestClient, token: TokenFactory) -> None:
    await client.put("/v1/secrets/app/only-prod", json={"data": {"k": "v"}}, headers=bearer(token()))
    dev = token(tenant=OTHER_TENANT)
    existing_elsewhere = await client.get("/v1/secrets/app/only-prod", headers=bearer(dev))
    nowhere = await client.get("/v1/secrets/app/never-written", headers=bearer(dev))
    a, b = await existing_elsewhere.json(), await nowhere.json()
    assert existing_elsewhere.status == nowhere.status == 404
    assert a["error"]["code"] == b["error"]["code"] == "secret_not_found"
    assert a["error"]["message"] == b["error"]["message"]


async def test_partner_admin_reaches_its_tenants_by_path_prefix_and_header(
    client: TestClient, token: TokenFactory
) -> None:
    admin = token(roles=("partner_admin",))
    written = await client.put(
        f"/v1/t/{OTHER_TENANT}/secrets/app/x", json={"data": {"k": "in-dev"}}, headers=bearer(admin)
    )
    assert written.status == 201
    via_header = await client.get("/v1/secrets/app/x", headers={**bearer(admin), "X-Tenant-ID": OTHER_TENANT})
    assert (await via_header.json())["data"] == {"k": "in-dev"}
    dev_user = await client.get("/v1/secrets/app/x", headers=bearer(token(tenant=OTHER_TENANT)))
    assert dev_user.status == 200
    assert (await client.get("/v1/secrets/app/x", headers=bearer(admin))).status == 404  # its own tenant


async def test_cross_tenant_requests_are_refused_without_revealing_tenants(
    client: TestClient, token: TokenFactory
) -> None:
    user = token()
    for headers in ({"X-Tenant-ID": OTHER_TENANT}, {}):
        url = "/v1/secrets/app/x" if headers else f"/v1/t/{OTHER_TENANT}/secrets/app/x"
        response = await client.get(url, headers={**bearer(user), **headers})
        assert response.status == 403 and await error_code(response) == "tenant_access_denied"
    admin = token(roles=("partner_admin",))
    foreign = await client.get(f"/v1/t/{FOREIGN_TENANT}/secrets/app/x", headers=bearer(admin))
    unknown = await client.get("/v1/t/tnt_does_not_exist/secrets/app/x", headers=bearer(admin))
    assert foreign.status == unknown.status == 403
    assert await error_code(foreign) == await error_code(unknown) == "tenant_access_denied"
    malformed = await client.get("/v1/t/not-a-tenant/secrets/app/x", headers=bearer(admin))
    assert malformed.status == 400


async def test_a_token_for_an_unknown_tenant_or_wrong_partner(client: TestClient, token: TokenFactory) -> None:
    unknown = await client.get("/v1/secrets/a", headers=bearer(token(tenant="tnt_ghost")))
    assert unknown.status == 404 and await error_code(unknown) == "tenant_not_found"
    mismatched = await client.get("/v1/secrets/a", headers=bearer(token(partner=OTHER_PARTNER)))
    assert mismatched.status == 403 and await error_code(mismatched) == "tenant_access_denied"


async def test_partner_secrets_are_read_by_every_tenant_and_written_by_partner_admins(
    client: TestClient, token: TokenFactory
) -> None:
    admin = token(roles=("partner_admin",))
    written = await client.put(
        "/v1/partner/secrets/shared/webhook-signing-key", json={"data": {"key": "whsec"}}, headers=bearer(admin)
    )
    assert written.status == 201
    for tenant in (None, OTHER_TENANT):
        reader = token("secrets:read", tenant=tenant) if tenant else token("secrets:read")
        read = await client.get("/v1/partner/secrets/shared/webhook-signing-key", headers=bearer(reader))
        assert (await read.json())["data"] == {"key": "whsec"}
    denied = await client.put(
        "/v1/partner/secrets/shared/webhook-signing-key", json={"data": {"key": "x"}}, headers=bearer(token())
    )
    assert denied.status == 403 and await error_code(denied) == "access_denied"
    # A partner secret is not a tenant secret of the same path, and another partner cannot read it.
    assert (await client.get("/v1/secrets/shared/webhook-signing-key", headers=bearer(token()))).status == 404
    outsider = token("secrets:read", tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    assert (await client.get("/v1/partner/secrets/shared/webhook-signing-key", headers=bearer(outsider))).status == 404


async def test_scopes_gate_every_secrets_endpoint(client: TestClient, token: TokenFactory) -> None:
    await client.put("/v1/secrets/app/s", json={"data": {"k": "v"}}, headers=bearer(token()))
    nothing = bearer(token("audit:read"))
    calls = [
        client.get("/v1/secrets/app/s", headers=nothing),
        client.put("/v1/secrets/app/s", json={"data": {}}, headers=nothing),
        client.delete("/v1/secrets/app/s", headers=nothing),
        client.post("/v1/secrets/app/s/restore", headers=nothing),
        client.get("/v1/secrets/app/s/metadata", headers=nothing),
        client.patch("/v1/secrets/app/s/metadata", json={}, headers=nothing),
        client.get("/v1/secrets/app/s/versions", headers=nothing),
        client.get("/v1/secrets", headers=nothing),
        client.post("/v1/secrets/batch", json={"paths": ["app/s"]}, headers=nothing),
        client.post("/v1/secrets/batch/metadata", json={"paths": ["app/s"]}, headers=nothing),
    ]
    for call in calls:
        response = await call
        assert response.status == 403 and await error_code(response) == "insufficient_scope"


async def test_introspect_needs_admin_and_reports_inactive_tokens(client: TestClient, token: TokenFactory) -> None:
    subject = token("secrets:read")
    plain = await client.post("/v1/auth/introspect", json={"token": subject}, headers=bearer(token()))
    assert plain.status == 403
    admin = bearer(token("admin"))
    active = await (await client.post("/v1/auth/introspect", json={"token": subject}, headers=admin)).json()
    assert active["active"] is True and active["identity_id"] == "user:alice@acme.example"
    assert active["scopes"] == ["secrets:read"] and active["expires_at"].endswith("Z")
    for bad in ("garbage", subject[:-4] + "AAAA", "skt_unknown"):
        inactive = await client.post("/v1/auth/introspect", json={"token": bad}, headers=admin)
        assert inactive.status == 200 and await inactive.json() == {"active": False}


async def test_a_partner_level_token_for_an_unknown_partner(client: TestClient, token: TokenFactory) -> None:
    response = await client.get("/v1/partner/secrets/x", headers=bearer(token(tenant=None, partner="ptn_ghost")))
    body = await response.json()
    assert response.status == 404 and body["error"]["code"] == "tenant_not_found"
    assert "key" not in body["error"]["message"].lower()
