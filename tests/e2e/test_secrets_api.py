"""The Secrets API over HTTP: the quickstart, versions, metadata, listing, lifecycle and batch reads."""

from __future__ import annotations

import asyncio
import base64

from aiohttp.test_utils import TestClient

from tests.e2e.conftest import OTHER_TENANT, TokenFactory, bearer

CREDENTIALS = {"client_id": "3MVG9-abc", "client_secret": "s3cr3t-value-1"}
PATH = "environments/production/salesforce/api-credentials"


async def put(client: TestClient, token: str, path: str, body: dict, **kwargs: object):  # type: ignore[no-untyped-def]
    return await client.put(f"/v1/secrets/{path}", json=body, headers=bearer(token), **kwargs)


async def test_quickstart_flow(client: TestClient, token: TokenFactory) -> None:
    t = token("secrets:read", "secrets:write")
    who = await client.get("/v1/auth/whoami", headers=bearer(t))
    assert who.status == 200
    body = await who.json()
    assert body["identity_id"] == "user:alice@acme.example"
    assert body["identity_type"] == "user"
    assert body["tenant_id"] == "tnt_acme_prod" and body["partner_id"] == "ptn_acme"
    assert body["scopes"] == ["secrets:read", "secrets:write"]

    written = await put(
        client,
        t,
        PATH,
        {"data": CREDENTIALS, "secret_type": "json",
         "metadata": {"description": "SF", "tags": ["salesforce", "production"]}},
    )
    assert written.status == 201
    meta = await written.json()
    assert meta["version"] == 1 and meta["path"] == PATH and "data" not in meta
    assert meta["created_at"].endswith("Z") and "." in meta["created_at"]

    read = await client.get(f"/v1/secrets/{PATH}", headers=bearer(t))
    assert read.status == 200
    secret = await read.json()
    assert secret["data"] == CREDENTIALS
    assert secret["secret_type"] == "json" and secret["version"] == 1
    assert secret["metadata"] == {"description": "SF", "tags": ["salesforce", "production"]}
    assert read.headers["X-Request-ID"].startswith("req_")


async def test_every_write_is_a_new_version_and_old_versions_stay_readable(
    client: TestClient, token: TokenFactory
) -> None:
    t = token()
    for n in range(1, 4):
        response = await put(client, t, "app/db/password", {"data": {"password": f"pw-{n}"}})
        assert response.status == (201 if n == 1 else 200)
        assert (await response.json())["version"] == n
    latest = await (await client.get("/v1/secrets/app/db/password", headers=bearer(t))).json()
    assert latest["data"] == {"password": "pw-3"} and latest["version"] == 3
    second = await (await client.get("/v1/secrets/app/db/password?version=2", headers=bearer(t))).json()
    assert second["data"] == {"password": "pw-2"} and second["version"] == 2 and second["current_version"] == 3
    missing = await client.get("/v1/secrets/app/db/password?version=9", headers=bearer(t))
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "version_not_found"
    versions = await (await client.get("/v1/secrets/app/db/password/versions", headers=bearer(t))).json()
    assert [v["version"] for v in versions["versions"]] == [3, 2, 1]
    assert versions["versions"][0]["current"] is True


async def test_max_versions_ages_out_old_versions(client: TestClient, token: TokenFactory) -> None:
    t = token()
    for n in range(1, 5):
        await put(client, t, "app/key", {"data": {"k": str(n)}, "options": {"max_versions": 2}})
    versions = await (await client.get("/v1/secrets/app/key/versions", headers=bearer(t))).json()
    assert [v["version"] for v in versions["versions"]] == [4, 3]
    gone = await client.get("/v1/secrets/app/key?version=1", headers=bearer(t))
    assert (await gone.json())["error"]["code"] == "version_not_found"


async def test_cas_detects_a_stale_writer(client: TestClient, token: TokenFactory) -> None:
    t = token()
    assert (await put(client, t, "app/cas", {"data": {"v": "1"}, "options": {"cas": 0}})).status == 201
    again = await put(client, t, "app/cas", {"data": {"v": "x"}, "options": {"cas": 0}})
    assert again.status == 409 and (await again.json())["error"]["code"] == "version_conflict"
    assert (await put(client, t, "app/cas", {"data": {"v": "2"}, "options": {"cas": 1}})).status == 200
    stale = await put(client, t, "app/cas", {"data": {"v": "y"}, "options": {"cas": 1}})
    assert stale.status == 409
    assert (await (await client.get("/v1/secrets/app/cas", headers=bearer(t))).json())["data"] == {"v": "2"}


async def test_concurrent_writes_are_never_lost_or_duplicated(client: TestClient, token: TokenFactory) -> None:
    t = token()
    responses = await asyncio.gather(*(put(client, t, "app/hot", {"data": {"n": str(i)}}) for i in range(20)))
    assert {r.status for r in responses} <= {200, 201, 409}
    versions = sorted([(await r.json())["version"] for r in responses if r.status in (200, 201)])
    assert versions == list(range(1, len(versions) + 1))
    assert len(versions) == 20  # writers to one secret queue; none is turned away
    listed = await (await client.get("/v1/secrets/app/hot/versions", headers=bearer(t))).json()
    assert listed["current_version"] == len(versions)


