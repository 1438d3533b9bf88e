from __future__ import annotations
from aiohttp.test_utils import TestClient
from scaivault.bootstrap import Container
from tests.e2e.conftest import TENANT, TokenFactory, bearer
from tests.e2e.policy_helpers import admin, caller_token, create_policy, grant, put_secrets

async def test_probe(client: TestClient, container: Container, token: TokenFactory) -> None:
    await put_secrets(client, container, "app/db")
    h = admin(container)
    ih = bearer(token("identity:read", "identity:admin", identity="user:admin@acme.example", roles=("partner_admin",)))
    pol = await create_policy(client, h, [{"path_pattern": "app/**", "permissions": ["read"]}])
    pid = pol["id"]
    big = "0" * 11 + "1" + "0" * 5000
    probes = [
        ("GET", f"/v1/identity/tenants/{TENANT}/users?page_size=00000000000100000000", None, ih),
        ("GET", f"/v1/identity/tenants/{TENANT}/users?page={big}", None, ih),
        ("GET", f"/v1/identity/tenants/{TENANT}/users?page=000000000001000000000000000", None, ih),
        ("GET", f"/v1/identity/tenants/{TENANT}/groups?page_size={big}", None, ih),
        ("GET", "/v1/identity/partners?page=000000000001000000000000000", None, ih),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"time_windows": [{"start": "01:00", "end": "02:00", "timezone": "America"}]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"time_windows": [{"start": "01:00", "end": "02:00", "timezone": "a" * 5000}]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"time_windows": [{"start": "01:00", "end": "02:00", "timezone": "../../../etc/passwd"}]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"time_windows": [{"start": "01:00", "end": "02:00", "timezone": "Europe/\u0000"}]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"require_mfa": True, "mfa_max_age": "99999999999999999999d"}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"ip_ranges": ["1.2.3.4/99"]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"ip_ranges": ["fe80::1%eth0/64"]}}]}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": ["read"], "conditions": {"time_windows": [{"start": "01:00", "end": "02:00", "days": [[1]]}]}}]}, h),
        ("POST", "/v1/policies", {"name": "x" * 100, "rules": "x"}, h),
        ("POST", "/v1/policies", {"name": "x", "rules": [{"path_pattern": "a/*", "permissions": [["read"]]}]}, h),
        ("POST", "/v1/policies", [1], h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:x", "expires_at": "99999-01-01T00:00:00Z"}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:x", "expires_at": "9999-12-31T23:59:59+00:00"}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:x", "expires_at": "0001-01-01T00:00:00+14:00"}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:y", "expires_at": "9999-12-31T23:59:59-14:00"}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:z", "expires_at": 1e20}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:w", "expires_at": 99999999999}, h),
        ("POST", f"/v1/policies/{pid}/bindings", {"identity_type": "user", "identity_id": "user:\u00e9"}, h),
        ("POST", "/v1/policies/test", {"identity_id": "sa:svc", "path": "app/db", "permission": "read", "context": {"timestamp": "9999-12-31T23:59:59-14:00"}}, h),
        ("POST", "/v1/policies/test", {"identity_id": "sa:svc", "path": "app/db", "permission": "read", "context": {"timestamp": "0001-01-01T00:00:00+14:00"}}, h),
        ("POST", "/v1/policies/test", {"identity_id": "sa:svc", "path": "app/db", "permission": "read", "context": {"mfa_verified": True, "mfa_verified_at": "0001-01-01T00:00:00+00:00"}}, h),
        ("POST", "/v1/policies/test", {"identity_id": "sa:svc", "path": "app/db", "permission": "read", "context": {"source_ip": "1.2.3.4%x"}}, h),
        ("GET", "/v1/policies?cursor=e30", None, h),
        ("GET", "/v1/policies?cursor=" + "A" * 10, None, h),
        ("GET", "/v1/policies/" + "x" * 5000, None, h),
        ("GET", "/v1/policies/%00", None, h),
        ("DELETE", f"/v1/policies/{pid}/bindings/%00", None, h),
        ("GET", f"/v1/policies/{pid}/bindings?cursor=eyJ2IjoxLCJwb2xpY3lfaWQiOiJ4IiwiYWZ0ZXIiOjF9", None, h),
        ("GET", "/v1/secrets?cursor=eyJ2IjoxLCJwcmVmaXgiOiIiLCJhZnRlciI6IiJ9", None, h),
        ("GET", "/v1/secrets/app/db?as_of=99999-01-01T00:00:00Z", None, h),
        ("GET", "/v1/secrets/app/db?as_of=0001-01-01T00:00:00+14:00", None, h),
        ("PUT", f"/v1/identity/tenants/{TENANT}/users/usr_x/roles", {"roles": [1]}, ih),
        ("PUT", f"/v1/identity/tenants/{TENANT}/users/usr_x/roles", {"roles": "super_admin"}, ih),
        ("GET", "/v1/identity/resolve/user/%00", None, ih),
        ("GET", "/v1/identity/resolve/user/" + "a" * 3000, None, ih),
        ("GET", "/v1/identity/sync/history?page=000000000001000000000000000", None, ih),
        ("POST", "/v1/identity/sync?tenant_id=%00", None, ih),
        ("POST", "/v1/secrets/batch/metadata", {"paths": ["**/" * 200 + "x"], "options": {"expand_wildcards": True}}, h),
    ]
    bad = []
    for method, url, body, headers in probes:
        r = await client.request(method, url, json=body, headers=headers)
        text = await r.text()
        print(r.status, method, url[:90], text[:200])
        if r.status >= 500:
            bad.append((method, url[:90], r.status, text[:300]))
    assert not bad, bad
