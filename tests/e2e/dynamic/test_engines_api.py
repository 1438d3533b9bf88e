"""/v1/dynamic/engines and their roles over HTTP: every endpoint, who may use each, tenant isolation, the types not
served, a wrong URL or credentials refused with nothing stored, and bad input answered with the error envelope."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.conftest import OTHER_TENANT
from tests.e2e.dynamic.helpers import (
    BOOTSTRAP_PASSWORD,
    READONLY_ROLE,
    admin_headers,
    connection_url,
    set_up_engine,
)
from tests.e2e.helpers import caller_token, error_document, error_of
from tests.tcp_proxy import free_port

ENGINES = "/v1/dynamic/engines"


async def engine_count(client: TestClient, headers: dict[str, str]) -> int:
    return len((await (await client.get(ENGINES, headers=headers)).json())["engines"])


async def test_create_get_list_patch_delete(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    headers = admin_headers(container)
    created = await set_up_engine(client, container, reporting)
    assert created["id"].startswith("dyn_") and created["identity"] == "dynamic:reporting-db"
    assert created["config"] == {"plugin": "postgresql", "connection_url": connection_url(reporting),
                                 "root_credentials_path": "infra/reporting-db/root",
                                 "max_open_connections": 4}
    one = await (await client.get(f"{ENGINES}/reporting-db", headers=headers)).json()
    assert one["roles"] == ["readonly"]
    listed = await (await client.get(f"{ENGINES}?type=database.postgresql", headers=headers)).json()
    assert [e["name"] for e in listed["engines"]] == ["reporting-db"] and listed["has_more"] is False
    assert (await (await client.get(f"{ENGINES}?type=aws", headers=headers)).json())["engines"] == []

    response = await client.patch(f"{ENGINES}/reporting-db", headers=headers,
                                  json={"description": "reporting", "default_ttl": "15m", "max_ttl": "2h"})
    patched = await response.json()
    assert response.status == 200, patched
    assert (patched["description"], patched["default_ttl"], patched["max_ttl"]) == ("reporting", 900, 7200)

    # A config that does not work is refused and nothing changes.
    dead = connection_url(reporting, port=free_port())
    response = await client.patch(f"{ENGINES}/reporting-db", headers=headers, json={"config": {"connection_url": dead}})
    assert (response.status, (await error_document(response))["code"]) == (400, "invalid_config")
    still = await (await client.get(f"{ENGINES}/reporting-db", headers=headers)).json()
    assert still["config"]["connection_url"] == connection_url(reporting)

    assert await error_of(await client.post(ENGINES, headers=headers, json={
        "name": "reporting-db", "type": "database", "config": created["config"]})) == (409, "engine_exists")
    # An engine without open leases is deleted with its roles.
    response = await client.delete(f"{ENGINES}/reporting-db", headers=headers)
    assert response.status == 204
    assert await error_of(await client.get(f"{ENGINES}/reporting-db", headers=headers)) == (404, "engine_not_found")
    assert await error_of(await client.get(f"{ENGINES}/reporting-db/roles", headers=headers)) == (
        404, "engine_not_found")


async def test_wrong_credentials_or_url_store_nothing(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    headers = admin_headers(container)
    await set_up_engine(client, container, reporting)
    root = "infra/reporting-db/root"
    await client.put(f"/v1/secrets/{root}", headers=headers, json={
        "data": {"username": reporting["admin"], "password": "not-the-password"}, "secret_type": "json"})
    body = {"name": "second", "type": "database",
            "config": {"plugin": "postgresql", "root_credentials_path": root,
                       "connection_url": connection_url(reporting)}}
    # The second engine's identity is bound to nothing: refused before any connection.
    response = await client.post(ENGINES, headers=headers, json=body)
    error = await error_document(response)
    assert (response.status, error["code"]) == (400, "invalid_config") and "dynamic:second" in error["message"]
    # The first engine's identity may read the root secret, which now holds a wrong password.
    response = await client.post(ENGINES, headers=headers, json={**body, "name": "reporting-db2"})
    assert response.status == 400
    response = await client.patch(f"{ENGINES}/reporting-db", headers=headers,
                                  json={"config": {"connection_url": connection_url(reporting, port=free_port())}})
    error = await error_document(response)
    assert (response.status, error["code"]) == (400, "invalid_config")
    assert "not-the-password" not in str(error) and BOOTSTRAP_PASSWORD not in str(error)
    health = await (await client.get(f"{ENGINES}/reporting-db/health", headers=headers)).json()
    assert health["status"] == "unhealthy" and "not-the-password" not in str(health)
    assert await engine_count(client, headers) == 1


@pytest.mark.parametrize(("engine_type", "plugin"), [("database", "mongodb"), ("azure", None), ("gcp", None),
                                                      ("custom", None)])
async def test_types_not_served_are_refused_with_a_reason(
    client: TestClient, container: Container, engine_type: str, plugin: str | None
) -> None:
    headers = admin_headers(container)
    config = {"plugin": plugin} if plugin else {}
    response = await client.post(ENGINES, headers=headers, json={"name": "x", "type": engine_type, "config": config})
    error = await error_document(response)
    assert (response.status, error["code"]) == (400, "invalid_config")
    assert "not yet supported" in error["message"]
    assert await engine_count(client, headers) == 0


@pytest.mark.parametrize(("body", "status", "code"), [
    ({"name": "Bad Name", "type": "ssh"}, 422, "validation_error"),
    ({"name": "x", "type": "database", "config": {"plugin": "oracle"}}, 422, "validation_error"),
    ({"name": "x", "type": "ssh", "default_ttl": "soon"}, 400, "invalid_duration"),
    ({"name": "x", "type": "ssh", "default_ttl": "2h", "max_ttl": "1h"}, 422, "validation_error"),
    ({"name": "x", "type": "ssh", "config": {"key_type": "dsa"}}, 422, "validation_error"),
    ({"name": "x", "type": "ssh", "surprise": True}, 422, "validation_error"),
    ({"name": "x", "type": "database", "config": {"plugin": "postgresql", "root_credentials_path": "a/b",
                                                   "connection_url": "postgresql://admin:pw@db:5432/x"}},
     422, "validation_error"),
    ({"name": "x", "type": "ssh", "root_rotation_period": "1d"}, 422, "validation_error"),
    ({"name": "x", "type": "ssh", "default_ttl": 10**15}, 422, "validation_error"),
    ({"name": "x", "type": "ssh", "max_ttl": "9999999999y"}, 400, "invalid_duration"),
    ({"name": "x", "type": "database", "config": {"plugin": "postgresql", "root_credentials_path": "a/b",
                                                   "connection_url": "postgresql://{{username}}@[abc/x"}},
     422, "validation_error"),
    # A placeholder in the host would send the root password to whoever answers DNS for that name.
    ({"name": "x", "type": "database", "config": {"plugin": "postgresql", "root_credentials_path": "a/b",
                                                   "connection_url": "postgresql://{{username}}@{{password}}.evil/x"}},
     422, "validation_error"),
    ({"name": "x", "type": "aws", "config": {"root_credentials_path": "a/b", "iam_endpoint": "http://[abc"}},
     422, "validation_error"),
    ({"type": "ssh"}, 422, "validation_error"),
])
async def test_bad_engines_get_the_error_envelope(
    client: TestClient, container: Container, body: dict[str, Any], status: int, code: str
) -> None:
    response = await client.post(ENGINES, headers=admin_headers(container), json=body)
    error = await error_document(response)
    assert (response.status, error["code"]) == (status, code), error
    assert "pw@" not in str(error)


async def test_malformed_requests(client: TestClient, container: Container) -> None:
    headers = admin_headers(container)
    response = await client.post(ENGINES, headers={**headers, "Content-Type": "application/json"}, data=b"{not json")
    assert await error_of(response) == (400, "invalid_request")
    assert await error_of(await client.get(f"{ENGINES}/Not_Valid", headers=headers)) == (422, "validation_error")
    assert await error_of(await client.get(f"{ENGINES}?limit=0", headers=headers)) == (400, "invalid_request")
    assert await error_of(await client.get(f"{ENGINES}?cursor=garbage", headers=headers)) == (400, "invalid_cursor")
    assert await error_of(await client.get("/v1/dynamic/leases/lease_nope", headers=headers)) == (
        404, "lease_not_found")
    assert await error_of(await client.get("/v1/dynamic/leases?state=sleeping", headers=headers)) == (
        422, "validation_error")


async def test_who_may_manage_and_read(client: TestClient, container: Container, reporting: dict[str, Any]) -> None:
    await set_up_engine(client, container, reporting)
    reader = caller_token(container, "dynamic:read", identity="sa:viewer")
    assert (await client.get(f"{ENGINES}/reporting-db", headers=reader)).status == 200
    assert (await client.get(f"{ENGINES}/reporting-db/roles/readonly", headers=reader)).status == 200
    assert await error_of(await client.post(ENGINES, headers=reader, json={"name": "x", "type": "ssh"})) == (
        403, "insufficient_scope")
    # dynamic:manage without an admin role for the tenant.
    manager = caller_token(container, "dynamic:manage", identity="sa:not-admin")
    assert await error_of(await client.delete(f"{ENGINES}/reporting-db", headers=manager)) == (403, "access_denied")
    assert await error_of(await client.post(f"{ENGINES}/reporting-db/rotate-root", headers=manager)) == (
        403, "access_denied")
    assert await error_of(await client.get(f"{ENGINES}/reporting-db/health", headers=manager)) == (
        403, "access_denied")
    assert await error_of(await client.put(f"{ENGINES}/reporting-db/roles/other", headers=manager,
                                           json=READONLY_ROLE)) == (403, "access_denied")
    nobody = caller_token(container, "secrets:read", identity="sa:nobody")
    assert await error_of(await client.get(ENGINES, headers=nobody)) == (403, "insufficient_scope")
    # Another tenant sees nothing of it, and may use the same name.
    other = admin_headers(container, tenant=OTHER_TENANT)
    assert await error_of(await client.get(f"{ENGINES}/reporting-db", headers=other)) == (404, "engine_not_found")
    assert (await (await client.get(ENGINES, headers=other)).json())["engines"] == []
    assert await error_of(await client.post(f"{ENGINES}/reporting-db/creds/readonly", headers=other)) == (
        404, "engine_not_found")


async def test_roles(client: TestClient, container: Container, reporting: dict[str, Any]) -> None:
    headers = admin_headers(container)
    await set_up_engine(client, container, reporting)
    roles = f"{ENGINES}/reporting-db/roles"
    response = await client.post(roles, headers=headers, json={"name": "writer", **READONLY_ROLE, "max_leases": 5})
    created = await response.json()
    assert response.status == 201 and response.headers["Location"].endswith("/roles/writer"), created
    assert (created["max_leases"], created["default_ttl"], created["max_ttl"]) == (5, 3600, 28800)
    assert await error_of(await client.post(roles, headers=headers, json={"name": "writer"})) == (409, "role_exists")
    response = await client.patch(f"{roles}/writer", headers=headers, json={"max_leases": 7})
    patched = await response.json()
    assert response.status == 200 and patched["max_leases"] == 7
    assert patched["creation_statements"] == READONLY_ROLE["creation_statements"]
    listed = await (await client.get(roles, headers=headers)).json()
    assert [r["name"] for r in listed["roles"]] == ["readonly", "writer"]
    assert (await client.delete(f"{roles}/writer", headers=headers)).status == 204
    assert await error_of(await client.get(f"{roles}/writer", headers=headers)) == (404, "role_not_found")
    assert await error_of(await client.patch(f"{roles}/writer", headers=headers, json={})) == (404, "role_not_found")


@pytest.mark.parametrize(("path_role", "body", "status", "code"), [
    ("x';drop", {}, 400, "invalid_role"),
    ("ok", {"creation_statements": ["CREATE ROLE \"{{name}}\" {{root_password}}"]}, 422, "validation_error"),
    ("ok", {"creation_statements": "not a list but one statement without the user"}, 422, "validation_error"),
    ("ok", {"max_ttl": "30d"}, 422, "validation_error"),
    ("ok", {"default_ttl": "nope"}, 400, "invalid_duration"),
    ("ok", {"username_template": "fixed_user"}, 422, "validation_error"),
    ("ok", {"max_leases": 0}, 422, "validation_error"),
    ("ok", {"policy_arns": ["arn:aws:iam::aws:policy/X"]}, 422, "validation_error"),
    ("ok", {"name": "other"}, 422, "validation_error"),
])
async def test_bad_roles_get_the_error_envelope(
    client: TestClient, container: Container, reporting: dict[str, Any], path_role: str, body: dict[str, Any],
    status: int, code: str,
) -> None:
    headers = admin_headers(container)
    await set_up_engine(client, container, reporting)
    response = await client.put(f"{ENGINES}/reporting-db/roles/{path_role}", headers=headers, json=body)
    assert await error_of(response) == (status, code)
    roles = await (await client.get(f"{ENGINES}/reporting-db/roles", headers=headers)).json()
    assert [r["name"] for r in roles["roles"]] == ["readonly"]
