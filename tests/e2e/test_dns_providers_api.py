"""/v1/dns/providers over HTTP (spec reference/dns-providers, tutorials/acme-wildcard-cert step 1): every endpoint,
scopes and roles, tenant isolation, ``verify`` against a real (stand-in) provider API, bad input answered with the
error envelope, and the credentials never in an answer, the audit log, the events or the read model in plaintext;
deleting a provider destroys its data key. ``DnsProviderService.open_for_zone`` gives ACME a working client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from scaivault.domain.errors import DnsProviderNotFound
from scaivault.serialization import dumps
from tests.dns_standins import CLOUDFLARE_TOKEN, StandIn, client_settings, standing_in
from tests.e2e.conftest import FOREIGN_TENANT, GENEROUS_RATE_LIMITS, OTHER_PARTNER, OTHER_TENANT, TENANT
from tests.e2e.helpers import caller_token, caught_up, error_document, error_of

BASE = "/v1/dns/providers"
ROUTE53_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ROUTE53_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """The stand-in provider runs on loopback: the operator allows it (and plain http to it)."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32",
    )


@pytest.fixture
async def cloudflare() -> AsyncIterator[StandIn]:
    async with standing_in("cloudflare", ["acme.example", "other.example"]) as standin:
        yield standin


def admin(container: Container, tenant: str = TENANT, partner: str = "ptn_acme", *scopes: str) -> dict[str, str]:
    return caller_token(container, *(scopes or ("pki:admin",)), identity="user:admin@acme.example", tenant=tenant,
                        partner=partner, roles=("tenant_admin",))


def route53_body(**fields: Any) -> dict[str, Any]:
    """The tutorial's request (verification left to the Cloudflare tests: no AWS here)."""
    return {
        "name": "route53-acme", "provider_type": "route53",
        "credentials": {"access_key_id": ROUTE53_KEY_ID, "secret_access_key": ROUTE53_SECRET},
        "managed_zones": ["acme.example", "*.acme.example"], **fields,
    }


def cloudflare_body(standin: StandIn, **fields: Any) -> dict[str, Any]:
    credentials, config = client_settings(standin)
    return {"name": "cloudflare-acme", "provider_type": "cloudflare", "credentials": credentials, "config": config,
            "managed_zones": ["acme.example", "*.acme.example"], **fields}


