"""The audit log over HTTP: every request recorded, queried per tenant, and tamper-evident."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from projections.audit.verification import verify_audit_chain
from projections.maintenance.rebuild import Rebuilder
from projections.maintenance.retention import enforce_audit_retention
from scaivault.bootstrap import Container, read_models
from scaivault.domain.audit import ACTIONS
from tests.e2e.conftest import OTHER_TENANT, TENANT, TokenFactory, bearer
from tests.e2e.helpers import caught_up
from tests.helpers import instant_between_steps


async def logs(client: TestClient, token: str, query: str = "") -> dict:  # type: ignore[type-arg]
    response = await client.get(f"/v1/audit/logs{query}", headers=bearer(token))
    assert response.status == 200, await response.text()
    return await response.json()


async def test_requests_appear_in_the_tenants_audit_log(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t, auditor = token(), token("audit:read")
    written = await client.put("/v1/secrets/app/db", json={"data": {"pw": "audit-canary"}}, headers=bearer(t))
    read = await client.get("/v1/secrets/app/db", headers=bearer(t))
    denied = await client.get("/v1/secrets/app/db", headers=bearer(token("secrets:list")))
    await caught_up(container)
    body = await logs(client, auditor)
    entries = {entry["request_id"]: entry for entry in body["logs"]}
    write_entry = entries[written.headers["X-Request-ID"]]
    assert write_entry["action"] == "write" and write_entry["secret_path"] == "app/db" and write_entry["success"]
    assert write_entry["identity_id"] == "user:alice@acme.example" and write_entry["identity_type"] == "user"
    assert write_entry["id"].startswith("log_") and write_entry["timestamp"].endswith("Z")
    assert entries[read.headers["X-Request-ID"]]["extra_data"] == {"version": 1}
    denied_entry = entries[denied.headers["X-Request-ID"]]
    assert denied_entry["success"] is False and denied_entry["error_code"] == "insufficient_scope"
    sequences = [entry["sequence"] for entry in body["logs"]]
    assert sequences == sorted(sequences, reverse=True)  # newest first
    assert "audit-canary" not in str(body)


async def test_filters_and_pagination(client: TestClient, token: TokenFactory, container: Container) -> None:
    t, auditor = token(), token("audit:read")
    for n in range(5):
        await client.put(f"/v1/secrets/svc/a{n}", json={"data": {"k": "v"}}, headers=bearer(t))
    await client.get("/v1/secrets/svc/missing", headers=bearer(t))
    await client.get("/v1/secrets/other/x", headers=bearer(token(identity="sa:robot")))
    await caught_up(container)

    writes = await logs(client, auditor, "?action=write")
    assert {e["action"] for e in writes["logs"]} == {"write"} and len(writes["logs"]) == 5
    failures = await logs(client, auditor, "?success=false")
    assert {e["error_code"] for e in failures["logs"]} == {"secret_not_found"}
    robot = await logs(client, auditor, "?identity_id=sa:robot&identity_type=service_account")
    assert [e["secret_path"] for e in robot["logs"]] == ["other/x"]
    under = await logs(client, auditor, "?path_prefix=svc/&action=write,read")
    assert {e["secret_path"] for e in under["logs"]} == {f"svc/a{n}" for n in range(5)} | {"svc/missing"}
    one = writes["logs"][0]
    assert [e["id"] for e in (await logs(client, auditor, f"?request_id={one['request_id']}"))["logs"]] == [one["id"]]
    # Found through its access event's stream (no request-id index), and only in the caller's own chain.
    other = await logs(client, token("audit:read", tenant=OTHER_TENANT), f"?request_id={one['request_id']}")
    assert other["logs"] == []
    for unknown in ("req_nothing", "%ED%A0%80", "x" * 300):
        assert (await logs(client, auditor, f"?request_id={unknown}"))["logs"] == []
    future = await logs(client, auditor, "?from=2999-01-01T00:00:00Z")
    assert future["logs"] == [] and future["has_more"] is False

    seen, cursor = [], None
    while True:
        page = await logs(client, auditor, "?limit=3" + (f"&cursor={cursor}" if cursor else ""))
        seen += [e["sequence"] for e in page["logs"]]
        if not page["has_more"]:
            break
        cursor = page["cursor"]
    assert seen == sorted(set(seen), reverse=True) and len(seen) >= 7

    for query, code in (("?cursor=garbage", "invalid_cursor"), ("?limit=0", "invalid_request"),
                        ("?action=steal", "invalid_request"), ("?from=yesterday", "invalid_request"),
                        ("?success=maybe", "invalid_request"), ("?identity_type=robot", "invalid_request")):
        response = await client.get(f"/v1/audit/logs{query}", headers=bearer(auditor))
        assert response.status == 400 and (await response.json())["error"]["code"] == code


async def test_tenants_see_only_their_own_entries(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    await client.put("/v1/secrets/prod/only", json={"data": {"k": "v"}}, headers=bearer(token()))
    await client.put("/v1/secrets/dev/only", json={"data": {"k": "v"}}, headers=bearer(token(tenant=OTHER_TENANT)))
    await caught_up(container)
    prod = await logs(client, token("audit:read"))
    dev = await logs(client, token("audit:read", tenant=OTHER_TENANT))
    assert {e["secret_path"] for e in prod["logs"]} >= {"prod/only"} and "dev/only" not in str(prod)
    assert "prod/only" not in str(dev)
    assert (await client.get("/v1/audit/logs", headers=bearer(token()))).status == 403  # no audit:read


async def test_secret_and_identity_trails_and_summary(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t, auditor = token(), token("audit:read", identity="user:auditor@acme.example")
    await client.put("/v1/secrets/app/trail", json={"data": {"k": "v"}}, headers=bearer(t))
    for _ in range(3):
        await client.get("/v1/secrets/app/trail", headers=bearer(t))
    await client.get("/v1/secrets/app/trail", headers=bearer(token("secrets:read", identity="sa:reader")))
    await caught_up(container)

    trail = await (await client.get("/v1/audit/secrets/app/trail", headers=bearer(auditor))).json()
    assert trail["path"] == "app/trail" and len(trail["logs"]) == 5
    assert trail["summary"]["period_days"] == 30 and trail["summary"]["by_action"] == {"read": 4, "write": 1}
    assert trail["summary"]["unique_identities"] == 2 and trail["summary"]["last_read_at"] is not None

    person = await (await client.get("/v1/audit/identities/sa:reader", headers=bearer(auditor))).json()
    assert [e["secret_path"] for e in person["logs"]] == ["app/trail"]
    assert person["summary"]["total_events"] == 1

    summary = await (await client.get("/v1/audit/summary", headers=bearer(auditor))).json()
    assert summary["total_events"] >= 5 and summary["by_action"]["read"] == 4
    assert summary["successful_events"] + summary["failed_events"] == summary["total_events"]
    assert {"identity_id": "user:alice@acme.example", "count": 4} in summary["top_identities"]


async def tamper(pool: asyncpg.Pool, sql: str) -> None:
    await pool.execute(sql.replace("{tenant}", TENANT))


async def verify(client: TestClient, token: str) -> dict:  # type: ignore[type-arg]
    response = await client.get("/v1/audit/verify", headers=bearer(token))
    assert response.status == 200
    return await response.json()


async def test_the_chain_reveals_altered_removed_and_reordered_entries(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool
) -> None:
    t, auditor = token(), token("audit:read")
    for n in range(6):
        await client.put(f"/v1/secrets/app/c{n}", json={"data": {"k": "v"}}, headers=bearer(t))
    await caught_up(container)
    intact = await verify(client, auditor)
    assert intact["valid"] is True and intact["verified_entries"] == intact["chain_length"] >= 6

    cases = {
        "altered": "UPDATE scaivault_audit_log SET action = 'read' WHERE chain = '{tenant}' AND seq = 3",
        "removed": "DELETE FROM scaivault_audit_log WHERE chain = '{tenant}' AND seq = 4",
        "reordered": "UPDATE scaivault_audit_log SET seq = -2 WHERE chain = '{tenant}' AND seq = 2;"
                     "UPDATE scaivault_audit_log SET seq = 2 WHERE chain = '{tenant}' AND seq = 5;"
                     "UPDATE scaivault_audit_log SET seq = 5 WHERE chain = '{tenant}' AND seq = -2",
        "truncated": "DELETE FROM scaivault_audit_log WHERE chain = '{tenant}'"
                     " AND seq = (SELECT max(seq) FROM scaivault_audit_log WHERE chain = '{tenant}')",
    }
    expected = {"altered": ("altered", 3), "removed": ("removed", 4), "reordered": ("reordered", 2),
                "truncated": ("removed", None)}
    await caught_up(container)  # from here on nothing else writes to the chain: verify directly, not over HTTP
    for name, sql in cases.items():
        saved = await pool.fetch("SELECT * FROM scaivault_audit_log WHERE chain = $1", TENANT)
        await tamper(pool, sql)
        report = await verify_audit_chain(container.pool, container.keyring, TENANT)
        problem, seq = expected[name]
        assert report["valid"] is False and report["first_invalid"]["problem"] == problem, (name, report)
        if seq is not None:
            assert report["first_invalid"]["sequence"] == seq
        columns = list(saved[0].keys())
        await pool.execute("DELETE FROM scaivault_audit_log WHERE chain = $1", TENANT)
        await pool.executemany(
            f"INSERT INTO scaivault_audit_log ({', '.join(columns)})"
            f" VALUES ({', '.join(f'${n}' for n in range(1, len(columns) + 1))})",
            [tuple(row.values()) for row in saved],
        )
        restored = await verify_audit_chain(container.pool, container.keyring, TENANT)
        assert restored["valid"] is True  # restored, the chain holds again


async def test_cli_verify_reports_every_chain(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool, settings: object
) -> None:
    await client.put("/v1/secrets/app/cli", json={"data": {"k": "v"}}, headers=bearer(token()))
    await client.get("/v1/secrets/app/cli")  # no token: the request resolves no tenant (the system chain)
    await caught_up(container)
    env = {**os.environ, "DATABASE_URL": container.database_url, "SCAIVAULT_DATA_DIR": str(container.settings.data_dir)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "scaivault.cli.main", "audit", "verify", *args],
                              check=False, env=env, capture_output=True, text=True, timeout=60)

    intact = run()
    assert intact.returncode == 0, intact.stderr
    assert f"{TENANT}: ok" in intact.stdout and "(no tenant): ok" in intact.stdout
    await tamper(pool, "UPDATE scaivault_audit_log SET identity_id = 'user:mallory@x.example'"
                       " WHERE chain = '{tenant}' AND seq = 1")
    broken = run("--tenant", TENANT, "--json")
    assert broken.returncode == 1
    assert '"problem": "altered"' in broken.stdout and '"id": "log_1"' in broken.stdout


async def test_retention_removes_old_entries_and_what_remains_still_verifies(
    client: TestClient, token: TokenFactory, container: Container, pool: asyncpg.Pool
) -> None:
    t, auditor = token(), token("audit:read", identity="user:auditor@acme.example")
    for n in range(5):
        await client.get(f"/v1/secrets/old/{n}", headers=bearer(t))
    await client.put("/v1/secrets/old/read", json={"data": {"k": "v"}}, headers=bearer(t))
    await client.get("/v1/secrets/old/read", headers=bearer(t))
    await caught_up(container)
    cut = await instant_between_steps()
    for n in range(3):
        await client.get(f"/v1/secrets/new/{n}", headers=bearer(t))
    await caught_up(container)
    access_events = "SELECT count(*) FROM scaivault_events WHERE topic = 'scaivault.domain.access:AccessRecorded'"
    before = await pool.fetchval(access_events)

    seven_years = timedelta(days=7 * 365)
    report = await enforce_audit_retention(pool, container.keyring, retention=seven_years, now=cut + seven_years)
    assert report.removed_entries >= 7 and report.removed_events == report.removed_entries
    assert await pool.fetchval(access_events) == before - report.removed_events
    remaining = await logs(client, auditor, "?path_prefix=old/")
    assert remaining["logs"] == []
    assert len((await logs(client, auditor, "?path_prefix=new/"))["logs"]) == 3
    assert await pool.fetchval("SELECT count(*) FROM scaivault_secret_last_access") == 0  # rested on removed reads
    await caught_up(container)
    assert (await verify_audit_chain(container.pool, container.keyring, TENANT))["valid"] is True

    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    for model in read_models(container.keyring):
        assert (await rebuilder.verify(model))["identical"], model.name  # a rebuild starts chains at their anchors

    await pool.execute("UPDATE scaivault_audit_anchors SET seq = seq - 1 WHERE chain = $1", TENANT)
    moved = await verify_audit_chain(container.pool, container.keyring, TENANT)
    assert moved["valid"] is False and "anchor" in moved["first_invalid"]["detail"]


def cursor_of(state: object) -> str:
    """A cursor as a client could forge one: any JSON state, base64url-encoded like the server's."""
    return base64.urlsafe_b64encode(json.dumps(state).encode()).decode().rstrip("=")


