"""Adversarial review of policies, the identity mirror and rate limiting: malformed input that reached the
database or the calendar's edge unchecked (each was a 500), and a listing cursor that named a hidden secret."""

from __future__ import annotations

import base64
import json

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.http import secrets as secrets_http
from tests.e2e.conftest import OTHER_TENANT, TENANT, TokenFactory, bearer
from tests.e2e.policy_helpers import admin, caller_token, create_policy, error_of, grant, put_secrets

HUGE = "0" * 11 + "1" + "0" * 5000  # past int()'s digit limit, and its first 12 characters read as 1


def identity_admin(token: TokenFactory) -> dict[str, str]:
    return bearer(token("identity:read", "identity:admin", identity="user:admin@acme.example", roles=("partner_admin",)))


@pytest.mark.parametrize("query", [
    f"page={HUGE}", f"page_size={HUGE}", "page_size=0000000000010000", "page=0000000000010000000",
])
async def test_identity_paging_numbers_are_bounded_by_their_whole_value(
    client: TestClient, token: TokenFactory, query: str
) -> None:
    for url in (f"/v1/identity/tenants/{TENANT}/users", f"/v1/identity/tenants/{TENANT}/groups",
                "/v1/identity/partners", "/v1/identity/sync/history"):
        response = await client.get(f"{url}?{query}", headers=identity_admin(token))
        assert response.status == 400, (url, await response.text())
        assert (await response.json())["error"]["code"] == "invalid_request"


async def test_identity_paging_still_takes_leading_zeros_within_bounds(client: TestClient, token: TokenFactory) -> None:
    response = await client.get(f"/v1/identity/tenants/{TENANT}/users?page=01&page_size=0010",
                                headers=identity_admin(token))
    assert response.status == 200
    assert ((await response.json())["page"], (await response.json())["page_size"]) == (1, 10)


async def test_resolving_an_identity_named_with_a_nul_is_not_found(client: TestClient, token: TokenFactory) -> None:
    for kind in ("user", "group"):
        response = await client.get(f"/v1/identity/resolve/{kind}/a%00b", headers=identity_admin(token))
        assert response.status == 404, await response.text()
        assert (await response.json())["error"]["code"] == "identity_not_found"


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


async def test_as_of_before_anything_datetime_can_hold_in_utc_is_invalid(
    client: TestClient, container: Container
) -> None:
    await put_secrets(client, container, "app/db")
    for url in ("/v1/secrets/app/db", "/v1/secrets/app/db/metadata", "/v1/secrets/app/db/versions"):
        response = await client.get(f"{url}?as_of=0001-01-01T00:00:00%2B14:00", headers=admin(container))
        assert await error_of(response) == (400, "invalid_request"), url


async def test_a_listing_cursor_never_names_a_secret_the_caller_may_not_list(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets_http, "LIST_SCAN_BUDGET", 2)
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
        shown = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        assert "hidden" not in json.dumps(json.loads(shown)), shown
    assert listed == ["app/shown-ok"]


async def test_a_listing_cursor_is_sealed_to_its_tenant_and_prefix(client: TestClient, container: Container) -> None:
    await put_secrets(client, container, "app/a", "app/b", "app/c")
    mine = admin(container)
    body = await (await client.get("/v1/secrets?prefix=app/&limit=1", headers=mine)).json()
    cursor = body["cursor"]
    assert cursor and "app/a" not in base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    assert (await client.get(f"/v1/secrets?prefix=app/&limit=1&cursor={cursor}", headers=mine)).status == 200
    state = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    sealed = bytearray(base64.urlsafe_b64decode(state["after"]))
    sealed[-1] ^= 1
    tampered_state = {**state, "after": base64.urlsafe_b64encode(bytes(sealed)).decode()}
    tampered = base64.urlsafe_b64encode(json.dumps(tampered_state).encode()).decode()
    elsewhere = admin(container, tenant=OTHER_TENANT)
    for headers, candidate in ((mine, tampered), (elsewhere, cursor)):
        response = await client.get(f"/v1/secrets?prefix=app/&limit=1&cursor={candidate}", headers=headers)
        assert await error_of(response) == (400, "invalid_cursor")


async def test_every_timestamp_a_caller_sends_is_refused_at_the_calendars_edge(
    client: TestClient, container: Container
) -> None:
    """One parser (scaivault.domain.timestamps) for all of them: none may turn into a 500 further down."""
    headers = caller_token(container, "audit:read", "audit:export", roles=("tenant_admin",))
    early, late = "0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00"
    for url in (f"/v1/audit/logs?from={early}", f"/v1/audit/logs?to={late}", f"/v1/audit/summary?from={early}",
                f"/v1/audit/secrets/app/db?to={late}"):
        assert await error_of(await client.get(url, headers=headers)) == (400, "invalid_request"), url
    export = {"from": "0001-01-01T00:00:00+14:00", "to": "2026-01-01T00:00:00Z", "format": "jsonl",
              "destination": {"type": "local", "prefix": "x"}}
    response = await client.post("/v1/audit/export", json=export, headers=headers)
    assert await error_of(response) == (422, "validation_error")
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_audit_exports") == 0


async def test_a_nul_in_any_text_parameter_is_a_bad_request_not_a_500(client: TestClient, container: Container) -> None:
    """PostgreSQL refuses NUL in text: whichever parameter carries one, the answer is 400, found at the front door
    rather than handler by handler."""
    headers = caller_token(container, "audit:read", roles=("tenant_admin",))
    for url in ("/v1/audit/logs?identity_id=a%00b", "/v1/audit/logs?request_id=a%00b", "/v1/audit/identities/user:a%00b"):
        assert await error_of(await client.get(url, headers=headers)) == (400, "invalid_request"), url
