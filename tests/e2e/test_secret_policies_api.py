"""/v1/secret-policies over HTTP (spec reference/secret-policies): every endpoint, its errors, who may call it,
tenant isolation, previews that store nothing, and secret writes checked against their secret policy."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from projections.maintenance.rebuild import Rebuilder
from projections.secret_policies.reader import PREVIEW_CONCURRENCY
from scaivault.bootstrap import Container, read_models
from scaivault.domain import generators
from scaivault.domain.generators import violations
from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT
from tests.e2e.helpers import admin, caller_token, error_document, error_of

SPEC_FIELDS = [{"name": "password", "generator": "random", "config": {
    "length": 32, "charset": "safe", "require_upper": True, "require_lower": True, "require_digit": True,
    "require_symbol": True,
}}]
API_KEY_FIELDS = [
    {"name": "api_key", "generator": "template", "config": {"template": "sk_{{hex:8}}_{{random:24}}"}},
    {"name": "api_secret", "generator": "hex", "config": {"length": 40}},
]


async def create(client: TestClient, headers: dict[str, str], fields: list[dict[str, Any]] | None = None,
                 **body: Any) -> dict[str, Any]:
    document = {"name": "db-passwords", "policy_type": "password", "fields": fields or SPEC_FIELDS, **body}
    response = await client.post("/v1/secret-policies", json=document, headers=headers)
    created = await response.json()
    assert response.status == 201, created
    return created


async def event_count(container: Container) -> int:
    """Events other than access records: what a command would have appended."""
    return int(await container.pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic <> 'scaivault.domain.access:AccessRecorded'"
    ))


async def test_the_spec_model_example_creates_a_policy(client: TestClient, container: Container) -> None:
    response = await client.post("/v1/secret-policies", headers=admin(container), json={
        "name": "db-passwords", "policy_type": "password", "fields": SPEC_FIELDS, "description": "database users",
    })
    created = await response.json()
    assert response.status == 201
    assert created["id"].startswith("sp_") and response.headers["Location"] == f"/v1/secret-policies/{created['id']}"
    assert (created["name"], created["policy_type"], created["fields"], created["description"]) == (
        "db-passwords", "password", SPEC_FIELDS, "database users"
    )
    assert created["is_active"] is True and created["created_at"].endswith("Z") and created["updated_at"].endswith("Z")
    fetched = await client.get(f"/v1/secret-policies/{created['id']}", headers=admin(container))
    assert fetched.status == 200 and await fetched.json() == created


async def test_configs_are_shown_with_their_defaults(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container), [{"name": "token", "generator": "hex"},
                                                      {"name": "id", "generator": "uuid", "config": {}}])
    assert created["fields"] == [{"name": "token", "generator": "hex", "config": {"length": 32}},
                                 {"name": "id", "generator": "uuid", "config": {"version": 4}}]
    assert created["description"] is None


async def test_listing_pages_and_leaves_inactive_policies_out(client: TestClient, container: Container) -> None:
    ids = [(await create(client, admin(container), name=f"p{n}"))["id"] for n in range(5)]
    await client.patch(f"/v1/secret-policies/{ids[1]}", json={"is_active": False}, headers=admin(container))
    page = await (await client.get("/v1/secret-policies?limit=2", headers=admin(container))).json()
    assert [p["id"] for p in page["policies"]] == [ids[0], ids[2]] and page["has_more"] is True
    assert page["policies"][0]["fields"] == SPEC_FIELDS
    rest = await (await client.get(f"/v1/secret-policies?limit=2&cursor={page['cursor']}",
                                   headers=admin(container))).json()
    assert [p["id"] for p in rest["policies"]] == ids[3:] and rest["has_more"] is False and rest["cursor"] is None
    everything = await (await client.get("/v1/secret-policies?include_inactive=true", headers=admin(container))).json()
    assert [p["id"] for p in everything["policies"]] == ids
    for query, code in (("?limit=0", "invalid_request"), ("?limit=abc", "invalid_request"),
                        ("?include_inactive=maybe", "invalid_request"), ("?cursor=%%%", "invalid_cursor"),
                        (f"?cursor={page['cursor']}&include_inactive=true", "invalid_cursor")):
        response = await client.get(f"/v1/secret-policies{query}", headers=admin(container))
        status, error = await error_of(response)
        assert status == 400 and (code == "invalid_request" or error == code), (query, error)


async def test_patch_changes_what_it_names_and_put_replaces(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container), description="first")
    url = f"/v1/secret-policies/{created['id']}"
    patched = await (await client.patch(url, json={"name": "renamed", "description": None},
                                        headers=admin(container))).json()
    assert (patched["name"], patched["description"], patched["fields"]) == ("renamed", None, SPEC_FIELDS)
    assert patched["updated_at"] > patched["created_at"]
    await client.patch(url, json={"is_active": False}, headers=admin(container))
    response = await client.put(url, headers=admin(container), json={
        "name": "api keys", "policy_type": "api_key", "fields": API_KEY_FIELDS,
    })
    replaced = await response.json()
    assert response.status == 200
    assert (replaced["name"], replaced["policy_type"], replaced["fields"][0]["generator"]) == (
        "api keys", "api_key", "template"
    )
    assert replaced["is_active"] is False  # state, kept unless a PUT names it
    bad_patches: list[dict[str, Any]] = [
        {"name": None}, {"fields": None}, {"fields": []}, {"policy_type": "certificate"}, {"colour": "red"},
    ]
    for body in bad_patches:
        assert await error_of(await client.patch(url, json=body, headers=admin(container))) == (
            422, "validation_error"
        ), body


async def test_bad_bodies_get_the_error_envelope(client: TestClient, container: Container) -> None:
    headers = admin(container)
    before = await event_count(container)
    raw = await client.post("/v1/secret-policies", data=b"{not json", headers={
        **headers, "Content-Type": "application/json"})
    assert await error_of(raw) == (400, "invalid_request")
    assert await error_of(await client.post("/v1/secret-policies", json=[1], headers=headers)) == (
        400, "invalid_request"
    )
    for body, field in [
        ({"policy_type": "password", "fields": SPEC_FIELDS}, "name"),
        ({"name": "n", "policy_type": "password", "fields": "password"}, "fields"),
        ({"name": "n", "policy_type": "password", "fields": [{"name": "a", "generator": "dice"}]},
         "fields[0].generator"),
        ({"name": "n", "policy_type": "password", "fields": [{"name": "a", "generator": "random",
                                                              "config": {"length": 100000}}]},
         "fields[0].config.length"),
        ({"name": "n", "policy_type": "password", "fields": [{"name": "a", "generator": "template",
                                                              "config": {"template": "{{oops}}"}}]},
         "fields[0].config.template"),
        ({"name": "n", "policy_type": "vault", "fields": SPEC_FIELDS}, "policy_type"),
    ]:
        error = await error_document(await client.post("/v1/secret-policies", json=body, headers=headers))
        assert error["code"] == "validation_error", body
        assert field in [problem["field"] for problem in error["details"]["fields"]], (body, error)
    assert await event_count(container) == before


async def test_delete_is_refused_while_a_secret_uses_the_policy(client: TestClient, container: Container) -> None:
    unused = await create(client, admin(container))
    deleted = await client.delete(f"/v1/secret-policies/{unused['id']}", headers=admin(container))
    assert deleted.status == 200 and await deleted.json() == {
        "id": unused["id"], "deleted": True, "linked_secrets": 0, "rotation_policy_ids": []
    }
    assert await error_of(await client.get(f"/v1/secret-policies/{unused['id']}", headers=admin(container))) == (
        404, "secret_policy_not_found"
    )
    assert await error_of(await client.delete(f"/v1/secret-policies/{unused['id']}", headers=admin(container))) == (
        404, "secret_policy_not_found"
    )
    used = await create(client, admin(container), [{"name": "token", "generator": "hex"}])
    written = await client.put("/v1/secrets/app/token", headers=admin(container), json={
        "data": {"token": "ab" * 16}, "options": {"secret_policy_id": used["id"]}})
    assert written.status == 201, await written.text()
    refused = await error_document(await client.delete(f"/v1/secret-policies/{used['id']}", headers=admin(container)))
    assert refused["code"] == "policy_in_use" and refused["details"]["secret_count"] == 1
    forced = await client.delete(f"/v1/secret-policies/{used['id']}?force=true", headers=admin(container))
    assert forced.status == 200 and (await forced.json())["linked_secrets"] == 1
    # The dangling link checks nothing any more: there is no recipe left.
    assert (await client.put("/v1/secrets/app/token", json={"data": {"token": "short"}},
                             headers=admin(container))).status == 200


async def test_delete_is_refused_while_a_rotation_policy_generates_with_the_policy(
    client: TestClient, container: Container
) -> None:
    headers = caller_token(container, "admin", "policies:read", "policies:write", identity="user:admin@acme.example",
                           roles=("tenant_admin",))
    used = await create(client, headers, [{"name": "token", "generator": "hex"}])
    rotation_ids = []
    for name in ("quarterly", "monthly"):
        response = await client.post("/v1/rotation/policies", headers=headers, json={
            "name": name, "interval": "30d", "auto_generate": True, "secret_policy_id": used["id"]})
        assert response.status == 201, await response.text()
        rotation_ids.append((await response.json())["id"])
    elsewhere = caller_token(container, "admin", identity="user:admin@acme.example", roles=("tenant_admin",),
                             tenant=OTHER_TENANT)  # another tenant's rotation policy cannot name it at all
    assert await error_of(await client.post("/v1/rotation/policies", headers=elsewhere, json={
        "name": "other", "interval": "30d", "secret_policy_id": used["id"]})) == (404, "secret_policy_not_found")
    refused = await client.delete(f"/v1/secret-policies/{used['id']}", headers=headers)
    error = await error_document(refused)
    assert (refused.status, error["code"]) == (409, "policy_in_use")
    assert error["details"] == {
        "secret_policy_id": used["id"], "secret_count": 0, "rotation_policy_ids": sorted(rotation_ids)
    }
    assert (await client.get(f"/v1/secret-policies/{used['id']}", headers=headers)).status == 200
    forced = await client.delete(f"/v1/secret-policies/{used['id']}?force=true", headers=headers)
    assert forced.status == 200 and await forced.json() == {
        "id": used["id"], "deleted": True, "linked_secrets": 0, "rotation_policy_ids": sorted(rotation_ids)
    }
    # the rotation policies keep naming it: their auto-generated rotations fail until they name another recipe
    kept = await client.get(f"/v1/rotation/policies/{rotation_ids[0]}", headers=headers)
    assert (await kept.json())["secret_policy_id"] == used["id"]


async def test_preview_generates_a_value_and_stores_nothing(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container), API_KEY_FIELDS, policy_type="api_key")
    reader = caller_token(container, "policies:read", identity="user:dev@acme.example")
    before = await event_count(container)
    response = await client.post(f"/v1/secret-policies/{created['id']}/preview", headers=reader)
    preview = await response.json()
    assert response.status == 200 and preview["secret_policy_id"] == created["id"]
    assert set(preview["data"]) == {"api_key", "api_secret"} and preview["generated_at"].endswith("Z")
    assert violations(API_KEY_FIELDS, preview["data"]) == {}
    again = await (await client.post(f"/v1/secret-policies/{created['id']}/preview", headers=reader)).json()
    assert again["data"] != preview["data"]
    writer = caller_token(container, "policies:read", "policies:write", identity="user:dev@acme.example")
    inline = await client.post("/v1/secret-policies/preview", headers=writer, json={"fields": [
        {"name": "private_key", "generator": "ssh_keypair", "config": {"comment": "ci@acme"}}]})
    sample = await inline.json()
    assert inline.status == 200 and sample["data"]["public_key"].endswith(" ci@acme")
    assert await event_count(container) == before  # no command ran
    # The access records of the previews name the policy, never the value.
    states = [row["state"] for row in await container.pool.fetch(
        "SELECT convert_from(state, 'UTF8') AS state FROM scaivault_events ORDER BY notification_id")]
    for secret_text in (preview["data"]["api_secret"], again["data"]["api_key"], sample["data"]["public_key"][12:60]):
        assert not any(secret_text in state for state in states)
    bad = await error_document(await client.post("/v1/secret-policies/preview", headers=writer,
                                                 json={"fields": [{"name": "x", "generator": "hex",
                                                                   "config": {"length": 2}}]}))
    assert bad["code"] == "validation_error" and bad["details"]["fields"][0]["field"] == "fields[0].config.length"
    assert await error_of(await client.post("/v1/secret-policies/preview", headers=writer, json={})) == (
        422, "validation_error"
    )
    assert await error_of(await client.post("/v1/secret-policies/sp_missing/preview", headers=reader)) == (
        404, "secret_policy_not_found"
    )


async def test_previewing_a_recipe_of_ones_own_needs_policies_write(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container), API_KEY_FIELDS, policy_type="api_key")
    recipe = {"fields": [{"name": "token", "generator": "hex"}]}
    reader = caller_token(container, "policies:read", identity="user:dev@acme.example")
    assert await error_of(await client.post("/v1/secret-policies/preview", headers=reader, json=recipe)) == (
        403, "insufficient_scope")
    # A stored policy (whose cost an administrator accepted) is still previewed with policies:read.
    assert (await client.post(f"/v1/secret-policies/{created['id']}/preview", headers=reader)).status == 200
    # The scope is asked before the body is read: a reader learns nothing of what it sent.
    assert await error_of(await client.post("/v1/secret-policies/preview", headers=reader, json={})) == (
        403, "insufficient_scope")
    writer = caller_token(container, "policies:write", identity="user:dev@acme.example")
    response = await client.post("/v1/secret-policies/preview", headers=writer, json=recipe)
    assert response.status == 200 and len((await response.json())["data"]["token"]) == 32


async def test_previews_generate_off_the_event_loop_and_few_at_a_time(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Generating may take seconds of CPU: never on the event loop, and never in more than PREVIEW_CONCURRENCY of the
    threads that secret writes and auto-generated rotations share."""
    created = await create(client, admin(container), API_KEY_FIELDS, policy_type="api_key")
    real = generators.generate
    on_the_loop: list[bool] = []
    running = [0, 0]  # now, most at once
    guard = threading.Lock()

    def slow(*args: Any, **kwargs: Any) -> dict[str, Any]:
        on_the_loop.append(threading.current_thread() is threading.main_thread())
        with guard:
            running[0] += 1
            running[1] = max(running)
        time.sleep(0.1)
        with guard:
            running[0] -= 1
        return real(*args, **kwargs)

    monkeypatch.setattr(generators, "generate", slow)
    writer = caller_token(container, "policies:read", "policies:write", identity="user:dev@acme.example")
    requests = [client.post(f"/v1/secret-policies/{created['id']}/preview", headers=writer) for _ in range(3)]
    requests += [client.post("/v1/secret-policies/preview", headers=writer, json={"fields": API_KEY_FIELDS})
                 for _ in range(3)]
    responses = await asyncio.gather(*requests)
    assert [response.status for response in responses] == [200] * 6
    assert on_the_loop == [False] * 6
    assert running[1] == PREVIEW_CONCURRENCY == 2


