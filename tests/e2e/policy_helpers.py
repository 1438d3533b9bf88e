"""Helpers for the policy end-to-end tests: tokens with groups and MFA, and policies made through the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.conftest import ALL_SECRET_SCOPES, PARTNER, TENANT, bearer

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


async def error_of(response: Any) -> tuple[int, str]:
    return response.status, (await response.json())["error"]["code"]


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
