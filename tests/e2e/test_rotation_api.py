"""/v1/rotation over HTTP (spec reference/rotation, api-guides/rotation, core-concepts/rotation): every endpoint,
its bad-input envelopes and scopes, rotating now, the grace period of the superseded version, history, due/pending,
and the in-server scheduler rotating a due secret by itself."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient

from projections.rotation import reader as rotation_reader
from scaivault.bootstrap import Container
from scaivault.config import Settings
from scaivault.domain import generators
from tests.e2e.conftest import ALL_SECRET_SCOPES, GENEROUS_RATE_LIMITS, OTHER_TENANT
from tests.e2e.helpers import caller_token, error_document, error_of, grant
from tests.helpers import eventually

ROTATION_SCOPES = ("admin", "secrets:rotate", "audit:read")
QUARTERLY = {"name": "quarterly", "description": "Every 90 days", "interval": "90d", "grace_period": "48h",
             "warn_before": "7d,1d", "auto_generate": False, "webhook_ids": ["wh_rotation_alerts"]}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """A scheduler that scans every second, so a due rotation happens while a test waits."""
    return Settings(database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
                    rate_limits=GENEROUS_RATE_LIMITS, scheduler_interval="1s")


def operator(container: Container, tenant: str | None = None, *scopes: str) -> dict[str, str]:
    """A tenant admin holding the rotation scopes (or only ``scopes``)."""
    granted = scopes or (*ROTATION_SCOPES, *ALL_SECRET_SCOPES)
    if tenant is None:
        return caller_token(container, *granted, identity="user:ops@acme.example", roles=("tenant_admin",))
    return caller_token(container, *granted, identity="user:ops@acme.example", roles=("tenant_admin",),
                        tenant=tenant)


async def create(client: TestClient, container: Container, **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/rotation/policies", json=fields, headers=operator(container))
    body = await response.json()
    assert response.status == 201, body
    return body


async def put(client: TestClient, container: Container, path: str, data: dict[str, Any], **options: Any) -> Any:
    body: dict[str, Any] = {"data": data}
    if options:
        body["options"] = options
    return await client.put(f"/v1/secrets/{path}", json=body, headers=operator(container))


async def read(client: TestClient, container: Container, path: str, query: str = "") -> Any:
    return await client.get(f"/v1/secrets/{path}{query}", headers=operator(container))


async def test_the_guide_example_creates_rot_quarterly(client: TestClient, container: Container) -> None:
    response = await client.post("/v1/rotation/policies", json=QUARTERLY, headers=operator(container))
    created = await response.json()
    assert response.status == 201 and response.headers["Location"] == "/v1/rotation/policies/rot_quarterly"
    assert {key: created[key] for key in ("id", "name", "interval", "interval_seconds", "grace_period",
                                          "warn_before", "auto_generate", "is_active", "secrets_count")} == {
        "id": "rot_quarterly", "name": "quarterly", "interval": "90d", "interval_seconds": 7776000,
        "grace_period": "48h", "warn_before": "7d,1d", "auto_generate": False, "is_active": True, "secrets_count": 0,
    }
    assert created["webhook_ids"] == ["wh_rotation_alerts"] and created["created_at"].endswith("Z")
    fetched = await client.get("/v1/rotation/policies/rot_quarterly", headers=operator(container))
    assert await fetched.json() == created
    # A name that is no valid id gets a generated one; the list form of warn_before is accepted.
    other = await create(client, container, name="Weekly DB", interval="7d", warn_before=["1d", "2d"])
    assert other["id"].startswith("rot_") and other["id"] != "rot_Weekly DB" and other["warn_before"] == "2d,1d"
    # Defaults: grace 48h, no warnings.
    assert (await create(client, container, name="hourly", interval="1h"))["grace_period"] == "48h"


async def test_bad_policies_get_the_spec_envelopes(client: TestClient, container: Container) -> None:
    await create(client, container, **QUARTERLY)
    cases: list[tuple[dict[str, Any], int, str]] = [
        (QUARTERLY, 409, "rotation_policy_exists"),
        ({"name": "x", "interval": "ninety days"}, 400, "invalid_duration"),
        ({"name": "x", "interval": "90d", "grace_period": "0h"}, 400, "invalid_duration"),
        ({"name": "x", "interval": "90d", "warn_before": "7d,soon"}, 400, "invalid_duration"),
        ({"name": "x", "interval": "7d", "warn_before": "7d"}, 400, "invalid_request"),
        ({"name": "x", "interval": "7d", "secret_policy_id": "pol_1"}, 400, "invalid_request"),
        ({"name": "x", "interval": "7d", "webhook_ids": ["hook"]}, 400, "invalid_request"),
        ({"interval": "7d"}, 422, "validation_error"),
        ({"name": "x", "interval": "7d", "auto_generate": "yes"}, 422, "validation_error"),
        ({"name": "x", "interval": "7d", "colour": "red"}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await client.post("/v1/rotation/policies", json=body, headers=operator(container))
        assert await error_of(response) == (status, code), body
    for bad in ("not json", "[]"):
        response = await client.post("/v1/rotation/policies", data=bad, headers=operator(container))
        assert response.status in (400, 422)
        assert "code" in await error_document(response)


async def test_scopes_and_tenants(client: TestClient, container: Container) -> None:
    await create(client, container, **QUARTERLY)
    no_admin = operator(container, None, "secrets:rotate", "audit:read")
    assert await error_of(await client.get("/v1/rotation/policies", headers=no_admin)) == (
        403, "insufficient_scope")
    assert await error_of(await client.post("/v1/rotation/policies/rot_quarterly/rotate",
                                            headers=operator(container, None, "admin"))) == (403, "insufficient_scope")
    assert await error_of(await client.get("/v1/rotation/policies/rot_quarterly/history",
                                           headers=operator(container, None, "admin"))) == (403, "insufficient_scope")
    assert await error_of(await client.get("/v1/rotation/due", headers=operator(container, None, "secrets:read"))) == (
        403, "insufficient_scope")
    assert (await client.get("/v1/rotation/due", headers=operator(container, None, "admin"))).status == 200
    # The scope is not enough to rotate: the caller's policies must grant rotate on each secret.
    await put(client, container, "scoped/s", {"v": "1"}, rotation_policy_id="rot_quarterly")
    no_role = caller_token(container, "secrets:rotate", identity="sa:rotator")
    assert await error_of(await client.post("/v1/rotation/policies/rot_quarterly/rotate", headers=no_role)) == (
        403, "access_denied")
    assert await error_of(await client.get("/v1/rotation/policies/rot_nope/history", headers=operator(container))) == (
        404, "rotation_policy_not_found")
    other_tenant = operator(container, OTHER_TENANT)
    assert await error_of(await client.get("/v1/rotation/policies/rot_quarterly", headers=other_tenant)) == (
        404, "rotation_policy_not_found")
    assert (await (await client.get("/v1/rotation/policies", headers=other_tenant)).json())["data"] == []


async def test_list_get_patch_enable_disable(client: TestClient, container: Container) -> None:
    ids = [(await create(client, container, name=f"p{n}", interval="30d"))["id"] for n in range(3)]
    assert ids == ["rot_p0", "rot_p1", "rot_p2"]
    page = await (await client.get("/v1/rotation/policies?limit=2", headers=operator(container))).json()
    assert [p["id"] for p in page["data"]] == ids[:2] and page["has_more"] is True
    rest = await (await client.get(f"/v1/rotation/policies?limit=2&cursor={page['cursor']}",
                                   headers=operator(container))).json()
    assert [p["id"] for p in rest["data"]] == ids[2:] and rest["has_more"] is False and rest["cursor"] is None
    disabled = await (await client.post("/v1/rotation/policies/rot_p1/disable", headers=operator(container))).json()
    assert disabled["is_active"] is False
    active = await (await client.get("/v1/rotation/policies?active_only=true", headers=operator(container))).json()
    assert [p["id"] for p in active["data"]] == ["rot_p0", "rot_p2"]
    enabled = await (await client.post("/v1/rotation/policies/rot_p1/enable", headers=operator(container))).json()
    assert enabled["is_active"] is True
    patched = await client.patch("/v1/rotation/policies/rot_p0", json={"interval": "14d", "warn_before": "1d"},
                                 headers=operator(container))
    body = await patched.json()
    assert patched.status == 200 and (body["interval"], body["interval_seconds"], body["warn_before"]) == (
        "14d", 14 * 86400, "1d")
    assert body["name"] == "p0"
    for query in ("?limit=0", "?active_only=maybe", "?cursor=%%%", f"?cursor={page['cursor']}&active_only=true"):
        response = await client.get(f"/v1/rotation/policies{query}", headers=operator(container))
        assert response.status == 400 or response.status == 422, query
    assert await error_of(await client.patch("/v1/rotation/policies/rot_p0", json={"interval": None},
                                             headers=operator(container))) == (422, "validation_error")
    assert await error_of(await client.patch("/v1/rotation/policies/rot_p0", json={"name": "p1"},
                                             headers=operator(container))) == (409, "rotation_policy_exists")
    assert await error_of(await client.patch("/v1/rotation/policies/rot_nope", json={"name": "z"},
                                             headers=operator(container))) == (404, "rotation_policy_not_found")


async def test_secrets_attach_by_put_or_assignment_and_detach(client: TestClient, container: Container) -> None:
    await create(client, container, **QUARTERLY)
    missing = await put(client, container, "app/db", {"password": "a"}, rotation_policy_id="rot_missing")
    assert await error_of(missing) == (404, "rotation_policy_not_found")
    assert (await put(client, container, "app/db", {"password": "a"}, rotation_policy_id="rot_quarterly")).status == 201
    assert (await put(client, container, "app/api", {"token": "t"})).status == 201
    response = await client.post("/v1/rotation/policies/rot_quarterly/secrets", json={"secret_path": "app/api"},
                                 headers=operator(container))
    assignment = await response.json()
    assert response.status == 201
    assert assignment["rotation_policy_id"] == "rot_quarterly" and assignment["secret_path"] == "app/api"
    assert assignment["next_rotation_at"] > assignment["attached_at"]
    policy = await (await client.get("/v1/rotation/policies/rot_quarterly", headers=operator(container))).json()
    assert policy["secrets_count"] == 2
    meta = await (await client.get("/v1/secrets/app/api/metadata", headers=operator(container))).json()
    assert meta["rotation_policy_id"] == "rot_quarterly"
    assert await error_of(await client.post("/v1/rotation/policies/rot_quarterly/secrets",
                                            json={"secret_path": "app/none"}, headers=operator(container))) == (
        404, "secret_not_found")
    assert await error_of(await client.post("/v1/rotation/policies/rot_quarterly/secrets",
                                            json={"secret_path": "Bad Path"}, headers=operator(container))) == (
        400, "invalid_path")
    detached = await client.delete(f"/v1/rotation/policies/rot_quarterly/secrets/{quote('app/api', safe='')}",
                                   headers=operator(container))
    assert detached.status == 200 and (await detached.json())["detached"] is True
    again = await client.delete("/v1/rotation/policies/rot_quarterly/secrets/app%2Fapi", headers=operator(container))
    assert await error_of(again) == (404, "secret_not_found")
    meta = await (await client.get("/v1/secrets/app/api/metadata", headers=operator(container))).json()
    assert meta["rotation_policy_id"] is None


async def test_an_explicit_null_in_a_metadata_patch_detaches(client: TestClient, container: Container) -> None:
    await create(client, container, **QUARTERLY)
    assert (await put(client, container, "app/db", {"password": "a"}, rotation_policy_id="rot_quarterly")).status == 201
    url = "/v1/secrets/app/db/metadata"
    kept = await client.patch(url, json={"metadata": {"team": "x"}}, headers=operator(container))
    assert kept.status == 200 and (await kept.json())["rotation_policy_id"] == "rot_quarterly"
    detached = await client.patch(url, json={"rotation_policy_id": None}, headers=operator(container))
    assert detached.status == 200 and (await detached.json())["rotation_policy_id"] is None
    assert (await (await client.get(url, headers=operator(container))).json())["rotation_policy_id"] is None
    policy = await (await client.get("/v1/rotation/policies/rot_quarterly", headers=operator(container))).json()
    assert policy["secrets_count"] == 0


async def test_deleting_a_policy_detaches_its_secrets(client: TestClient, container: Container) -> None:
    await create(client, container, **QUARTERLY)
    for path in ("a/one", "a/two", "a/gone"):
        await put(client, container, path, {"v": path}, rotation_policy_id="rot_quarterly")
    assert (await client.delete("/v1/secrets/a/gone", headers=operator(container))).status == 200  # soft delete
    response = await client.delete("/v1/rotation/policies/rot_quarterly", headers=operator(container))
    assert response.status == 200
    assert sorted((await response.json())["detached_secrets"]) == ["a/gone", "a/one", "a/two"]
    assert (await client.post("/v1/secrets/a/gone/restore", headers=operator(container))).status == 200
    for path in ("a/one", "a/two", "a/gone"):
        meta = await (await client.get(f"/v1/secrets/{path}/metadata", headers=operator(container))).json()
        assert meta["rotation_policy_id"] is None
    assert await error_of(await client.get("/v1/rotation/policies/rot_quarterly", headers=operator(container))) == (
        404, "rotation_policy_not_found")
    assert await error_of(await client.delete("/v1/rotation/policies/rot_quarterly",
                                              headers=operator(container))) == (404, "rotation_policy_not_found")


async def test_rotate_now_generates_a_value_and_the_old_version_reads_until_grace_ends(
    client: TestClient, container: Container
) -> None:
    await create(client, container, name="db", interval="30d", grace_period="2s", auto_generate=True)
    await put(client, container, "svc/db", {"username": "app", "password": "old", "port": 5432},
              rotation_policy_id="rot_db")
    response = await client.post("/v1/rotation/policies/rot_db/rotate", headers=operator(container))
    items = await response.json()
    assert response.status == 200 and len(items) == 1
    item = items[0]
    assert (item["status"], item["secret_path"], item["old_version"], item["new_version"], item["auto_generated"]) == (
        "success", "svc/db", 1, 2, True)
    assert item["triggered_by"] == "user:ops@acme.example" and item["grace_period_ends"].endswith("Z")
    current = await (await read(client, container, "svc/db")).json()
    assert current["version"] == 2 and current["data"]["port"] == 5432
    assert set(current["data"]) == {"username", "password", "port"}
    assert current["data"]["password"] != "old" and len(current["data"]["password"]) >= 32
    assert (await read(client, container, "svc/db", "?version=1")).status == 200  # within the grace period
    versions = await (await client.get("/v1/secrets/svc/db/versions", headers=operator(container))).json()
    assert [(v["version"], v["readable_until"] is not None) for v in versions["versions"]] == [(2, False), (1, True)]
    await asyncio.sleep(2.2)
    refused = await read(client, container, "svc/db", "?version=1")
    error = await error_document(refused)
    assert refused.status == 404 and error["code"] == "version_not_found"
    assert error["details"]["grace_period_ended"] is True
    assert (await read(client, container, "svc/db")).status == 200
    history = await (await client.get("/v1/rotation/policies/rot_db/history", headers=operator(container))).json()
    assert [entry["id"] for entry in history["data"]] == [item["id"]] and history["data"][0]["status"] == "success"


async def test_rotate_now_without_auto_generate_waits_for_the_owners_write(
    client: TestClient, container: Container
) -> None:
    await create(client, container, **QUARTERLY)
    await put(client, container, "oauth/client", {"client_secret": "s1"}, rotation_policy_id="rot_quarterly")
    await put(client, container, "oauth/other", {"client_secret": "x"}, rotation_policy_id="rot_quarterly")
    response = await client.post("/v1/rotation/policies/rot_quarterly/rotate",
                                 json={"secret_paths": ["oauth/client"]}, headers=operator(container))
    items = await response.json()
    assert response.status == 200 and [(i["secret_path"], i["status"]) for i in items] == [("oauth/client", "pending")]
    pending = await (await client.get("/v1/rotation/policies/rot_quarterly/history?status=pending",
                                      headers=operator(container))).json()
    assert [entry["secret_path"] for entry in pending["data"]] == ["oauth/client"]
    assert (await put(client, container, "oauth/client", {"client_secret": "s2"})).status == 200  # the rotation
    done = await (await client.get("/v1/rotation/policies/rot_quarterly/history?status=success",
                                   headers=operator(container))).json()
    assert [(e["secret_path"], e["old_version"], e["new_version"], e["auto_generated"]) for e in done["data"]] == [
        ("oauth/client", 1, 2, False)]
    stray = await client.post("/v1/rotation/policies/rot_quarterly/rotate", json={"secret_paths": ["oauth/none"]},
                              headers=operator(container))
    assert await error_of(stray) == (400, "invalid_request")
    bad = await client.post("/v1/rotation/policies/rot_quarterly/rotate", json={"secret_paths": "oauth/client"},
                            headers=operator(container))
    assert await error_of(bad) == (422, "validation_error")
    assert await error_of(await client.post("/v1/rotation/policies/rot_none/rotate",
                                            headers=operator(container))) == (404, "rotation_policy_not_found")
    assert await error_of(await client.get("/v1/rotation/policies/rot_quarterly/history?status=done",
                                           headers=operator(container))) in ((400, "invalid_request"),
                                                                             (422, "validation_error"))


async def test_due_and_the_deprecated_pending_alias(client: TestClient, container: Container) -> None:
    await create(client, container, name="hourly", interval="1h", warn_before="30m")
    await create(client, container, name="monthly", interval="30d")
    await put(client, container, "due/soon", {"v": "1"}, rotation_policy_id="rot_hourly")
    await put(client, container, "due/later", {"v": "1"}, rotation_policy_id="rot_monthly")
    due = await (await client.get("/v1/rotation/due", headers=operator(container))).json()
    assert [(d["secret_path"], d["rotation_policy_id"], d["status"]) for d in due["data"]] == [
        ("due/soon", "rot_hourly", "scheduled")]
    wide = await (await client.get("/v1/rotation/due?within_hours=800", headers=operator(container))).json()
    assert [d["secret_path"] for d in wide["data"]] == ["due/soon", "due/later"]
    only = await (await client.get("/v1/rotation/due?within_hours=800&policy_id=rot_monthly",
                                   headers=operator(container))).json()
    assert [d["secret_path"] for d in only["data"]] == ["due/later"]
    none = await (await client.get("/v1/rotation/due?within_hours=0", headers=operator(container))).json()
    assert none["data"] == []
    pending = await client.get("/v1/rotation/pending", headers=operator(container))
    assert pending.status == 200 and pending.headers["Deprecation"] == "true"
    assert (await pending.json())["data"] == due["data"]
    for query in ("?within_hours=abc", "?within_hours=-1", "?include_overdue=perhaps"):
        response = await client.get(f"/v1/rotation/due{query}", headers=operator(container))
        assert response.status in (400, 422), query


async def test_due_lists_only_what_a_caller_without_admin_may_list(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    await create(client, container, name="hourly", interval="1h")
    paths = ["app/1/other", "app/2/other", "app/3/key", "app/4/other", "app/5/key", "app/6/key", "ops/root"]
    for path in paths:  # due in this order: each an hour after its write
        response = await put(client, container, path, {"v": "1"}, rotation_policy_id="rot_hourly")
        assert response.status == 201, await response.text()
    await grant(client, container, [{"path_pattern": "app/*/key", "permissions": ["list"]}], identity_id="sa:rotator")
    governed = caller_token(container, "secrets:rotate", identity="sa:rotator")

    async def due_paths(headers: dict[str, str], route: str = "/v1/rotation/due") -> list[str]:
        response = await client.get(route, headers=headers)
        body = await response.json()
        assert response.status == 200, body
        return [item["secret_path"] for item in body["data"]]

    assert await due_paths(governed) == ["app/3/key", "app/5/key", "app/6/key"]
    assert await due_paths(governed, "/v1/rotation/pending") == ["app/3/key", "app/5/key", "app/6/key"]
    # The admin scope, or an admin role, sees every due secret.
    assert await due_paths(caller_token(container, "admin", identity="sa:ops")) == paths
    assert await due_paths(operator(container, None, "secrets:rotate")) == paths
    # Whoever may list nothing is told so, as a listing tells it.
    nothing = caller_token(container, "secrets:rotate", identity="sa:nobody")
    assert await error_of(await client.get("/v1/rotation/due", headers=nothing)) == (403, "access_denied")
    # However few it may see among the due secrets, the list keeps going until it has its fill.
    monkeypatch.setattr(rotation_reader, "MAX_DUE", 2)
    assert await due_paths(governed) == ["app/3/key", "app/5/key"]


async def test_the_scheduler_rotates_a_due_secret_by_itself(client: TestClient, container: Container) -> None:
    await create(client, container, name="fast", interval="2s", grace_period="1h", auto_generate=True)
    await put(client, container, "fast/token", {"token": "first"}, rotation_policy_id="rot_fast")

    async def rotated() -> bool:
        body = await (await read(client, container, "fast/token")).json()
        return bool(body["version"] >= 2)

    await eventually(rotated, timeout=15, message="the scheduler did not rotate the secret")
    history = await (await client.get("/v1/rotation/policies/rot_fast/history", headers=operator(container))).json()
    first = history["data"][-1]
    assert (first["status"], first["auto_generated"], first["triggered_by"]) == (
        "success", True, "system:rotation-scheduler")


async def test_auto_rotation_uses_the_secret_policy_recipe_and_reports_a_missing_one(
    client: TestClient, container: Container
) -> None:
    headers = caller_token(container, *ROTATION_SCOPES, *ALL_SECRET_SCOPES, "policies:read", "policies:write",
                           identity="user:ops@acme.example", roles=("tenant_admin",))
    recipe = [{"name": "api_key", "generator": "template", "config": {"template": "sk_{{hex:8}}_{{random:24}}"}}]
    response = await client.post("/v1/secret-policies", json={"name": "api-keys", "policy_type": "api_key",
                                                              "fields": recipe}, headers=headers)
    secret_policy = await response.json()
    assert response.status == 201, secret_policy
    await create(client, container, name="keys", interval="30d", auto_generate=True,
                 secret_policy_id=secret_policy["id"])
    unknown = await client.post("/v1/rotation/policies", json={"name": "nowhere", "interval": "30d",
                                                               "secret_policy_id": "sp_gone"}, headers=headers)
    assert await error_of(unknown) == (404, "secret_policy_not_found")
    response = await client.post("/v1/secret-policies", json={"name": "doomed", "policy_type": "api_key",
                                                              "fields": recipe}, headers=headers)
    doomed = await response.json()
    await create(client, container, name="broken", interval="30d", auto_generate=True, secret_policy_id=doomed["id"])
    gone = await client.delete(f"/v1/secret-policies/{doomed['id']}?force=true", headers=headers)
    assert gone.status == 200, await gone.text()
    await put(client, container, "keys/a", {"api_key": "sk_0123abcd_" + "x" * 24}, rotation_policy_id="rot_keys")
    await put(client, container, "keys/b", {"api_key": "old"}, rotation_policy_id="rot_broken")
    (done,) = await (await client.post("/v1/rotation/policies/rot_keys/rotate", headers=operator(container))).json()
    assert done["status"] == "success"
    value = (await (await read(client, container, "keys/a")).json())["data"]
    assert set(value) == {"api_key"} and value["api_key"].startswith("sk_") and len(value["api_key"]) == 36
    (failed,) = await (await client.post("/v1/rotation/policies/rot_broken/rotate", headers=operator(container))).json()
    assert (failed["status"], failed["error"]["code"], failed["new_version"]) == (
        "failed", "secret_policy_not_found", None)
    assert (await (await read(client, container, "keys/b")).json())["data"] == {"api_key": "old"}
    history = await (await client.get("/v1/rotation/policies/rot_broken/history?status=failed",
                                      headers=operator(container))).json()
    assert [entry["id"] for entry in history["data"]] == [failed["id"]]
    patch = await client.patch("/v1/secrets/keys/b/metadata", json={"rotation_policy_id": "rot_nowhere"},
                               headers=operator(container))
    assert await error_of(patch) == (404, "rotation_policy_not_found")


async def test_auto_generation_runs_off_the_event_loop(
    client: TestClient, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key pairs and bcrypt hashes take seconds of CPU: a rotation generating them must not stop every request."""
    on_the_loop: list[bool] = []
    real = generators.generate

    def spy(*args: Any, **kwargs: Any) -> dict[str, Any]:
        on_the_loop.append(threading.current_thread() is threading.main_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(generators, "generate", spy)
    headers = caller_token(container, *ROTATION_SCOPES, *ALL_SECRET_SCOPES, "policies:read", "policies:write",
                           identity="user:ops@acme.example", roles=("tenant_admin",))
    recipe = [{"name": "private_key", "generator": "ec_keypair"}]
    response = await client.post("/v1/secret-policies", json={"name": "keys", "policy_type": "ssh_key",
                                                              "fields": recipe}, headers=headers)
    secret_policy = await response.json()
    assert response.status == 201, secret_policy
    await create(client, container, name="ec", interval="30d", auto_generate=True, secret_policy_id=secret_policy["id"])
    await put(client, container, "keys/ec", {"private_key": "x", "public_key": "y"}, rotation_policy_id="rot_ec")
    (done,) = await (await client.post("/v1/rotation/policies/rot_ec/rotate", headers=operator(container))).json()
    assert done["status"] == "success"
    assert on_the_loop == [False]