async def test_who_may_read_and_change_secret_policies(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container))
    url = f"/v1/secret-policies/{created['id']}"
    writer_without_role = caller_token(container, "policies:read", "policies:write", identity="user:dev@acme.example")
    assert (await client.get(url, headers=writer_without_role)).status == 200
    assert await error_of(await client.patch(url, json={"name": "x"}, headers=writer_without_role)) == (
        403, "access_denied"
    )
    assert await error_of(await client.post("/v1/secret-policies", headers=writer_without_role, json={
        "name": "n", "policy_type": "custom", "fields": SPEC_FIELDS})) == (403, "access_denied")
    secrets_only = caller_token(container, "secrets:read", "secrets:write", roles=("tenant_admin",))
    assert await error_of(await client.get(url, headers=secrets_only)) == (403, "insufficient_scope")
    assert await error_of(await client.post(f"{url}/preview", headers=secrets_only)) == (403, "insufficient_scope")
    read_only_admin = caller_token(container, "policies:read", roles=("tenant_admin",))
    assert await error_of(await client.delete(url, headers=read_only_admin)) == (403, "insufficient_scope")
    assert await error_of(await client.get("/v1/secret-policies")) == (401, "authentication_required")


async def test_tenants_see_only_their_own_secret_policies(client: TestClient, container: Container) -> None:
    created = await create(client, admin(container))
    url = f"/v1/secret-policies/{created['id']}"
    neighbour = admin(container, tenant=OTHER_TENANT)
    foreign = admin(container, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER)
    for headers in (neighbour, foreign):
        assert await error_of(await client.get(url, headers=headers)) == (404, "secret_policy_not_found")
        assert await error_of(await client.patch(url, json={"name": "x"}, headers=headers)) == (
            404, "secret_policy_not_found"
        )
        assert await error_of(await client.post(f"{url}/preview", headers=headers)) == (404, "secret_policy_not_found")
        listed = await (await client.get("/v1/secret-policies", headers=headers)).json()
        assert listed["policies"] == []
        linked = await client.put("/v1/secrets/app/db", headers=headers, json={
            "data": {"password": "x"}, "options": {"secret_policy_id": created["id"]}})
        assert await error_of(linked) == (404, "secret_policy_not_found")
    # A partner admin manages a tenant's secret policies under /v1/t/{tenant}/.
    partner_admin = admin(container, roles=("partner_admin",))
    there = await client.post(f"/v1/t/{OTHER_TENANT}/secret-policies", headers=partner_admin, json={
        "name": "dev", "policy_type": "custom", "fields": API_KEY_FIELDS})
    assert there.status == 201
    dev_list = await (await client.get("/v1/secret-policies", headers=neighbour)).json()
    assert [p["id"] for p in dev_list["policies"]] == [(await there.json())["id"]]