async def create(client: TestClient, container: Container, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.post(BASE, json=body, headers=admin(container))
    document = await response.json()
    assert response.status == 201, document
    return document


async def test_create_get_list_patch_delete(client: TestClient, container: Container) -> None:
    headers = admin(container)
    created = await create(client, container, route53_body(description="the tutorial's provider"))
    provider_id = created["id"]
    assert provider_id.startswith("dnsp_") and created["is_active"] is True
    assert (created["name"], created["provider_type"], created["managed_zones"], created["description"]) == (
        "route53-acme", "route53", ["acme.example", "*.acme.example"], "the tutorial's provider")
    assert created["credential_fields"] == ["access_key_id", "region", "secret_access_key"]
    assert "credentials" not in created and created["config"] == {}
    assert created["created_at"].endswith("Z") and created["created_by"] == "user:admin@acme.example"

    got = await client.get(f"{BASE}/{provider_id}", headers=headers)
    assert got.status == 200 and await got.json() == created
    listed = await (await client.get(BASE, headers=headers)).json()
    assert [p["id"] for p in listed["providers"]] == [provider_id] and listed["has_more"] is False

    patched = await client.patch(f"{BASE}/{provider_id}", headers=headers, json={
        "name": "renamed", "description": None, "managed_zones": ["Acme.Example."], "is_active": False,
        "config": {"ttl": 120},
    })
    body = await patched.json()
    assert patched.status == 200, body
    assert (body["name"], body["description"], body["managed_zones"], body["is_active"], body["config"]) == (
        "renamed", None, ["acme.example"], False, {"ttl": 120})
    inactive = await (await client.get(BASE + "?include_inactive=false", headers=headers)).json()
    assert inactive["providers"] == []

    replaced = await client.patch(f"{BASE}/{provider_id}", headers=headers,
                                  json={"credentials": {"access_key_id": "AKIAOTHER", "secret_access_key": "x" * 40,
                                                        "region": "eu-west-1"}})
    assert replaced.status == 200 and (await replaced.json())["credential_fields"] == [
        "access_key_id", "region", "secret_access_key"]

    deleted = await client.delete(f"{BASE}/{provider_id}", headers=headers)
    assert deleted.status == 204
    assert await error_of(await client.get(f"{BASE}/{provider_id}", headers=headers)) == (
        404, "dns_provider_not_found")
    assert await error_of(await client.delete(f"{BASE}/{provider_id}", headers=headers)) == (
        404, "dns_provider_not_found")


async def test_listing_pages_with_a_cursor_bound_to_its_filters(client: TestClient, container: Container) -> None:
    headers = admin(container)
    ids = [(await create(client, container, route53_body(name=f"p{i}", managed_zones=[f"z{i}.example"])))["id"]
           for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(BASE + query, headers=headers)).json()
        seen += [p["id"] for p in page["providers"]]
        cursor = page["cursor"]
        if not page["has_more"]:
            break
    assert seen == ids
    first = await (await client.get(BASE + "?limit=2", headers=headers)).json()
    other_filter = await client.get(BASE + f"?limit=2&provider_type=cloudflare&cursor={first['cursor']}",
                                    headers=headers)
    assert await error_of(other_filter) == (400, "invalid_cursor")


async def test_verify_true_checks_the_credentials_before_storing(
    client: TestClient, container: Container, cloudflare: StandIn
) -> None:
    headers = admin(container)
    created = await create(client, container, cloudflare_body(cloudflare, verify=True))
    assert created["provider_type"] == "cloudflare" and created["credential_fields"] == ["api_token"]
    assert created["config"] == {"api_base_url": cloudflare.url + "/client/v4"}

    # Bad credentials: 400 invalid_config with the reason, nothing stored.
    wrong = cloudflare_body(cloudflare, name="wrong", verify=True, managed_zones=["other.example"])
    wrong["credentials"] = {"api_token": "wrong-token-0123456789"}
    response = await client.post(BASE, json=wrong, headers=headers)
    error = await error_document(response)
    assert (response.status, error["code"]) == (400, "invalid_config"), error
    assert "refused the credentials" in error["message"] and "wrong-token" not in dumps(error).decode()
    # A zone the credentials cannot see.
    missing = cloudflare_body(cloudflare, name="missing", verify=True, managed_zones=["elsewhere.example"])
    response = await client.post(BASE, json=missing, headers=headers)
    error = await error_document(response)
    assert (response.status, error["code"]) == (400, "invalid_config")
    assert error["details"]["missing_zones"] == ["elsewhere.example"]
    listed = await (await client.get(BASE, headers=headers)).json()
    assert [p["id"] for p in listed["providers"]] == [created["id"]]

    # verify: false stores what it is given; the verify endpoint then tells.
    unverified = await create(client, container, {**wrong, "name": "unverified", "verify": False})
    response = await client.post(f"{BASE}/{unverified['id']}/verify", headers=headers)
    assert await error_of(response) == (400, "invalid_config")
    verified = await client.post(f"{BASE}/{created['id']}/verify", headers=headers)
    assert verified.status == 200
    assert await verified.json() == {"id": created["id"], "ok": True, "zones": ["acme.example"]}

    # PATCH with verify: new credentials are tried first; a failure changes nothing.
    response = await client.patch(f"{BASE}/{created['id']}", headers=headers,
                                  json={"credentials": {"api_token": "wrong-again-0123456"}, "verify": True})
    assert await error_of(response) == (400, "invalid_config")
    assert (await client.post(f"{BASE}/{created['id']}/verify", headers=headers)).status == 200
    response = await client.patch(f"{BASE}/{unverified['id']}", headers=headers,
                                  json={"credentials": {"api_token": CLOUDFLARE_TOKEN}, "verify": True})
    assert response.status == 200, await response.json()


async def test_open_for_zone_gives_acme_a_working_client(
    client: TestClient, container: Container, cloudflare: StandIn
) -> None:
    created = await create(client, container, cloudflare_body(cloudflare))
    service = container.dns_providers
    assert await service.provider_for(TENANT, "_acme-challenge.www.acme.example") == created["id"]
    records = await service.open_for_zone(TENANT, "_acme-challenge.acme.example")
    try:
        await records.set_txt("_acme-challenge.acme.example", "token-1")
        assert cloudflare.values("_acme-challenge.acme.example") == ["token-1"]
        await records.remove_txt("_acme-challenge.acme.example", "token-1")
        assert cloudflare.values("_acme-challenge.acme.example") == []
    finally:
        await records.aclose()
    with pytest.raises(DnsProviderNotFound):
        await service.open_for_zone(TENANT, "_acme-challenge.other.example")  # not a managed zone
    with pytest.raises(DnsProviderNotFound):
        await service.open_for_zone(OTHER_TENANT, "_acme-challenge.acme.example")  # another tenant's
    await client.patch(f"{BASE}/{created['id']}", headers=admin(container), json={"is_active": False})
    with pytest.raises(DnsProviderNotFound):
        await service.open_for_zone(TENANT, "_acme-challenge.acme.example")  # inactive


async def test_concurrent_creations_of_one_name_make_one_provider(client: TestClient, container: Container) -> None:
    headers = admin(container)
    responses = await asyncio.gather(*(
        client.post(BASE, json=route53_body(managed_zones=[f"c{i}.example"]), headers=headers) for i in range(6)
    ))
    statuses = sorted(r.status for r in responses)
    assert statuses == [201, 409, 409, 409, 409, 409]


async def test_names_are_unique_and_zones_have_one_active_provider(client: TestClient, container: Container) -> None:
    headers = admin(container)
    first = await create(client, container, route53_body())
    response = await client.post(BASE, json=route53_body(managed_zones=["b.example"]), headers=headers)
    assert await error_of(response) == (409, "dns_provider_exists")
    response = await client.post(BASE, json=route53_body(name="second", managed_zones=["*.acme.example"]),
                                 headers=headers)
    status, code = await error_of(response)
    assert (status, code) == (422, "validation_error")
    # Inactive, it may name the zone; activating it then is refused while the first is active.
    second = await create(client, container, route53_body(name="second", is_active=False))
    response = await client.patch(f"{BASE}/{second['id']}", json={"is_active": True}, headers=headers)
    assert await error_of(response) == (422, "validation_error")
    await client.patch(f"{BASE}/{first['id']}", json={"is_active": False}, headers=headers)
    response = await client.patch(f"{BASE}/{second['id']}", json={"is_active": True}, headers=headers)
    assert response.status == 200
    response = await client.patch(f"{BASE}/{second['id']}", json={"name": "route53-acme"}, headers=headers)
    assert await error_of(response) == (409, "dns_provider_exists")
    # Another tenant may use the same name and zones.
    other = admin(container, OTHER_TENANT)
    assert (await client.post(BASE, json=route53_body(), headers=other)).status == 201


@pytest.mark.parametrize(("body", "field"), [
    ({"provider_type": "bind9"}, "provider_type"),
    ({"name": ""}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"managed_zones": []}, "managed_zones"),
    ({"managed_zones": ["not a zone"]}, "managed_zones.0"),
    ({"managed_zones": ["com"]}, "managed_zones.0"),
    ({"managed_zones": [7]}, "managed_zones.0"),
    ({"credentials": {"access_key_id": ROUTE53_KEY_ID}}, "credentials.secret_access_key"),
    ({"credentials": {"access_key_id": ROUTE53_KEY_ID, "secret_access_key": ROUTE53_SECRET, "region": "mars"}},
     "credentials.region"),
    ({"credentials": {"api_token": "t"}}, "credentials.api_token"),
    ({"credentials": "a string"}, "credentials"),
    ({"config": {"endpoint_url": "ftp://example.com"}}, "config.endpoint_url"),
    ({"config": {"endpoint_url": "http://10.0.0.1"}}, "config.endpoint_url"),
    ({"config": {"ttl": 0}}, "config.ttl"),
    ({"config": {"colour": "blue"}}, "config.colour"),
    ({"is_active": "yes"}, "is_active"),
    ({"verify": 1}, "verify"),
    ({"unknown": 1}, "unknown"),
    ({"description": "d" * 1025}, "description"),
    ({"credentials": {"access_key_id": ["x"], "secret_access_key": {"a": 1}}}, "credentials.access_key_id"),
    ({"managed_zones": [f"z{i}.example" for i in range(101)]}, "managed_zones"),
    ({"managed_zones": ["\u00e9" * 300 + ".example"]}, "managed_zones.0"),
])
async def test_bad_creations_get_the_error_envelope(
    client: TestClient, container: Container, body: dict[str, Any], field: str
) -> None:
    response = await client.post(BASE, json=route53_body(**body), headers=admin(container))
    error = await error_document(response)
    assert (response.status, error["code"]) == (422, "validation_error"), error
    assert field in [f["field"] for f in error["details"]["fields"]], error
    assert ROUTE53_SECRET not in dumps(error).decode()


