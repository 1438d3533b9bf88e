"""tutorials/dynamic-postgres-credentials, played end to end over HTTP against a real PostgreSQL that requires
passwords (a cluster the test suite starts: scram-sha-256 for every TCP login, so a wrong password is refused).

The DBA creates ``scaivault_admin``; its bootstrap password is stored as a secret; a policy bound to the engine's
identity ``dynamic:reporting-db`` lets it read and rotate that secret; the engine is configured (a test connection)
and health-checked; the ``readonly`` role creates users that can SELECT and nothing more; a lease's credentials
log in, work, are refused writes, and stop working when the lease is revoked; the root password is rotated so that
only the server knows it, and the engine keeps working with the new one.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.dynamic.helpers import ADMIN_SCOPES, BOOTSTRAP_PASSWORD, ROOT_PATH, login
from tests.e2e.helpers import caller_token, error_of


async def test_the_tutorial(client: TestClient, container: Container, reporting: dict[str, Any]) -> None:
    admin = caller_token(container, *ADMIN_SCOPES, identity="user:dba@acme.example", roles=("tenant_admin",))
    # Step 2: the root credentials, and a policy that lets only the engine read and rotate them.
    response = await client.put(f"/v1/secrets/{ROOT_PATH}", headers=admin, json={
        "data": {"username": reporting["admin"], "password": BOOTSTRAP_PASSWORD}, "secret_type": "json"})
    assert response.status in (200, 201), await response.text()
    engine_body = {
        "name": "reporting-db", "type": "database",
        "config": {"plugin": "postgresql", "root_credentials_path": ROOT_PATH,
                   "connection_url": f"postgresql://{{{{username}}}}:{{{{password}}}}@{reporting['host']}:"
                                     f"{reporting['port']}/{reporting['database']}"},
        "default_ttl": "1h", "max_ttl": "24h",
    }
    # Without the binding the engine may not read its root credentials: 400 invalid_config, nothing stored.
    response = await client.post("/v1/dynamic/engines", headers=admin, json=engine_body)
    assert response.status == 400, await response.text()
    assert "dynamic:reporting-db" in (await response.json())["error"]["message"]
    assert await error_of(await client.get("/v1/dynamic/engines/reporting-db", headers=admin)) == (
        404, "engine_not_found")
    response = await client.post("/v1/policies", headers=admin, json={
        "name": "dynamic-engine-pg-root", "rules": [{"path_pattern": ROOT_PATH, "permissions": ["read", "rotate"]}]})
    policy = await response.json()
    assert response.status == 201, policy
    response = await client.post(f"/v1/policies/{policy['id']}/bindings", headers=admin,
                                 json={"identity_type": "service_account", "identity_id": "dynamic:reporting-db"})
    assert response.status == 201, await response.text()

    # Step 3: the engine (a test connection is made), then its health.
    response = await client.post("/v1/dynamic/engines", headers=admin, json=engine_body)
    engine = await response.json()
    assert response.status == 201, engine
    assert (engine["name"], engine["type"], engine["config"]["plugin"], engine["default_ttl"], engine["max_ttl"]) == (
        "reporting-db", "database", "postgresql", 3600, 86400)
    assert BOOTSTRAP_PASSWORD not in str(engine)
    response = await client.get("/v1/dynamic/engines/reporting-db/health", headers=admin)
    assert (await response.json())["status"] == "healthy"

    # Step 4: the readonly role.
    response = await client.post("/v1/dynamic/engines/reporting-db/roles", headers=admin, json={
        "name": "readonly",
        "creation_statements": [
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";",
        ],
        "revocation_statements": [
            "REASSIGN OWNED BY \"{{name}}\" TO CURRENT_USER;", "DROP OWNED BY \"{{name}}\";",
            "DROP ROLE IF EXISTS \"{{name}}\";",
        ],
        "default_ttl": "1h", "max_ttl": "8h",
    })
    assert response.status == 201, await response.text()

    # A lease: the credentials log in and read, and are refused a write; a wrong password is refused.
    service = caller_token(container, "dynamic:generate", identity="sa:reporting-service")
    assert await error_of(await client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=service)) == (
        403, "access_denied")
    response = await client.post("/v1/policies", headers=admin, json={
        "name": "reporting-creds", "rules": [{"path_pattern": "dynamic/reporting-db/creds/readonly",
                                              "permissions": ["read"]}]})
    grant = await response.json()
    await client.post(f"/v1/policies/{grant['id']}/bindings", headers=admin,
                      json={"identity_type": "service_account", "identity_id": "sa:reporting-service"})
    response = await client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=service,
                                 json={"ttl": "30m"})
    lease = await response.json()
    assert response.status == 201, lease
    assert lease["ttl"] == 1800 and lease["renewable"] is True and lease["lease_id"].startswith("lease_")
    username, password = lease["data"]["username"], lease["data"]["password"]
    assert username.startswith("v_readonly_") and len(password) >= 32
    connection = await login(reporting, username, password)
    try:
        assert await connection.fetchval("SELECT title FROM reports WHERE id = 1") == "q3"
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("INSERT INTO reports VALUES (2, 'q4')")
    finally:
        await connection.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await login(reporting, username, password[:-1] + ("x" if password[-1] != "x" else "y"))

    response = await client.get(f"/v1/dynamic/leases/{lease['lease_id']}", headers=service)
    shown = await response.json()
    assert (shown["state"], shown["username"], shown["engine"], shown["role"]) == (
        "active", username, "reporting-db", "readonly")
    assert password not in str(shown)

    # Revoked: the user is gone from PostgreSQL.
    response = await client.post(f"/v1/dynamic/leases/{lease['lease_id']}/revoke", headers=service)
    revoked = await response.json()
    assert (response.status, revoked["state"]) == (200, "revoked"), revoked["last_error"]
    with pytest.raises(asyncpg.InvalidAuthorizationSpecificationError):
        await login(reporting, username, password)

    # Root rotation: afterwards only the server knows the password, and the engine keeps working.
    response = await client.post("/v1/dynamic/engines/reporting-db/rotate-root", headers=admin)
    rotated = await response.json()
    assert response.status == 200 and rotated["version"] == 2, rotated
    with pytest.raises(asyncpg.InvalidPasswordError):
        await login(reporting, reporting["admin"], BOOTSTRAP_PASSWORD)
    response = await client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=service)
    assert response.status == 201, await response.text()
    second = await response.json()
    connection = await login(reporting, second["data"]["username"], second["data"]["password"])
    await connection.close()
    response = await client.post("/v1/dynamic/leases/revoke-prefix", headers=admin, json={"prefix": "reporting-db"})
    assert (await response.json())["revoked"] == 1