async def test_a_write_breaking_the_recipe_is_refused_and_stores_nothing(
    client: TestClient, container: Container
) -> None:
    created = await create(client, admin(container))
    headers = admin(container)
    weak = {"data": {"password": "short"}, "options": {"secret_policy_id": created["id"]}}
    before = await event_count(container)
    error = await error_document(await client.put("/v1/secrets/db/app", json=weak, headers=headers))
    assert error["code"] == "validation_error"
    assert error["details"]["fields"] == [{"field": "data.password", "message": "length >= 32"}]
    assert error["details"]["violations"] == {"password": "length >= 32"}
    assert error["details"]["secret_policy_id"] == created["id"]
    assert await event_count(container) == before
    assert await error_of(await client.get("/v1/secrets/db/app", headers=headers)) == (404, "secret_not_found")
    no_symbol = {"data": {"password": "Aa1" + "b" * 29}, "options": {"secret_policy_id": created["id"]}}
    assert (await error_document(await client.put("/v1/secrets/db/app", json=no_symbol, headers=headers)))[
        "details"]["violations"] == {"password": "requires a symbol"}
    missing = await error_document(await client.put("/v1/secrets/db/app", headers=headers, json={
        "data": {"pw": "x"}, "options": {"secret_policy_id": created["id"]}}))
    assert missing["details"]["violations"] == {"password": "missing"}
    good = (await (await client.post(f"/v1/secret-policies/{created['id']}/preview", headers=headers)).json())["data"]
    written = await client.put("/v1/secrets/db/app", json={**weak, "data": good}, headers=headers)
    assert written.status == 201, await written.text()
    metadata = await (await client.get("/v1/secrets/db/app/metadata", headers=headers)).json()
    assert metadata["secret_policy_id"] == created["id"]
    # Later writes are checked too, without naming the policy again.
    assert await error_of(await client.put("/v1/secrets/db/app", json={"data": {"password": "short"}},
                                           headers=headers)) == (422, "validation_error")
    read = await (await client.get("/v1/secrets/db/app", headers=headers)).json()
    assert read["data"] == good and read["version"] == 1
    # An inactive policy checks nothing (and cannot be linked to).
    await client.patch(f"/v1/secret-policies/{created['id']}", json={"is_active": False}, headers=headers)
    assert (await client.put("/v1/secrets/db/app", json={"data": {"password": "short"}},
                             headers=headers)).status == 200
    assert await error_of(await client.put("/v1/secrets/db/other", json=weak, headers=headers)) == (
        404, "secret_policy_not_found"
    )