@pytest.mark.parametrize(("provider_type", "credentials", "field"), [
    ("scaidns", {"base_url": "https://scaidns.scailabs.ai", "api_key": "not-sdk"}, "credentials.api_key"),
    ("scaidns", {"api_key": "sdk_x"}, "credentials.base_url"),
    ("powerdns", {"api_url": "http://192.168.1.10:8081", "api_key": "k"}, "credentials.api_url"),
    ("azure", {"subscription_id": "s", "resource_group": "r", "tenant_id": "t", "client_id": "c"},
     "credentials.client_secret"),
    ("google", {"project_id": "p", "service_account_json": "{}"}, "credentials.service_account_json"),
    ("digitalocean", {}, "credentials.api_token"),
    ("cloudflare", {"api_token": "t", "zone_id": "z"}, "credentials.zone_id"),
])
async def test_each_type_checks_its_credentials(
    client: TestClient, container: Container, provider_type: str, credentials: dict[str, Any], field: str
) -> None:
    body = {"name": "p", "provider_type": provider_type, "credentials": credentials, "managed_zones": ["a.example"]}
    response = await client.post(BASE, json=body, headers=admin(container))
    error = await error_document(response)
    assert (response.status, error["code"]) == (422, "validation_error"), error
    assert [f["field"] for f in error["details"]["fields"]] == [field]