async def test_metadata_needs_only_list_and_patch_merges(client: TestClient, token: TokenFactory) -> None:
    writer = token()
    await put(client, writer, "app/meta", {"data": {"k": "v"}, "metadata": {"tags": ["a"], "owner": "team:core"}})
    lister = token("secrets:list")
    meta = await client.get("/v1/secrets/app/meta/metadata", headers=bearer(lister))
    assert meta.status == 200
    document = await meta.json()
    assert document["version_count"] == 1 and document["metadata"]["owner"] == "team:core" and "data" not in document
    denied = await client.get("/v1/secrets/app/meta", headers=bearer(lister))
    assert denied.status == 403 and (await denied.json())["error"]["code"] == "insufficient_scope"

    patched = await client.patch(
        "/v1/secrets/app/meta/metadata",
        json={"metadata": {"tags": ["a", "b"], "owner": None, "cost_center": "42"}, "expires_in": "30d"},
        headers=bearer(writer),
    )
    assert patched.status == 200
    after = await (await client.get("/v1/secrets/app/meta/metadata", headers=bearer(lister))).json()
    assert after["metadata"] == {"tags": ["a", "b"], "cost_center": "42"}
    assert after["expires_at"] is not None and after["version"] == 1


async def test_listing_by_prefix_with_cursor_pagination(client: TestClient, token: TokenFactory) -> None:
    t = token()
    paths = [f"env/prod/svc{n:02d}/key" for n in range(25)] + ["env/dev/x", "env/product/y"]
    for path in paths:
        await put(client, t, path, {"data": {"k": "v"}})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = "prefix=env/prod/&limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = await (await client.get(f"/v1/secrets?{query}", headers=bearer(t))).json()
        pages += 1
        seen += [s["path"] for s in page["secrets"]]
        assert all("data" not in s for s in page["secrets"])
        if not page["has_more"]:
            assert page["cursor"] is None
            break
        cursor = page["cursor"]
    assert pages == 3 and seen == sorted(p for p in paths if p.startswith("env/prod/"))

    bad = await client.get("/v1/secrets?prefix=env/prod/&cursor=not-a-cursor", headers=bearer(t))
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_cursor"
    first = await (await client.get("/v1/secrets?prefix=env/prod/&limit=1", headers=bearer(t))).json()
    other_prefix = await client.get(f"/v1/secrets?prefix=env/dev&cursor={first['cursor']}", headers=bearer(t))
    assert (await other_prefix.json())["error"]["code"] == "invalid_cursor"
    for query in ("limit=0", "limit=1001", "limit=x"):
        response = await client.get(f"/v1/secrets?{query}", headers=bearer(t))
        assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_request"


async def test_soft_delete_restore_and_permanent_destroy(client: TestClient, token: TokenFactory) -> None:
    t = token()
    await put(client, t, "app/life", {"data": {"v": "1"}})
    await put(client, t, "app/life", {"data": {"v": "2"}})
    deleted = await client.delete("/v1/secrets/app/life", headers=bearer(t))
    assert deleted.status == 200
    body = await deleted.json()
    assert body["permanent"] is False and body["recoverable_until"] > body["deleted_at"]

    gone = await client.get("/v1/secrets/app/life", headers=bearer(t))
    assert gone.status == 404 and (await gone.json())["error"]["details"]["deleted"] is True
    blocked = await put(client, t, "app/life", {"data": {"v": "3"}})
    assert blocked.status == 409 and (await blocked.json())["error"]["code"] == "secret_exists"
    listed = await (await client.get("/v1/secrets?prefix=app/", headers=bearer(t))).json()
    assert listed["secrets"] == []
    with_deleted = await (await client.get("/v1/secrets?prefix=app/&include_deleted=true", headers=bearer(t))).json()
    assert [s["path"] for s in with_deleted["secrets"]] == ["app/life"]

    restored = await client.post("/v1/secrets/app/life/restore", headers=bearer(t))
    assert restored.status == 200
    assert (await (await client.get("/v1/secrets/app/life", headers=bearer(t))).json())["data"] == {"v": "2"}

    destroyed = await client.delete("/v1/secrets/app/life?permanent=true", headers=bearer(t))
    assert (await destroyed.json())["destroyed_versions"] == [1, 2]
    assert (await client.get("/v1/secrets/app/life", headers=bearer(t))).status == 404
    assert (await client.post("/v1/secrets/app/life/restore", headers=bearer(t))).status == 404
    reborn = await put(client, t, "app/life", {"data": {"v": "new"}})
    assert reborn.status == 201 and (await reborn.json())["version"] == 3  # numbers are never reused