async def test_linking_through_metadata_needs_an_existing_policy(client: TestClient, container: Container) -> None:
    headers = admin(container)
    assert (await client.put("/v1/secrets/svc/key", json={"data": {"api_key": "x"}}, headers=headers)).status == 201
    url = "/v1/secrets/svc/key/metadata"
    assert await error_of(await client.patch(url, json={"secret_policy_id": "sp_nothing"}, headers=headers)) == (
        404, "secret_policy_not_found"
    )
    assert await error_of(await client.put("/v1/secrets/svc/new", headers=headers, json={
        "data": {"a": "b"}, "options": {"secret_policy_id": "pol_wrong_prefix"}})) == (422, "validation_error")
    created = await create(client, headers, API_KEY_FIELDS, policy_type="api_key")
    assert await error_of(await client.patch(url, json={"secret_policy_id": "pol_wrong_prefix"}, headers=headers)) == (
        422, "validation_error"
    )
    linked = await client.patch(url, json={"secret_policy_id": created["id"]}, headers=headers)
    assert linked.status == 200 and (await linked.json())["secret_policy_id"] == created["id"]
    assert await error_of(await client.put("/v1/secrets/svc/key", json={"data": {"api_key": "x"}},
                                           headers=headers)) == (422, "validation_error")


async def test_an_explicit_null_unlinks_and_a_missing_field_keeps(client: TestClient, container: Container) -> None:
    headers = admin(container)
    created = await create(client, headers, API_KEY_FIELDS, policy_type="api_key")
    good = (await (await client.post(f"/v1/secret-policies/{created['id']}/preview", headers=headers)).json())["data"]
    written = await client.put("/v1/secrets/svc/key", headers=headers, json={
        "data": good, "options": {"secret_policy_id": created["id"]}})
    assert written.status == 201, await written.text()
    url = "/v1/secrets/svc/key/metadata"
    kept = await client.patch(url, json={"metadata": {"team": "x"}}, headers=headers)
    assert kept.status == 200 and (await kept.json())["secret_policy_id"] == created["id"]
    unlinked = await client.patch(url, json={"secret_policy_id": None}, headers=headers)
    assert unlinked.status == 200 and (await unlinked.json())["secret_policy_id"] is None
    assert (await (await client.get(url, headers=headers)).json())["secret_policy_id"] is None
    # no recipe checks the next write any more, and nothing is linked to the policy: it deletes without force
    assert (await client.put("/v1/secrets/svc/key", json={"data": {"api_key": "x"}}, headers=headers)).status == 200
    deleted = await client.delete(f"/v1/secret-policies/{created['id']}", headers=headers)
    assert deleted.status == 200 and (await deleted.json())["linked_secrets"] == 0