async def test_every_type_is_accepted_with_its_credentials(client: TestClient, container: Container) -> None:
    account = json.dumps({"type": "service_account", "client_email": "a@p.iam.gserviceaccount.com",
                          "private_key": "-----BEGIN PRIVATE KEY-----\nMII...\n-----END PRIVATE KEY-----\n"})
    bodies = {
        "scaidns": {"base_url": "https://scaidns.scailabs.ai", "api_key": "sdk_0123456789"},
        "cloudflare": {"api_token": "cf-0123456789"},
        "route53": {},
        "azure": {"subscription_id": "s", "resource_group": "r", "tenant_id": "t", "client_id": "c",
                  "client_secret": "cs"},
        "google": {"project_id": "p", "service_account_json": json.loads(account)},
        "digitalocean": {"api_token": "dop_v1_0123"},
        "powerdns": {"api_url": "http://127.0.0.1:8081", "api_key": "k"},
    }
    for index, (provider_type, credentials) in enumerate(bodies.items()):
        body = {"name": provider_type, "provider_type": provider_type, "credentials": credentials,
                "managed_zones": [f"z{index}.example"]}
        response = await client.post(BASE, json=body, headers=admin(container))
        assert response.status == 201, (provider_type, await response.json())
        document = await response.json()
        assert document["credential_fields"] == sorted(
            {**credentials, **({"region": 1} if provider_type == "route53" else {}),
             **({"server_id": 1} if provider_type == "powerdns" else {})})


