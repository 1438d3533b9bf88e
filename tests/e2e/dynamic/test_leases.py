"""Leases over HTTP against the real PostgreSQL: issue, look up, list, renew (bounded by max_ttl), revoke, revoke by
prefix; who sees and changes which lease; the explosion guard; expiry enforced by the server (also with several
servers, each lease revoked exactly once); a target that is down when a lease expires, retried until the revocation
succeeds; and no password in the events, the audit log or a webhook."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent

from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.dynamic import Lease
from scaivault.eventstore.mapper import create_mapper
from scaivault.http.app import create_app
from tests.e2e.dynamic.helpers import admin_headers, connection_url, issue, login, role_exists, set_up_engine
from tests.e2e.helpers import caller_token, caught_up, error_document, error_of
from tests.tcp_proxy import TcpProxy

LEASES = "/v1/dynamic/leases"


async def eventually(check: Callable[[], Awaitable[bool]], *, seconds: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, "the condition never held"
        await asyncio.sleep(0.1)


async def service(client: TestClient, container: Container, identity: str = "sa:reporting-service") -> dict[str, str]:
    """A service with dynamic:generate and a policy granting the readonly role's credentials."""
    headers = admin_headers(container)
    response = await client.post("/v1/policies", headers=headers, json={
        "name": f"creds-{identity.split(':')[1]}",
        "rules": [{"path_pattern": "dynamic/reporting-db/creds/*", "permissions": ["read"]}]})
    policy = await response.json()
    await client.post(f"/v1/policies/{policy['id']}/bindings", headers=headers,
                      json={"identity_type": "service_account", "identity_id": identity})
    return caller_token(container, "dynamic:generate", "dynamic:read", identity=identity)


async def lease_state(client: TestClient, container: Container, lease_id: str) -> dict[str, Any]:
    return dict(await (await client.get(f"{LEASES}/{lease_id}", headers=admin_headers(container))).json())


async def test_lease_life(client: TestClient, container: Container, reporting: dict[str, Any]) -> None:
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    lease = await issue(client, me, ttl="10m")
    lease_id = lease["lease_id"]
    assert lease["ttl"] == 600

    # Renewal: extended, never past the role's max_ttl (8h from issue).
    response = await client.post(f"{LEASES}/{lease_id}/renew", headers=me, json={"increment": "2h"})
    renewed = await response.json()
    assert response.status == 200 and 7150 <= renewed["ttl"] <= 7200, renewed
    conn = await asyncpg.connect(host=reporting["superuser"].host, port=reporting["superuser"].port,
                                 user=reporting["superuser"].admin_user,
                                 password=reporting["superuser"].admin_password, database="postgres")
    try:
        valid_until = await conn.fetchval("SELECT rolvaliduntil FROM pg_roles WHERE rolname = $1",
                                          lease["data"]["username"])
    finally:
        await conn.close()
    assert abs(valid_until - datetime.fromisoformat(renewed["expires_at"])) < timedelta(seconds=2)
    response = await client.post(f"{LEASES}/{lease_id}/renew", headers=me, json={"increment": "400d"})
    assert response.status == 422  # beyond any lease's ceiling
    response = await client.post(f"{LEASES}/{lease_id}/renew", headers=me, json={"increment": "24h"})
    capped = await response.json()
    assert capped["expires_at"] == capped["max_expires_at"]

    # Others: a second service neither sees nor changes it; an admin with dynamic:manage does.
    other = await service(client, container, "sa:other-service")
    assert await error_of(await client.get(f"{LEASES}/{lease_id}", headers=other)) == (404, "lease_not_found")
    assert await error_of(await client.post(f"{LEASES}/{lease_id}/revoke", headers=other)) == (404, "lease_not_found")
    mine = await (await client.get(LEASES, headers=me)).json()
    theirs = await (await client.get(LEASES, headers=other)).json()
    assert [x["lease_id"] for x in mine["leases"]] == [lease_id] and theirs["leases"] == []
    everyone = await (await client.get(f"{LEASES}?engine=reporting-db&role=readonly",
                                       headers=admin_headers(container))).json()
    assert [x["lease_id"] for x in everyone["leases"]] == [lease_id]

    # Revoked, then again (idempotent), then not renewable; listed among revoked ones.
    response = await client.post(f"{LEASES}/{lease_id}/revoke", headers=me)
    assert response.status == 200 and (await response.json())["state"] == "revoked"
    assert not await role_exists(reporting, lease["data"]["username"])
    response = await client.post(f"/v1/leases/{lease_id}/revoke", headers=me)  # the /v1/leases alias
    assert response.status == 200 and (await response.json())["revoke_reason"] == "requested"
    assert await error_of(await client.post(f"{LEASES}/{lease_id}/renew", headers=me)) == (
        409, "lease_not_renewable")
    assert (await (await client.get(LEASES, headers=me)).json())["leases"] == []
    revoked = await (await client.get(f"{LEASES}?state=revoked", headers=me)).json()
    assert [x["lease_id"] for x in revoked["leases"]] == [lease_id]

    # One event each: granted, renewed twice, revoked once.
    async with container.pool.acquire() as conn:
        stored = await conn.fetch(
            "SELECT topic FROM scaivault_events WHERE originator_id = $1 ORDER BY originator_version",
            Lease.create_id(lease_id))
    assert [row["topic"].rsplit(".", 1)[1] for row in stored] == ["Granted", "Renewed", "Renewed", "Revoked"]


