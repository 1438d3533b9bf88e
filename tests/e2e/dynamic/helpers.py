"""Shared by the dynamic-secrets e2e tests: an engine set up as the tutorial does, logins, and what a target holds."""

from __future__ import annotations

from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.helpers import caller_token

ROOT_PATH = "infra/postgres/reporting/root"
BOOTSTRAP_PASSWORD = "temporary-bootstrap-password"
ADMIN_SCOPES = ("dynamic:manage", "dynamic:read", "secrets:write", "secrets:read", "policies:write", "admin")


async def login(target: dict[str, Any], user: str, password: str) -> asyncpg.Connection:
    return await asyncpg.connect(host=target["host"], port=target["port"], user=user, password=password,
                                 database=target["database"], timeout=5)



READONLY_ROLE = {
    "creation_statements": [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
        # Through a group role: concurrent GRANTs on one table's ACL collide in PostgreSQL ("tuple concurrently
        # updated"); granting a role does not.
        "GRANT reporting_reader TO \"{{name}}\";",
    ],
    "default_ttl": "1h", "max_ttl": "8h",
}


def admin_headers(container: Container, tenant: str | None = None) -> dict[str, str]:
    extra: dict[str, Any] = {} if tenant is None else {"tenant": tenant}
    return caller_token(container, *ADMIN_SCOPES, identity="user:dba@acme.example", roles=("tenant_admin",), **extra)


def connection_url(target: dict[str, Any], host: str | None = None, port: int | None = None) -> str:
    return (f"postgresql://{{{{username}}}}:{{{{password}}}}@{host or target['host']}:{port or target['port']}/"
            f"{target['database']}")


async def create_engine(
    client: TestClient, headers: dict[str, str], body: dict[str, Any], root: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The engine of ``body``; with ``root``, first its root secret at ``infra/<name>/root`` (named in the body's
    config) and a policy bound to the engine's identity that may read and rotate it, as the tutorial does."""
    name = body["name"]
    if root is not None:
        path = f"infra/{name}/root"
        body = {**body, "config": {**body.get("config", {}), "root_credentials_path": path}}
        response = await client.put(f"/v1/secrets/{path}", headers=headers, json={"data": root, "secret_type": "json"})
        assert response.status in (200, 201), await response.text()
        response = await client.post("/v1/policies", headers=headers, json={
            "name": f"engine-{name}", "rules": [{"path_pattern": path, "permissions": ["read", "rotate"]}]})
        policy = await response.json()
        assert response.status == 201, policy
        response = await client.post(f"/v1/policies/{policy['id']}/bindings", headers=headers,
                                     json={"identity_type": "service_account", "identity_id": f"dynamic:{name}"})
        assert response.status == 201, await response.text()
    response = await client.post("/v1/dynamic/engines", headers=headers, json=body)
    engine = await response.json()
    assert response.status == 201, engine
    return dict(engine)


async def set_up_engine(
    client: TestClient, container: Container, target: dict[str, Any], *, name: str = "reporting-db",
    role: dict[str, Any] | None = None, url: str | None = None, headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Root secret, the engine's policy and binding, the engine, and the role ``readonly``: the tutorial's steps
    2-4 on the reporting database (the engine document is returned)."""
    headers = headers or admin_headers(container)
    engine = await create_engine(client, headers, {
        "name": name, "type": "database",
        "config": {"plugin": "postgresql", "connection_url": url or connection_url(target)},
    }, {"username": target["admin"], "password": BOOTSTRAP_PASSWORD})
    response = await client.put(f"/v1/dynamic/engines/{name}/roles/readonly", headers=headers,
                                json=role or READONLY_ROLE)
    assert response.status == 201, await response.text()
    return engine


async def issue(client: TestClient, headers: dict[str, str], engine: str = "reporting-db", role: str = "readonly",
                **body: Any) -> dict[str, Any]:
    response = await client.post(f"/v1/dynamic/engines/{engine}/creds/{role}", headers=headers, json=body)
    document = await response.json()
    assert response.status == 201, document
    return dict(document)


async def role_exists(target: dict[str, Any], username: str) -> bool:
    superuser = target["superuser"]
    conn = await asyncpg.connect(host=superuser.host, port=superuser.port, user=superuser.admin_user,
                                 password=superuser.admin_password, database="postgres")
    try:
        return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", username))
    finally:
        await conn.close()