async def test_destroying_one_version(client: TestClient, token: TokenFactory) -> None:
    t = token()
    for n in (1, 2, 3):
        await put(client, t, "app/one", {"data": {"v": str(n)}})
    soft = await client.delete("/v1/secrets/app/one?version=2", headers=bearer(t))
    assert soft.status == 400
    response = await client.delete("/v1/secrets/app/one?version=2&permanent=true", headers=bearer(t))
    assert response.status == 200
    gone = await client.get("/v1/secrets/app/one?version=2", headers=bearer(t))
    assert gone.status == 404 and (await gone.json())["error"]["code"] == "version_not_found"
    assert (await (await client.get("/v1/secrets/app/one?version=1", headers=bearer(t))).json())["data"] == {"v": "1"}
    versions = await (await client.get("/v1/secrets/app/one/versions", headers=bearer(t))).json()
    assert [v["destroyed"] for v in versions["versions"]] == [False, True, False]
    again = await client.delete("/v1/secrets/app/one?version=2&permanent=true", headers=bearer(t))
    assert again.status == 404


async def test_batch_read_partial_success_and_fail_fast(client: TestClient, token: TokenFactory) -> None:
    t = token()
    await put(client, t, "integrations/a", {"data": {"k": "a"}, "secret_type": "api_key"})
    await put(client, t, "integrations/b", {"data": {"k": "b"}})
    response = await client.post(
        "/v1/secrets/batch",
        json={"paths": ["integrations/a", "integrations/b", "integrations/missing", "Bad/Path"]},
        headers=bearer(t),
    )
    assert response.status == 200
    body = await response.json()
    assert body["secrets"]["integrations/a"] == {"data": {"k": "a"}, "version": 1, "secret_type": "api_key"}
    assert body["errors"]["integrations/missing"]["code"] == "secret_not_found"
    assert body["errors"]["Bad/Path"]["code"] == "invalid_path"

    with_metadata = await (
        await client.post(
            "/v1/secrets/batch",
            json={"paths": ["integrations/a"], "options": {"include_metadata": True}},
            headers=bearer(t),
        )
    ).json()
    assert "metadata" in with_metadata["secrets"]["integrations/a"]

    fail_fast = await client.post(
        "/v1/secrets/batch",
        json={"paths": ["integrations/a", "integrations/missing"], "options": {"fail_fast": True}},
        headers=bearer(t),
    )
    assert fail_fast.status == 404 and (await fail_fast.json())["error"]["code"] == "secret_not_found"
    too_many = await client.post("/v1/secrets/batch", json={"paths": [f"p/{n}" for n in range(101)]}, headers=bearer(t))
    assert too_many.status == 422 and (await too_many.json())["error"]["code"] == "validation_error"


async def test_batch_metadata_expands_wildcards(client: TestClient, token: TokenFactory) -> None:
    t = token()
    for path in ("svc/a/db", "svc/b/db", "svc/b/cache", "other/db"):
        await put(client, t, path, {"data": {"k": "v"}})
    lister = token("secrets:list")
    body = await (
        await client.post(
            "/v1/secrets/batch/metadata",
            json={"paths": ["svc/*/db", "other/db"], "options": {"expand_wildcards": True}},
            headers=bearer(lister),
        )
    ).json()
    assert sorted(body["secrets"]) == ["other/db", "svc/a/db", "svc/b/db"]
    assert all("data" not in item for item in body["secrets"].values())


async def test_last_accessed_at_follows_reads(client: TestClient, token: TokenFactory) -> None:
    t = token()
    await put(client, t, "app/touch", {"data": {"k": "v"}})
    before = await (await client.get("/v1/secrets/app/touch/metadata", headers=bearer(t))).json()
    assert before["last_accessed_at"] is None
    await client.get("/v1/secrets/app/touch", headers=bearer(t))
    after = await (await client.get("/v1/secrets/app/touch/metadata", headers=bearer(t))).json()
    assert after["last_accessed_at"] is not None


async def test_a_recreated_secret_does_not_inherit_last_access(client: TestClient, token: TokenFactory) -> None:
    t = token()
    await put(client, t, "app/reborn", {"data": {"k": "old"}})
    await client.get("/v1/secrets/app/reborn", headers=bearer(t))
    await client.delete("/v1/secrets/app/reborn?permanent=true", headers=bearer(t))
    await put(client, t, "app/reborn", {"data": {"k": "new"}})
    meta = await (await client.get("/v1/secrets/app/reborn/metadata", headers=bearer(t))).json()
    assert meta["last_accessed_at"] is None


async def test_a_listing_cursor_is_sealed_to_its_tenant_and_prefix(client: TestClient, token: TokenFactory) -> None:
    mine = token()
    for path in ("app/a", "app/b", "app/c"):
        await put(client, mine, path, {"data": {"k": "v"}})
    body = await (await client.get("/v1/secrets?prefix=app/&limit=1", headers=bearer(mine))).json()
    cursor = body["cursor"]
    sealed = bytearray(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert b"app/a" not in sealed
    assert (await client.get(f"/v1/secrets?prefix=app/&limit=1&cursor={cursor}", headers=bearer(mine))).status == 200
    sealed[-1] ^= 1
    tampered = base64.urlsafe_b64encode(bytes(sealed)).decode().rstrip("=")
    elsewhere = token(tenant=OTHER_TENANT)
    for caller, candidate in ((mine, tampered), (elsewhere, cursor)):
        response = await client.get(f"/v1/secrets?prefix=app/&limit=1&cursor={candidate}", headers=bearer(caller))
        assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_cursor"