async def refusal(client: TestClient, token: str, url: str, params: dict[str, str]) -> tuple[int, str, dict[str, Any]]:
    response = await client.get(url, params=params, headers=bearer(token))
    error = (await response.json())["error"]
    return response.status, error["code"], error.get("details", {})


LIST_URLS = ("/v1/audit/logs", "/v1/audit/secrets/app/q", "/v1/audit/identities/user:alice@acme.example")


async def test_each_bad_query_parameter_is_400_naming_it(client: TestClient, token: TokenFactory) -> None:
    auditor = token("audit:read")
    bad = {
        "limit": ("0", "1001", "-1", "abc", "1e3", "+5", " 5", "\u0661", "9" * 40),
        "from": ("yesterday", "2026-13-01T00:00:00Z", "", "0001-01-01T00:00:00+14:00"),
        "to": ("soon", "9999-12-31T23:59:59-14:00"),
        "action": ("steal", "", ",", "read,steal"),
        "identity_type": ("robot", "USER"),
        "success": ("maybe", ""),
    }
    for url in LIST_URLS:
        for parameter, values in bad.items():
            for value in values:
                status, code, details = await refusal(client, auditor, url, {parameter: value})
                assert (status, code, details.get("parameter")) == (400, "invalid_request", parameter), (url, value)
                if parameter == "action":
                    assert details["allowed"] == sorted(ACTIONS)
    for parameter in ("from", "to"):
        status, code, details = await refusal(client, auditor, "/v1/audit/summary", {parameter: "never"})
        assert (status, code, details.get("parameter")) == (400, "invalid_request", parameter)
    # Bounds and the shared grammar's other spellings are accepted.
    for params in ({"limit": "1"}, {"limit": "1000"}, {"success": "1"}, {"success": "FALSE"},
                   {"from": "2026-01-01T00:00:00+02:00"}, {"action": " read , write "}):
        for url in LIST_URLS:
            response = await client.get(url, params=params, headers=bearer(auditor))
            assert response.status == 200, (url, params, await response.text())