async def test_malformed_bodies_paths_and_queries(client: TestClient, container: Container) -> None:
    headers = admin(container)
    for raw in (b"not json", b"[]", b'{"name": "\\u0000"}'):
        response = await client.post(BASE, data=raw, headers={**headers, "Content-Type": "application/json"})
        assert 400 <= response.status < 500, raw
        assert "error" in await response.json()
    assert await error_of(await client.get(f"{BASE}/dnsp_missing", headers=headers)) == (
        404, "dns_provider_not_found")
    assert await error_of(await client.get(f"{BASE}/{'x' * 100}", headers=headers)) == (
        404, "dns_provider_not_found")
    assert await error_of(await client.post(f"{BASE}/dnsp_missing/verify", headers=headers)) == (
        404, "dns_provider_not_found")
    assert (await client.patch(f"{BASE}/dnsp_missing", json={"name": None}, headers=headers)).status == 422
    assert await error_of(await client.patch(f"{BASE}/dnsp_missing", json={"name": "n"}, headers=headers)) == (
        404, "dns_provider_not_found")
    for query in ("?limit=0", "?limit=abc", "?provider_type=bind9", "?cursor=garbage", "?include_inactive=maybe"):
        response = await client.get(BASE + query, headers=headers)
        assert response.status in (400, 422), query
        assert "error" in await response.json()


async def test_scopes_roles_and_tenant_isolation(client: TestClient, container: Container) -> None:
    provider = await create(client, container, route53_body())
    one = f"{BASE}/{provider['id']}"
    issuer = caller_token(container, "pki:issue", identity="sa:acme", roles=())
    assert (await client.get(one, headers=issuer)).status == 200
    assert (await client.get(BASE, headers=issuer)).status == 200
    assert await error_of(await client.post(BASE, json=route53_body(name="x"), headers=issuer)) == (
        403, "insufficient_scope")
    assert await error_of(await client.delete(one, headers=issuer)) == (403, "insufficient_scope")
    assert await error_of(await client.post(one + "/verify", headers=issuer)) == (403, "insufficient_scope")
    nobody = caller_token(container, "secrets:read", identity="sa:other", roles=("tenant_admin",))
    assert await error_of(await client.get(one, headers=nobody)) == (403, "insufficient_scope")
    # The pki:admin scope without an admin role for the tenant cannot change providers.
    not_admin = caller_token(container, "pki:admin", identity="sa:ops", roles=())
    assert (await client.get(one, headers=not_admin)).status == 200
    assert await error_of(await client.patch(one, json={"name": "y"}, headers=not_admin)) == (403, "access_denied")
    assert await error_of(await client.delete(one, headers=not_admin)) == (403, "access_denied")
    assert await error_of(await client.post(BASE, json=route53_body(name="z"), headers=not_admin)) == (
        403, "access_denied")
    # Another tenant's admin: the provider does not exist for it.
    other = admin(container, OTHER_TENANT)
    assert await error_of(await client.get(one, headers=other)) == (404, "dns_provider_not_found")
    assert await error_of(await client.patch(one, json={"name": "y"}, headers=other)) == (
        404, "dns_provider_not_found")
    assert await error_of(await client.delete(one, headers=other)) == (404, "dns_provider_not_found")
    assert (await (await client.get(BASE, headers=other)).json())["providers"] == []
    # A partner admin reaches its tenants' providers under /v1/t/{tenant}/; another partner's admin does not.
    partner_admin = caller_token(container, "pki:admin", identity="user:padmin", tenant=None, roles=("partner_admin",))
    listed = await client.get(f"/v1/t/{TENANT}/dns/providers", headers=partner_admin)
    assert [p["id"] for p in (await listed.json())["providers"]] == [provider["id"]]
    foreign = admin(container, FOREIGN_TENANT, OTHER_PARTNER)
    assert await error_of(await client.get(f"/v1/t/{TENANT}/dns/providers", headers=foreign)) == (
        403, "tenant_access_denied")
    assert (await client.get(one)).status == 401