async def test_secret_policy_requests_are_audited_with_their_actions(
    client: TestClient, container: Container
) -> None:
    created = await create(client, admin(container))
    url = f"/v1/secret-policies/{created['id']}"
    await client.get(url, headers=admin(container))
    await client.patch(url, json={"name": "n"}, headers=admin(container))
    await client.post(f"{url}/preview", headers=admin(container))
    await client.delete(url, headers=admin(container))
    actions = [row["action"] for row in await container.pool.fetch(
        """SELECT convert_from(state, 'UTF8')::jsonb ->> 'action' AS action FROM scaivault_events
           WHERE topic = 'scaivault.domain.access:AccessRecorded' ORDER BY notification_id""")]
    assert actions == ["secret_policy_create", "secret_policy_read", "secret_policy_update", "secret_policy_preview",
                       "secret_policy_delete"]


async def test_a_secret_policy_id_with_a_nul_is_not_found(client: TestClient, container: Container) -> None:
    for method, url in (("GET", "/v1/secret-policies/sp_%00"), ("DELETE", "/v1/secret-policies/sp_%00"),
                        ("PATCH", "/v1/secret-policies/sp_%00"), ("POST", "/v1/secret-policies/sp_%00/preview")):
        response = await client.request(method, url, json={"name": "n"} if method == "PATCH" else None,
                                        headers=admin(container))
        assert await error_of(response) == (404, "secret_policy_not_found"), (method, url)


async def test_the_read_model_rebuilds_identical_from_the_events(client: TestClient, container: Container) -> None:
    kept = await create(client, admin(container), API_KEY_FIELDS, policy_type="api_key", description="d")
    await client.patch(f"/v1/secret-policies/{kept['id']}", json={"is_active": False}, headers=admin(container))
    gone = await create(client, admin(container))
    await client.delete(f"/v1/secret-policies/{gone['id']}", headers=admin(container))
    model = next(model for model in read_models(container.keyring) if model.name == "secret_policies")
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    assert (await rebuilder.verify(model))["identical"]
    await container.pool.execute("UPDATE scaivault_secret_policies SET name = 'drifted'")
    assert not (await rebuilder.verify(model))["identical"]