async def test_a_cursor_from_another_list_or_altered_is_refused(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t, auditor = token(), token("audit:read")
    for n in range(3):
        await client.put(f"/v1/secrets/app/q{n}", json={"data": {"k": "v"}}, headers=bearer(t))
        await client.get("/v1/secrets/app/q", headers=bearer(t))
    await caught_up(container)
    listing = await client.get("/v1/secrets", params={"prefix": "app/", "limit": "1"}, headers=bearer(t))
    secrets_cursor = (await listing.json())["cursor"]
    first = await logs(client, auditor, "?limit=1")
    seq = first["logs"][0]["sequence"]
    forged = {
        "the secrets listing's": secrets_cursor,
        "the exports listing's": cursor_of({"before": "exp_" + "0" * 26}),
        "seq as text": cursor_of({"seq": str(seq)}),
        "seq zero": cursor_of({"seq": 0}),
        "seq negative": cursor_of({"seq": -seq}),
        "seq boolean": cursor_of({"seq": True}),
        "seq fraction": cursor_of({"seq": seq - 0.5}),
        "seq beyond a bigint": cursor_of({"seq": 2**63}),
        "seq beyond 64 bits": cursor_of({"seq": 2**64}),
        "an extra field": cursor_of({"seq": seq, "chain": OTHER_TENANT}),
        "not an object": cursor_of([seq]),
        "empty": "",
        "not base64": "%%%",
        "not JSON": base64.urlsafe_b64encode(b"seq=5").decode(),
    }
    for url in LIST_URLS:
        for name, cursor in forged.items():
            status, code, details = await refusal(client, auditor, url, {"cursor": cursor})
            assert (status, code, details.get("parameter")) == (400, "invalid_cursor", "cursor"), (url, name)
        resumed = await client.get(url, params={"cursor": first["cursor"]}, headers=bearer(auditor))
        assert resumed.status == 200
        assert all(entry["sequence"] < seq for entry in (await resumed.json())["logs"])


async def test_trails_page_with_their_filters_and_keep_their_summary(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    # The auditor is someone else: its own audited reads must not land in the trail it pages through.
    t, auditor = token(), token("audit:read", identity="user:auditor@acme.example")
    await client.put("/v1/secrets/app/paged", json={"data": {"k": "v"}}, headers=bearer(t))
    for _ in range(4):
        await client.get("/v1/secrets/app/paged", headers=bearer(t))
    await client.get("/v1/secrets/app/other", headers=bearer(t))
    await caught_up(container)
    for url, key in (("/v1/audit/secrets/app/paged", "path"),
                     ("/v1/audit/identities/user:alice@acme.example", "identity_id")):
        seen, cursor, summaries = [], None, []
        while True:
            params = {"limit": "2", "action": "read", **({"cursor": cursor} if cursor else {})}
            page = await (await client.get(url, params=params, headers=bearer(auditor))).json()
            assert {entry["action"] for entry in page["logs"]} <= {"read"} and key in page
            seen += [entry["sequence"] for entry in page["logs"]]
            summaries.append(page["summary"])
            if not page["has_more"]:
                break
            cursor = page["cursor"]
        assert seen == sorted(set(seen), reverse=True)
        assert all(summary == summaries[0] for summary in summaries)  # the summary ignores the page's filters
    trail = await (await client.get("/v1/audit/secrets/app/paged", headers=bearer(auditor))).json()
    assert trail["summary"]["by_action"] == {"read": 4, "write": 1}
    for url, code in (("/v1/audit/identities/nocolon", "invalid_request"),
                      ("/v1/audit/identities/a:", "invalid_request"), ("/v1/audit/secrets/App/Bad", "invalid_path")):
        response = await client.get(url, headers=bearer(auditor))
        assert response.status == 400 and (await response.json())["error"]["code"] == code, url


async def test_the_summary_covers_its_window(client: TestClient, token: TokenFactory, container: Container) -> None:
    auditor = token("audit:read")
    await client.put("/v1/secrets/app/window", json={"data": {"k": "v"}}, headers=bearer(token()))
    await caught_up(container)
    everything = await (await client.get("/v1/audit/summary", headers=bearer(auditor))).json()
    assert everything["from"] is None and everything["to"] is None and everything["total_events"] >= 1
    params = {"from": "2999-01-01T00:00:00+01:00", "to": "2999-02-01T00:00:00Z"}
    future = await (await client.get("/v1/audit/summary", params=params, headers=bearer(auditor))).json()
    assert (future["from"], future["to"]) == ("2998-12-31T23:00:00.000000Z", "2999-02-01T00:00:00.000000Z")
    assert future["total_events"] == 0 and future["by_action"] == {} and future["top_identities"] == []


async def test_every_audit_path_serves_the_tenant_named_in_it_and_is_itself_audited(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    await client.put("/v1/secrets/prod/here", json={"data": {"k": "v"}}, headers=bearer(token()))
    await client.put("/v1/secrets/dev/there", json={"data": {"k": "v"}}, headers=bearer(token(tenant=OTHER_TENANT)))
    await caught_up(container)
    admin = token("audit:read", roles=("partner_admin",), identity="user:partner@acme.example")
    suffixes = ("logs", "secrets/dev/there", "identities/user:alice@acme.example", "summary", "verify")
    request_ids = {}
    for suffix in suffixes:
        response = await client.get(f"/v1/t/{OTHER_TENANT}/audit/{suffix}", headers=bearer(admin))
        assert response.status == 200, (suffix, await response.text())
        request_ids[suffix] = response.headers["X-Request-ID"]
        body = await response.json()
        assert "prod/here" not in str(body)
        if suffix == "verify":
            assert body["tenant_id"] == OTHER_TENANT and body["valid"] is True
    dev = await (await client.get(f"/v1/t/{OTHER_TENANT}/audit/secrets/dev/there", headers=bearer(admin))).json()
    assert [entry["action"] for entry in dev["logs"]] == ["write"]
    user = token("audit:read")
    for suffix in suffixes:
        response = await client.get(f"/v1/t/{OTHER_TENANT}/audit/{suffix}", headers=bearer(user))
        assert response.status == 403 and (await response.json())["error"]["code"] == "tenant_access_denied"
        lacking = await client.get(f"/v1/audit/{suffix}", headers=bearer(token()))
        assert lacking.status == 403 and (await lacking.json())["error"]["code"] == "insufficient_scope"
    await caught_up(container)
    recorded = {entry["request_id"]: entry["action"]
                for entry in (await logs(client, token("audit:read", tenant=OTHER_TENANT), "?limit=1000"))["logs"]}
    assert {suffix: recorded.get(request_ids[suffix]) for suffix in suffixes} == {
        "logs": "audit_read", "secrets/dev/there": "audit_read", "identities/user:alice@acme.example": "audit_read",
        "summary": "audit_read", "verify": "audit_verify",
    }


async def test_every_change_is_audited_with_the_status_its_client_got(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    """A command commits its access record with itself, before the answer exists: the status there must be the one
    the client gets, for every outcome (created, accepted, removed, unchanged) and for a refusal after the lookup."""
    admin = bearer(token(
        "secrets:read", "secrets:write", "secrets:delete", "secrets:list", "policies:read", "policies:write",
        "identity:read", "identity:admin", "audit:read", "audit:export", roles=("tenant_admin",),
    ))
    answers = []

    async def send(method: str, url: str, body: Any = None) -> Any:
        response = await client.request(method, url, json=body, headers=admin)
        answers.append(response)
        return await response.json() if response.status != 204 else None

    await send("PUT", "/v1/secrets/app/status", {"data": {"v": 1}})
    await send("PUT", "/v1/secrets/app/status", {"data": {"v": 2}})
    await send("PATCH", "/v1/secrets/app/status/metadata", {"metadata": {"owner": "x"}})
    await send("DELETE", "/v1/secrets/app/status?version=1&permanent=true")
    await send("DELETE", "/v1/secrets/app/status")
    await send("POST", "/v1/secrets/app/status/restore")
    policy = await send("POST", "/v1/policies", {"name": "p", "rules": [{"path_pattern": "app/**",
                                                                          "permissions": ["read"]}]})
    await send("PATCH", f"/v1/policies/{policy['id']}", {"description": "d"})
    binding = await send("POST", f"/v1/policies/{policy['id']}/bindings",
                         {"identity_type": "service_account", "identity_id": "sa:x"})
    await send("DELETE", f"/v1/policies/{policy['id']}/bindings/{binding['id']}")
    await send("DELETE", f"/v1/policies/{policy['id']}")
    user = await send("POST", f"/v1/identity/tenants/{TENANT}/users", {"email": "status@acme.example"})
    group = await send("POST", f"/v1/identity/tenants/{TENANT}/groups", {"name": "status"})
    member = f"/v1/identity/groups/{group['id']}/members/{user['id']}"
    await send("PUT", member)
    await send("PUT", member)  # already a member: 200
    await send("DELETE", member)  # 204
    await send("DELETE", member)  # no longer a member: 404, nothing committed
    await send("DELETE", f"/v1/identity/users/{user['id']}")
    await send("DELETE", f"/v1/identity/groups/{group['id']}")
    await send("POST", "/v1/audit/export", {"from": "2026-01-01T00:00:00Z", "to": "2026-01-02T00:00:00Z",
                                            "format": "jsonl", "destination": {"type": "local", "prefix": "s"}})
    statuses = [response.status for response in answers]
    assert statuses == [201, 200, 200, 200, 200, 200, 201, 200, 201, 200, 200, 201, 201, 201, 200, 204, 404, 204,
                        204, 202], statuses
    await caught_up(container)
    for response in answers:
        request_id = response.headers["X-Request-ID"]
        [entry] = (await (await client.get("/v1/audit/logs", params={"request_id": request_id},
                                           headers=admin)).json())["logs"]
        assert (entry["status"], entry["success"]) == (response.status, response.status < 400), (response.url, entry)