async def test_an_open_session_ends_with_its_lease(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    lease = await issue(client, me)
    connection = await login(reporting, lease["data"]["username"], lease["data"]["password"])
    try:
        assert await connection.fetchval("SELECT count(*) FROM reports") == 1
        assert (await client.post(f"{LEASES}/{lease['lease_id']}/revoke", headers=me)).status == 200
        try:
            await connection.fetchval("SELECT 1")
            raise AssertionError("the revoked user's session still works")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ConnectionError):
            pass
    finally:
        await connection.close(timeout=2)


async def test_revoke_by_prefix_and_engine_in_use(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    headers = admin_headers(container)
    await set_up_engine(client, container, reporting)
    await client.put("/v1/dynamic/engines/reporting-db/roles/other", headers=headers, json={})
    me = await service(client, container)
    leases = [await issue(client, me) for _ in range(3)] + [await issue(client, me, role="other")]
    assert await error_of(await client.delete("/v1/dynamic/engines/reporting-db/roles/other", headers=headers)) == (
        409, "engine_in_use")
    assert await error_of(await client.delete("/v1/dynamic/engines/reporting-db", headers=headers)) == (
        409, "engine_in_use")
    # Pointed at another database while its users live in this one: refused (revoking there would remove nothing).
    moved = connection_url({**reporting, "database": "postgres"})
    assert await error_of(await client.patch("/v1/dynamic/engines/reporting-db", headers=headers,
                                             json={"config": {"connection_url": moved}})) == (409, "engine_in_use")
    assert await error_of(await client.post(f"{LEASES}/revoke-prefix", headers=me, json={"prefix": "reporting-db"})) \
        == (403, "insufficient_scope")
    response = await client.post(f"{LEASES}/revoke-prefix", headers=headers, json={"prefix": "reporting-db/readonly"})
    assert await response.json() == {"prefix": "reporting-db/readonly", "revoked": 3, "revoking": 0}
    for lease in leases[:3]:
        assert not await role_exists(reporting, lease["data"]["username"])
    assert await role_exists(reporting, leases[3]["data"]["username"])
    response = await client.post(f"{LEASES}/revoke-prefix", headers=headers, json={"prefix": "reporting-db"})
    assert (await response.json())["revoked"] == 1
    assert (await client.delete("/v1/dynamic/engines/reporting-db", headers=headers)).status == 204
    assert await error_of(await client.post(f"{LEASES}/revoke-prefix", headers=headers, json={"prefix": "a/b/c"})) \
        == (422, "validation_error")


async def test_explosion_guard(client: TestClient, container: Container, reporting: dict[str, Any]) -> None:
    headers = admin_headers(container)
    await set_up_engine(client, container, reporting)
    await client.patch("/v1/dynamic/engines/reporting-db/roles/readonly", headers=headers, json={"max_leases": 2})
    me = await service(client, container)
    first = await issue(client, me)
    await issue(client, me)
    response = await client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=me)
    error = await error_document(response)
    assert (response.status, error["code"]) == (409, "quota_exceeded")
    assert error["details"] == {"resource": "leases_per_role", "limit": 2, "current": 2}
    await client.post(f"{LEASES}/{first['lease_id']}/revoke", headers=me)
    await issue(client, me)  # room again once one is revoked


async def test_the_tenant_limit(
    client: TestClient, settings: Settings, reporting: dict[str, Any], container: Container
) -> None:
    """An operator's SCAIVAULT_MAX_LEASES_PER_TENANT, on a server started with 1."""
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    await issue(client, me)
    limited = await build_container(settings.model_copy(update={"max_leases_per_tenant": 1}), migrate=False)
    try:
        async with TestClient(TestServer(create_app(limited))) as limited_client:
            response = await limited_client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=me)
            error = await error_document(response)
    finally:
        await limited.close()
    assert (response.status, error["code"]) == (409, "quota_exceeded")
    assert error["details"] == {"resource": "leases_per_tenant", "limit": 1, "current": 1}