async def test_credentials_are_never_shown_logged_or_stored_in_plaintext(
    client: TestClient, container: Container, cloudflare: StandIn
) -> None:
    headers = admin(container, TENANT, "ptn_acme", "pki:admin", "audit:read")
    provider = await create(client, container, route53_body())
    one = f"{BASE}/{provider['id']}"
    verified = await create(client, container, cloudflare_body(cloudflare, verify=True,
                                                                managed_zones=["other.example"]))
    new_secret = "n3wS3cretAccessKey/0123456789abcdefghijk"
    answers: list[Any] = [provider, verified]
    answers.append(await (await client.get(one, headers=headers)).json())
    answers.append(await (await client.get(BASE, headers=headers)).json())
    answers.append(await (await client.patch(one, headers=headers, json={"credentials": {
        "access_key_id": ROUTE53_KEY_ID, "secret_access_key": new_secret}})).json())
    answers.append(await (await client.post(f"{BASE}/{verified['id']}/verify", headers=headers)).json())
    await caught_up(container)
    audit_answer = await client.get("/v1/audit/logs?limit=1000", headers=headers)
    assert audit_answer.status == 200
    answers.append(await audit_answer.json())
    assert b"dns_provider_create" in dumps(answers[-1])
    shown = dumps(answers)
    for value in (ROUTE53_SECRET, new_secret, CLOUDFLARE_TOKEN):
        assert value.encode() not in shown
    assert b"ciphertext" not in shown
    async with container.pool.acquire() as conn:
        states = await conn.fetch("SELECT state FROM scaivault_events")
        rows = await conn.fetch("SELECT to_jsonb(p)::text AS row FROM scaivault_dns_providers p")
        audit = await conn.fetch("SELECT to_jsonb(a)::text AS row FROM scaivault_audit_log a")
    assert any(b"credentials_ciphertext" in bytes(r["state"]) for r in states)
    for raw in [bytes(r["state"]) for r in states] + [r["row"].encode() for r in rows + audit]:
        for value in (ROUTE53_SECRET, new_secret, CLOUDFLARE_TOKEN):
            assert value.encode() not in raw


async def test_replacing_and_deleting_destroy_the_data_keys(client: TestClient, container: Container) -> None:
    headers = admin(container)
    provider = await create(client, container, route53_body())

    async def key_of() -> str | None:
        async with container.pool.acquire() as conn:
            return await conn.fetchval("SELECT credentials_key_id FROM scaivault_dns_providers WHERE provider_id = $1",
                                       provider["id"])

    async def key_exists(key_id: str) -> bool:
        async with container.pool.acquire() as conn:
            return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM scaivault_data_keys WHERE id = $1)",
                                            key_id))

    first = await key_of()
    assert first is not None and await key_exists(first)
    await client.patch(f"{BASE}/{provider['id']}", headers=headers,
                       json={"credentials": {"access_key_id": "AKIA2", "secret_access_key": "s" * 40}})
    second = await key_of()
    assert second is not None and second != first
    assert not await key_exists(first) and await key_exists(second)
    assert (await client.delete(f"{BASE}/{provider['id']}", headers=headers)).status == 204
    assert not await key_exists(second)


async def test_stored_credentials_are_never_sent_to_a_new_endpoint(
    client: TestClient, container: Container, cloudflare: StandIn
) -> None:
    """Pointing a provider at another API endpoint takes giving its credentials again: otherwise whoever may change
    the config could send the stored token to a server of their own (``verify`` or the next order would)."""
    headers = admin(container)
    created = await create(client, container, cloudflare_body(cloudflare))
    moved = {"config": {"api_base_url": "https://attacker.example/client/v4"}, "verify": True}
    response = await client.patch(f"{BASE}/{created['id']}", json=moved, headers=headers)
    error = await error_document(response)
    assert (response.status, error["code"]) == (422, "validation_error"), error
    assert error["details"]["fields"][0]["field"] == "credentials"
    unchanged = await client.get(f"{BASE}/{created['id']}", headers=headers)
    assert (await unchanged.json())["config"] == created["config"]
    with_token = {**moved, "verify": False, "credentials": {"api_token": "a-new-token-0123456789"}}
    response = await client.patch(f"{BASE}/{created['id']}", json=with_token, headers=headers)
    assert response.status == 200, await response.json()
