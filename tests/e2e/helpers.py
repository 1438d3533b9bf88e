"""Helpers for the end-to-end tests: error answers, waiting for the read models, running the CLI as operators do,
and callers with groups, MFA and the policies made for them through the API."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.conftest import ALL_SECRET_SCOPES, PARTNER, TENANT, bearer
from tests.helpers import eventually

SCAIVAULT = [sys.executable, "-m", "scaivault.cli.main"]


async def error_document(response: Any) -> dict[str, Any]:
    """The error envelope's ``error`` object, which must name the request's id (left out, so that the answers of two
    requests compare)."""
    error = dict((await response.json())["error"])
    assert error.pop("request_id") == response.headers["X-Request-ID"]
    return error


async def error_of(response: Any) -> tuple[int, str]:
    """An error answer's status and code."""
    return response.status, (await error_document(response))["code"]


async def caught_up(container: Container) -> None:
    """Wait until every projection (the audit log's included) has applied every committed event."""

    async def no_lag() -> bool:
        status = await container.projections.status(container.pool)
        return all(entry["lag"] == 0 for entry in status.values())

    await eventually(no_lag, message="the projections did not catch up")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scaivault <args>`` in a process of its own; blocks the event loop, so not for a server this process runs."""
    return subprocess.run([*SCAIVAULT, *args], env=env, capture_output=True, text=True, timeout=60)


async def run_cli_async(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scaivault <args>`` while this process keeps serving (the test server, a stand-in ScaiKey)."""
    process = await asyncio.create_subprocess_exec(
        *SCAIVAULT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return subprocess.CompletedProcess(args, process.returncode or 0, out.decode(), err.decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---- callers and policies -----------------------------------------------------------------------------------------

POLICY_SCOPES = ("policies:read", "policies:write")


def caller_token(
    container: Container, *scopes: str, identity: str = "sa:svc", tenant: str | None = TENANT, partner: str = PARTNER,
    roles: tuple[str, ...] = (), groups: tuple[str, ...] = (), mfa_verified_at: datetime | None = None,
) -> dict[str, str]:
    """Headers for a caller with no role by default: it gets only what policies grant."""
    return bearer(container.issuer.issue(
        identity_id=identity, tenant_id=tenant, partner_id=partner, scopes=scopes or ALL_SECRET_SCOPES, roles=roles,
        groups=groups, mfa_verified_at=mfa_verified_at, ttl=timedelta(hours=1),
    ))


def admin(container: Container, tenant: str = TENANT, roles: tuple[str, ...] = ("tenant_admin",),
          partner: str = PARTNER) -> dict[str, str]:
    return caller_token(container, *ALL_SECRET_SCOPES, *POLICY_SCOPES, identity="user:admin@acme.example",
                        tenant=tenant, partner=partner, roles=roles)


async def create_policy(client: TestClient, headers: dict[str, str], rules: list[dict[str, Any]], *,
                        name: str = "test-policy", base: str = "/v1", **fields: Any) -> dict[str, Any]:
    response = await client.post(f"{base}/policies", json={"name": name, "rules": rules, **fields}, headers=headers)
    body = await response.json()
    assert response.status == 201, body
    return body


async def bind(client: TestClient, headers: dict[str, str], policy_id: str, identity_id: str = "sa:svc", *,
               base: str = "/v1", **fields: Any) -> dict[str, Any]:
    identity_type = {"sa": "service_account", "user": "user", "group": "group"}[identity_id.split(":")[0]]
    response = await client.post(f"{base}/policies/{policy_id}/bindings",
                                 json={"identity_type": identity_type, "identity_id": identity_id, **fields},
                                 headers=headers)
    body = await response.json()
    assert response.status == 201, body
    return body


async def grant(client: TestClient, container: Container, rules: list[dict[str, Any]],
                identity_id: str = "sa:svc") -> tuple[str, str]:
    """A policy with ``rules`` bound to ``identity_id`` by the tenant admin; returns (policy id, binding id)."""
    policy = await create_policy(client, admin(container), rules)
    binding = await bind(client, admin(container), policy["id"], identity_id)
    return policy["id"], binding["id"]


async def put_secrets(client: TestClient, container: Container, *paths: str) -> None:
    for path in paths:
        response = await client.put(f"/v1/secrets/{path}", json={"data": {"v": path}}, headers=admin(container))
        assert response.status == 201, await response.text()