async def test_expiry_is_enforced_by_the_server(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    lease = await issue(client, me, ttl="1s")
    username = lease["data"]["username"]

    async def revoked() -> bool:
        return (await lease_state(client, container, lease["lease_id"]))["state"] == "revoked"

    await eventually(revoked)
    state = await lease_state(client, container, lease["lease_id"])
    assert state["revoke_reason"] == "expired"
    assert not await role_exists(reporting, username)
    await caught_up(container)
    async with container.pool.acquire() as conn:
        entry = await conn.fetchrow(
            "SELECT identity_id, status, extra FROM scaivault_audit_log WHERE action = 'dynamic_revoke'")
    assert entry["identity_id"] == "system:lease-expiry" and entry["status"] == 200
    assert json.loads(entry["extra"])["lease_id"] == lease["lease_id"] if isinstance(entry["extra"], str) else \
        entry["extra"]["lease_id"] == lease["lease_id"]


async def test_several_servers_revoke_each_lease_once(
    client: TestClient, container: Container, settings: Settings, reporting: dict[str, Any]
) -> None:
    """Two more servers on the same database (their expiry workers racing the app's): every lease revoked, each
    exactly once, and every user gone."""
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    leases = await asyncio.gather(*(issue(client, me, ttl="2s") for _ in range(30)))
    others = [await build_container(settings, migrate=False) for _ in range(2)]
    try:
        async with others[0].running_background(), others[1].running_background():
            async def all_revoked() -> bool:
                async with container.pool.acquire() as conn:
                    return not await conn.fetchval(
                        "SELECT count(*) FROM scaivault_dynamic_leases WHERE state <> 'revoked'")

            await eventually(all_revoked, seconds=30)
    finally:
        for server in others:
            await server.close()
    async with container.pool.acquire() as conn:
        counts = await conn.fetch(
            """SELECT originator_id, count(*) AS n FROM scaivault_events
               WHERE topic LIKE '%Lease.Revoked' GROUP BY originator_id""")
    assert len(counts) == 30 and all(row["n"] == 1 for row in counts)
    for lease in leases:
        assert not await role_exists(reporting, lease["data"]["username"])


async def test_a_target_down_at_expiry_is_retried_until_revoked(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    proxy = TcpProxy((reporting["host"], reporting["port"]))
    await proxy.open()
    try:
        await set_up_engine(client, container, reporting, url=connection_url(reporting, port=proxy.port))
        me = await service(client, container)
        lease = await issue(client, me, ttl="1s")
        await proxy.shut()

        async def failed_once() -> bool:
            return (await lease_state(client, container, lease["lease_id"]))["revocation_attempts"] >= 1

        await eventually(failed_once)
        state = await lease_state(client, container, lease["lease_id"])
        assert state["state"] == "revoking" and state["last_error"] and state["next_attempt_at"]
        assert await role_exists(reporting, lease["data"]["username"])
        await proxy.open()

        async def revoked() -> bool:
            return (await lease_state(client, container, lease["lease_id"]))["state"] == "revoked"

        await eventually(revoked, seconds=30)
        assert not await role_exists(reporting, lease["data"]["username"])
    finally:
        await proxy.shut()


async def test_no_password_in_events_audit_or_read_models(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    await set_up_engine(client, container, reporting)
    me = await service(client, container)
    lease = await issue(client, me)
    await client.post(f"{LEASES}/{lease['lease_id']}/renew", headers=me)
    await client.post(f"{LEASES}/{lease['lease_id']}/revoke", headers=me)
    await client.post("/v1/dynamic/engines/reporting-db/rotate-root", headers=admin_headers(container))
    await caught_up(container)
    password = lease["data"]["password"]
    mapper = create_mapper()
    async with container.pool.acquire() as conn:
        events = await conn.fetch("SELECT originator_id, originator_version, topic, state FROM scaivault_events")
        audit = await conn.fetch("SELECT to_jsonb(a)::text AS row FROM scaivault_audit_log a")
        tables = [await conn.fetch(f"SELECT to_jsonb(t)::text AS row FROM {table} t") for table in (
            "scaivault_dynamic_engines", "scaivault_dynamic_roles", "scaivault_dynamic_leases")]
    assert password.encode() not in b"".join(bytes(row["state"]) for row in events)
    for row in audit + [r for table in tables for r in table]:
        assert password not in row["row"] and "temporary-bootstrap-password" not in row["row"]
    # The decoded events too (a compressed or encoded state would hide it from the byte search).
    for row in events:
        if "dynamic" in row["topic"]:
            event = mapper.to_domain_event(StoredEvent(row["originator_id"], row["originator_version"],
                                                       row["topic"], bytes(row["state"])))
            assert password not in repr(event.__dict__)


async def test_a_lease_revoked_while_its_credential_is_created_leaves_no_user(
    client: TestClient, container: Container, reporting: dict[str, Any]
) -> None:
    """The lease (1 s) expires while the target is still creating its user (2 s): the expiry worker's revocation
    finds no user; the server removes the user once it exists and answers that there is no credential."""
    slow = {"creation_statements": [
        "SELECT pg_sleep(2);",
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    ]}
    await set_up_engine(client, container, reporting, role=slow)
    me = await service(client, container)
    response = await client.post("/v1/dynamic/engines/reporting-db/creds/readonly", headers=me, json={"ttl": 1})
    assert await error_of(response) == (503, "service_unavailable")
    leases = await (await client.get(f"{LEASES}?state=all", headers=admin_headers(container))).json()
    [lease] = leases["leases"]
    assert (lease["state"], lease["revoke_reason"]) == ("revoked", "expired")
    assert not await role_exists(reporting, lease["username"])
