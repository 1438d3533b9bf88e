"""Forensic reads (``?as_of=T``): what was true at time T, answered from the event history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from tests.e2e.conftest import ALL_SECRET_SCOPES, OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import caught_up
from tests.helpers import instant_between_steps

ALICE = "user:alice@acme.example"
BOB = "user:bob@acme.example"
# Past values are a forensic right: `audit:read` besides the secrets scopes (docs/api-decisions.md).
FORENSIC = (*ALL_SECRET_SCOPES, "audit:read")


async def get(client: TestClient, token: str, url: str, as_of: datetime | str | None, **params: Any) -> tuple[int, Any]:
    query = {key: str(value) for key, value in params.items()}
    if as_of is not None:
        query["as_of"] = as_of if isinstance(as_of, str) else as_of.isoformat()
    response = await client.get(url, params=query, headers=bearer(token))
    return response.status, await response.json()


async def ok(client: TestClient, token: str, method: str, url: str, **kwargs: Any) -> None:
    response = await client.request(method, url, headers=bearer(token), **kwargs)
    assert response.status in (200, 201), await response.text()


async def test_as_of_reads_return_exactly_what_was_true_at_each_point(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    alice, bob = token(*FORENSIC, identity=ALICE), token(*FORENSIC, identity=BOB)
    url = "/v1/secrets/app/db"
    t0 = await instant_between_steps()
    await ok(client, alice, "PUT", url, json={"data": {"pw": "canary-one"}, "metadata": {"description": "first"}})
    t1 = await instant_between_steps()
    await ok(client, bob, "PUT", url, json={"data": {"pw": "canary-two"}})
    t2 = await instant_between_steps()
    await ok(client, alice, "PATCH", url + "/metadata", json={"metadata": {"owner": "team-b"}})
    t3 = await instant_between_steps()
    await ok(client, alice, "DELETE", url)
    t4 = await instant_between_steps()
    await ok(client, bob, "POST", url + "/restore")
    t5 = await instant_between_steps()
    await ok(client, alice, "DELETE", url, params={"version": "1", "permanent": "true"})
    t6 = await instant_between_steps()

    _, missing = await get(client, alice, "/v1/secrets/app/never", None)
    for path in (url, url + "/metadata", url + "/versions"):
        status, body = await get(client, alice, path, t0)
        assert status == 404 and body["error"]["code"] == "secret_not_found", body
        assert body["error"]["message"] == missing["error"]["message"]

    # t1: version 1 was current, written by alice; it has been destroyed since, so its value stays unreadable.
    status, body = await get(client, alice, url, t1)
    assert status == 404 and body["error"]["code"] == "version_not_found" and body["error"]["details"]["destroyed"]
    assert "canary" not in str(body)
    status, meta = await get(client, alice, url + "/metadata", t1)
    assert status == 200 and meta["current_version"] == 1 and meta["version_count"] == 1
    assert meta["metadata"] == {"description": "first"} and meta["created_by"] == ALICE and meta["updated_by"] == ALICE
    assert meta["as_of"] == t1.isoformat().replace("+00:00", "Z") and meta["deleted"] is False
    status, versions = await get(client, alice, url + "/versions", t1)
    assert [(v["version"], v["destroyed"], v["current"]) for v in versions["versions"]] == [(1, False, True)]

    # t2: version 2 current (bob's), version 1 still live then, but never readable now.
    status, body = await get(client, alice, url, t2)
    assert status == 200, body
    assert body["data"] == {"pw": "canary-two"} and body["version"] == 2 and body["current_version"] == 2
    assert body["version_created_by"] == BOB and body["metadata"] == {"description": "first"}
    assert body["as_of"].endswith("Z") and body["version_created_at"] < body["as_of"]
    status, body = await get(client, alice, url, t2, version=1)
    assert status == 404 and body["error"]["details"]["destroyed"] is True and "canary" not in str(body)
    status, versions = await get(client, alice, url + "/versions", t2)
    assert [(v["version"], v["destroyed"], v["current"]) for v in versions["versions"]] == [
        (2, False, True), (1, False, False)]
    assert [v["created_by"] for v in versions["versions"]] == [BOB, ALICE]

    # t3: the metadata patch.
    status, body = await get(client, alice, url, t3)
    assert status == 200 and body["metadata"] == {"description": "first", "owner": "team-b"} and body["version"] == 2
    status, meta = await get(client, alice, url + "/metadata", t3)
    assert meta["updated_by"] == ALICE and meta["version"] == 2

    # t4: soft-deleted: the value answers like a live read of a deleted secret did; the metadata shows the delete.
    status, body = await get(client, alice, url, t4)
    assert status == 404 and body["error"]["code"] == "secret_not_found" and body["error"]["details"]["deleted"]
    status, meta = await get(client, alice, url + "/metadata", t4)
    assert status == 200 and meta["deleted"] is True and t3.isoformat() < meta["deleted_at"].replace("Z", "+00:00")

    # t5: restored by bob.
    status, body = await get(client, alice, url, t5)
    assert status == 200 and body["data"] == {"pw": "canary-two"}
    status, meta = await get(client, alice, url + "/metadata", t5)
    assert meta["deleted"] is False and meta["updated_by"] == BOB

    # t6: version 1 destroyed; as of now, the history agrees with the read model.
    status, versions = await get(client, alice, url + "/versions", t6)
    assert [(v["version"], v["destroyed"]) for v in versions["versions"]] == [(2, False), (1, True)]
    assert versions["versions"][1]["destroyed_at"] is not None
    status, live_versions = await get(client, alice, url + "/versions", None)
    assert {**versions, "as_of": None} == {**live_versions, "as_of": None}
    status, meta = await get(client, alice, url + "/metadata", t6)
    _, live_meta = await get(client, alice, url + "/metadata", None)
    assert {**meta, "as_of": None, "last_accessed_at": None} == {**live_meta, "as_of": None, "last_accessed_at": None}
    status, body = await get(client, alice, url, t6, version=3)
    assert status == 404 and body["error"]["code"] == "version_not_found"
    status, body = await get(client, alice, url, t6, version=1)
    assert status == 404 and body["error"]["details"]["destroyed"] is True

    # The same handlers under the tenant prefix; scopes as for live reads.
    status, body = await get(client, alice, f"/v1/t/{TENANT}/secrets/app/db", t2.isoformat().replace("+00:00", "Z"))
    assert status == 200 and body["data"] == {"pw": "canary-two"}
    status, body = await get(client, token("secrets:list"), url, t2)
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, body = await get(client, token("secrets:list"), url + "/versions", t2)
    assert status == 200


async def test_bad_as_of_is_400_and_forensic_reads_are_audited(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    t = token(*FORENSIC)
    await ok(client, t, "PUT", "/v1/secrets/app/key", json={"data": {"k": "v"}})
    future = datetime.now(UTC) + timedelta(hours=1)
    for path in ("/v1/secrets/app/key", "/v1/secrets/app/key/metadata", "/v1/secrets/app/key/versions"):
        for raw in (future.isoformat(), "yesterday", "2024-13-01T00:00:00Z", ""):
            status, body = await get(client, t, path, raw)
            assert status == 400, (path, raw, body)
            assert body["error"]["code"] == "invalid_request" and body["error"]["details"]["parameter"] == "as_of"

    now = await instant_between_steps()
    response = await client.get("/v1/secrets/app/key", params={"as_of": now.isoformat()}, headers=bearer(t))
    assert response.status == 200 and (await response.json())["data"] == {"k": "v"}
    await caught_up(container)
    logs = await client.get(
        "/v1/audit/logs", params={"request_id": response.headers["X-Request-ID"]}, headers=bearer(token("audit:read"))
    )
    [entry] = (await logs.json())["logs"]
    assert entry["extra_data"] == {"as_of": now.isoformat().replace("+00:00", "Z"), "version": 1}


async def test_as_of_respects_tenant_isolation_and_partner_secrets(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    mine = token()
    await ok(client, mine, "PUT", "/v1/secrets/app/db", json={"data": {"pw": "tenant-canary"}})
    admin = token(roles=("partner_admin",))
    await ok(client, admin, "PUT", "/v1/partner/secrets/shared/cert", json={"data": {"pem": "partner-canary"}})
    t = await instant_between_steps()

    other = token(*FORENSIC, tenant=OTHER_TENANT)
    _, missing = await get(client, other, "/v1/secrets/app/never", None)
    for path in ("/v1/secrets/app/db", "/v1/secrets/app/db/metadata", "/v1/secrets/app/db/versions"):
        status, body = await get(client, other, path, t)
        assert status == 404 and body["error"]["code"] == "secret_not_found", body
        assert body["error"]["message"] == missing["error"]["message"] and "canary" not in str(body)
    status, body = await get(
        client, token(*FORENSIC, tenant=OTHER_TENANT, roles=("partner_admin",)), f"/v1/t/{OTHER_TENANT}/secrets/app/db",
        t,
    )
    assert status == 404

    # Partner secrets: their past values are for the partner's admins (in any of its tenants); anyone else is refused
    # before anything is looked up. They are a separate namespace.
    status, body = await get(client, other, "/v1/partner/secrets/shared/cert", t)
    assert status == 403 and body["error"]["code"] == "access_denied" and "canary" not in str(body)
    partner_admin_elsewhere = token(*FORENSIC, tenant=OTHER_TENANT, roles=("partner_admin",))
    status, body = await get(client, partner_admin_elsewhere, "/v1/partner/secrets/shared/cert", t)
    assert status == 200 and body["data"] == {"pem": "partner-canary"} and body["version_created_by"] == ALICE
    status, body = await get(client, other, "/v1/secrets/shared/cert", t)
    assert status == 404
    foreign = token(*FORENSIC, tenant="tnt_globex_prod", partner="ptn_globex", roles=("partner_admin",))
    status, body = await get(client, foreign, "/v1/partner/secrets/shared/cert", t)
    assert status == 404 and PARTNER not in str(body)
    assert (await get(client, other, "/v1/partner/secrets/shared/cert", None))[0] == 200  # the present value


async def test_a_past_value_needs_the_forensic_right_not_plain_read(client: TestClient, token: TokenFactory) -> None:
    """``read`` on a path reads its value now; reading what it held in the past (a soft-deleted secret's value,
    say) needs ``audit:read`` too. Past metadata and versions stay with their live rights."""
    reader = token()  # every secrets scope and tenant_admin: read on every path, but no audit:read
    await ok(client, reader, "PUT", "/v1/secrets/app/gone", json={"data": {"pw": "deleted-canary"}})
    t = await instant_between_steps()
    await ok(client, reader, "DELETE", "/v1/secrets/app/gone")
    for path in ("/v1/secrets/app/gone", "/v1/secrets/app/never-existed", f"/v1/t/{TENANT}/secrets/app/gone"):
        status, body = await get(client, reader, path, t)
        assert status == 403 and body["error"]["code"] == "insufficient_scope", body
        assert body["error"]["details"]["required_scope"] == "audit:read" and "canary" not in str(body)
    for path in ("/v1/secrets/app/gone/metadata", "/v1/secrets/app/gone/versions"):
        assert (await get(client, reader, path, t))[0] == 200
    status, body = await get(client, token(*FORENSIC), "/v1/secrets/app/gone", t)
    assert status == 200 and body["data"] == {"pw": "deleted-canary"}


async def test_as_of_before_anything_datetime_can_hold_in_utc_is_invalid(
    client: TestClient, token: TokenFactory
) -> None:
    t = token(*FORENSIC)
    await ok(client, t, "PUT", "/v1/secrets/app/db", json={"data": {"pw": "canary"}})
    for path in ("/v1/secrets/app/db", "/v1/secrets/app/db/metadata", "/v1/secrets/app/db/versions"):
        status, body = await get(client, t, path, "0001-01-01T00:00:00+14:00")
        assert (status, body["error"]["code"]) == (400, "invalid_request"), path
