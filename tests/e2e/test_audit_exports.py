"""Audit exports end to end: the API, the background worker, a real S3-compatible server (moto) on loopback, and the
local export directory."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from commands.audit_exports import RequestExport
from commands.secrets import Actor
from scaivault.audit.exports import _lock_key
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.http.app import create_app
from tests.e2e.conftest import OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.test_audit import caught_up

ACCESS_KEY = "AKIAEXPORTCANARY0001"
SECRET_KEY = "export-secret-key-canary-5d1f0a"
WRITER_SCOPES = ("secrets:read", "secrets:write", "secrets:list", "audit:read", "audit:export")


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def s3(endpoint: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@dataclass
class Server:
    client: TestClient
    container: Container


@pytest.fixture
async def allowing(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Server]:
    """A server whose egress guard lets exports reach loopback (where the test's S3 server listens)."""
    container = await build_container(settings.model_copy(update={"egress_allow": "127.0.0.0/8"}))
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, OTHER_TENANT)
    try:
        async with TestClient(TestServer(create_app(container=container))) as client:
            yield Server(client, container)
    finally:
        await container.close()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def store_credentials(client: TestClient, token: str, endpoint: str, path: str = "infra/audit-s3", **extra: Any) -> str:
    data = {"access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "region": "us-east-1", "endpoint_url": endpoint}
    data.update(extra)
    data = {key: value for key, value in data.items() if value is not None}
    response = await client.put(f"/v1/secrets/{path}", json={"data": data}, headers=bearer(token))
    assert response.status == 201, await response.text()
    return path


async def create_export(client: TestClient, token: str, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = await client.post("/v1/audit/export", json=body, headers=bearer(token))
    assert response.status == status, await response.text()
    return await response.json()


async def finished(client: TestClient, token: str, export_id: str) -> dict[str, Any]:
    for _ in range(300):
        response = await client.get(f"/v1/audit/exports/{export_id}", headers=bearer(token))
        assert response.status == 200, await response.text()
        document = await response.json()
        if document["status"] in ("completed", "failed"):
            return document
        await asyncio.sleep(0.05)
    raise AssertionError(f"export did not finish: {document}")


async def log_entries(client: TestClient, token: str, query: str) -> list[dict[str, Any]]:
    """The audit log API's answer for a filter, oldest first (the export's order)."""
    response = await client.get(f"/v1/audit/logs?limit=1000&{query}", headers=bearer(token))
    assert response.status == 200, await response.text()
    body = await response.json()
    assert not body["has_more"]
    return list(reversed(body["logs"]))


async def activity(client: TestClient, token: TokenFactory) -> None:
    alice, robot = token(), token(identity="sa:robot")
    for n in range(5):
        await client.put(f"/v1/secrets/app/s{n}", json={"data": {"v": n}}, headers=bearer(alice))
        await client.get(f"/v1/secrets/app/s{n}", headers=bearer(robot))
    await client.get("/v1/secrets/app/missing", headers=bearer(robot))
    await client.put("/v1/secrets/other/x", json={"data": {"v": "x"}}, headers=bearer(alice))


def check_file(body: bytes, described: dict[str, Any]) -> None:
    assert len(body) == described["bytes"]
    assert hashlib.sha256(body).hexdigest() == described["sha256"]


def flattened(entry: dict[str, Any]) -> dict[str, str]:
    def text(value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {key: text(value) for key, value in entry.items() if key != "extra_data"}


async def test_s3_exports_in_jsonl_and_csv_match_the_audit_log(
    allowing: Server, token: TokenFactory, s3_endpoint: str
) -> None:
    client, container = allowing.client, allowing.container
    exporter = token(*WRITER_SCOPES)
    s3(s3_endpoint).create_bucket(Bucket="audit-archive")
    credentials_path = await store_credentials(client, exporter, s3_endpoint)
    since = datetime.now(timezone.utc)
    await activity(client, token)
    until = datetime.now(timezone.utc)
    await caught_up(container)
    container.export_worker.records_per_file = 4  # several parts from a small log

    destination = {"type": "s3", "bucket": "audit-archive", "prefix": "acme/audit", "credentials_path": credentials_path}
    jsonl = await create_export(client, exporter, {
        "from": iso(since), "to": iso(until), "format": "jsonl",
        "filters": {"action": ["write", "read"], "path_prefix": "app/"}, "destination": destination,
    })
    as_csv = await create_export(client, exporter, {
        "from": iso(since), "to": iso(until), "format": "csv", "filters": {"success": True, "action": "read,write"},
        "destination": destination,
    })
    assert jsonl["export_id"].startswith("exp_") and jsonl["status"] == "pending"

    expected = await log_entries(client, exporter, f"from={iso(since)}&to={iso(until)}&action=write,read&path_prefix=app/")
    assert len(expected) == 11 and jsonl["estimated_records"] == 11  # 5 writes, 5 reads, 1 missing read
    document = await finished(client, exporter, jsonl["export_id"])
    assert document["status"] == "completed", document
    manifest = document["manifest"]
    assert manifest["total_records"] == 11 and manifest["format"] == "jsonl" and manifest["completed_at"].endswith("Z")
    assert [f["records"] for f in manifest["files"]] == [4, 4, 3]
    assert [f["key"] for f in manifest["files"]] == [
        f"acme/audit/{jsonl['export_id']}/part-0000{n}.jsonl" for n in (1, 2, 3)
    ]
    bucket = s3(s3_endpoint)
    exported = []
    for described in manifest["files"]:
        body = bucket.get_object(Bucket="audit-archive", Key=described["key"])["Body"].read()
        check_file(body, described)
        exported += [orjson.loads(line) for line in body.splitlines()]
    assert exported == expected  # the same entries, fields and order as the audit log API
    stored_manifest = orjson.loads(bucket.get_object(Bucket="audit-archive", Key=manifest["manifest_key"])["Body"].read())
    assert stored_manifest["files"] == manifest["files"]

    expected_csv = await log_entries(client, exporter, f"from={iso(since)}&to={iso(until)}&action=read,write&success=true")
    document = await finished(client, exporter, as_csv["export_id"])
    assert document["status"] == "completed", document
    rows: list[dict[str, str]] = []
    for described in document["manifest"]["files"]:
        body = bucket.get_object(Bucket="audit-archive", Key=described["key"])["Body"].read()
        check_file(body, described)
        part = list(csv.DictReader(io.StringIO(body.decode())))
        assert len(part) == described["records"]
        rows += part
    assert len(rows) == len(expected_csv) == document["manifest"]["total_records"] == 11  # 6 writes, 5 reads
    for row, entry in zip(rows, expected_csv, strict=True):
        assert orjson.loads(row.pop("extra_data")) == entry["extra_data"]
        assert row == flattened(entry)

    # The job's read of the credentials is in the audit log; the credentials are nowhere in the API's answers.
    await caught_up(container)
    reads = await log_entries(client, exporter, f"identity_id=system:audit-export&path_prefix={credentials_path}")
    assert {r["extra_data"]["export_id"] for r in reads} == {jsonl["export_id"], as_csv["export_id"]}
    assert reads[0]["extra_data"]["requested_by"] == "user:alice@acme.example"
    listing = await client.get("/v1/audit/exports", headers=bearer(exporter))
    text = await listing.text()
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    created = await log_entries(client, exporter, "action=export_created")
    assert [e["extra_data"]["export_id"] for e in created] == [jsonl["export_id"], as_csv["export_id"]]
    assert {e["status"] for e in created} == {202}


async def test_local_export_round_trip_and_listing(
    client: TestClient, token: TokenFactory, container: Container, settings: Settings
) -> None:
    exporter = token(*WRITER_SCOPES)
    since = datetime.now(timezone.utc) - timedelta(seconds=1)
    await activity(client, token)
    until = datetime.now(timezone.utc)
    body = {"from": iso(since), "to": iso(until), "format": "jsonl", "destination": {"type": "local", "prefix": "daily/acme"}}
    first = await create_export(client, exporter, body)
    second = await create_export(client, exporter, {**body, "format": "csv", "destination": {"type": "local"}})
    document = await finished(client, exporter, first["export_id"])
    assert document["status"] == "completed", document
    root = settings.exports_directory.resolve()
    folder = root / TENANT / "daily" / "acme" / first["export_id"]
    expected = await log_entries(client, exporter, f"from={iso(since)}&to={iso(until)}")
    lines = []
    for described in document["manifest"]["files"]:
        path = (root / TENANT / described["key"]).resolve()
        assert path.is_relative_to(root) and path.parent == folder
        assert os.stat(path).st_mode & 0o777 == 0o600
        check_file(path.read_bytes(), described)
        lines += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert lines == expected and len(lines) == 12
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "part-00001.jsonl"]  # no scratch files left
    assert (await finished(client, exporter, second["export_id"]))["status"] == "completed"
    assert (root / TENANT / second["export_id"] / "part-00001.csv").is_file()

    page = await (await client.get("/v1/audit/exports?limit=1", headers=bearer(exporter))).json()
    assert [e["export_id"] for e in page["exports"]] == [second["export_id"]] and page["has_more"]
    rest = await (await client.get(f"/v1/audit/exports?limit=1&cursor={page['cursor']}", headers=bearer(exporter))).json()
    assert [e["export_id"] for e in rest["exports"]] == [first["export_id"]] and not rest["has_more"]
    assert rest["exports"][0]["destination"] == {"type": "local", "prefix": "daily/acme"}
    bad_cursor = await client.get("/v1/audit/exports?cursor=bm9wZQ", headers=bearer(exporter))
    assert bad_cursor.status == 400 and (await bad_cursor.json())["error"]["code"] == "invalid_cursor"
    prefixed = await client.get(f"/v1/t/{TENANT}/audit/exports/{first['export_id']}", headers=bearer(exporter))
    assert prefixed.status == 200


async def test_a_symlink_inside_the_export_directory_cannot_lead_outside(
    client: TestClient, token: TokenFactory, settings: Settings, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    tenant_folder = settings.exports_directory / TENANT
    tenant_folder.mkdir(parents=True)
    (tenant_folder / "planted").symlink_to(outside, target_is_directory=True)
    exporter = token("audit:export")
    now = datetime.now(timezone.utc)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl",
            "destination": {"type": "local", "prefix": "planted/deeper"}}
    document = await finished(client, exporter, (await create_export(client, exporter, body))["export_id"])
    assert document["status"] == "failed" and "outside the export directory" in document["error"]
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    "prefix",
    ["../escape", "a/../../etc", "/etc/cron.d", "a//b", "a/./b", "..", "a/b/", "Upper", "a\\..\\b", "%2e%2e", "a b",
     "a/\u0000", "x" * 300],
)
async def test_path_traversal_in_prefix_is_refused(
    client: TestClient, token: TokenFactory, prefix: str, settings: Settings
) -> None:
    now = datetime.now(timezone.utc)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl",
            "destination": {"type": "local", "prefix": prefix}}
    answer = await create_export(client, token("audit:export"), body, status=400)
    assert answer["error"]["code"] == "invalid_config" and answer["error"]["details"]["field"] == "destination.prefix"
    assert not settings.exports_directory.exists()


async def test_invalid_requests_create_nothing(client: TestClient, token: TokenFactory, s3_endpoint: str) -> None:
    exporter = token(*WRITER_SCOPES)
    now = datetime.now(timezone.utc)
    base = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl"}

    async def refused(body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        answer = await create_export(client, exporter, body, status=status)
        assert answer["error"]["code"] == code, answer
        return answer

    for kind in ("gcs", "azure_blob"):
        answer = await refused({**base, "destination": {"type": kind, "bucket": "b", "credentials_path": "x/y"}}, 400, "invalid_config")
        assert "not available in this build" in answer["error"]["message"]
    inline = {"type": "s3", "bucket": "audit-archive", "credentials_path": "infra/s3",
              "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    answer = await refused({**base, "destination": inline}, 400, "invalid_config")
    assert SECRET_KEY not in str(answer) and ACCESS_KEY not in str(answer) and "Inline credentials" in answer["error"]["message"]
    await refused({**base, "destination": {"type": "s3", "bucket": "audit-archive", "credentials_path": "infra/none"}},
                  400, "invalid_config")  # no such secret
    await refused({**base, "destination": {"type": "s3", "bucket": "Not_A_Bucket", "credentials_path": "infra/s3"}},
                  400, "invalid_config")
    await refused({**base, "destination": {"type": "s3", "bucket": "audit-archive", "credentials_path": "../x"}},
                  400, "invalid_path")
    await refused({**base, "destination": {"type": "ftp"}}, 400, "invalid_config")
    await refused({**base, "destination": {"type": "local", "path": "/tmp"}}, 422, "validation_error")
    await refused({**base, "format": "xml", "destination": {"type": "local"}}, 422, "validation_error")
    await refused({**base, "filters": {"action": "read,steal"}, "destination": {"type": "local"}}, 422, "validation_error")
    await refused({**base, "filters": {"colour": "red"}, "destination": {"type": "local"}}, 422, "validation_error")
    await refused({**base, "from": base["to"], "to": base["from"], "destination": {"type": "local"}}, 422, "validation_error")
    await refused({"to": base["to"], "format": "csv", "destination": {"type": "local"}}, 422, "validation_error")
    listing = await (await client.get("/v1/audit/exports", headers=bearer(exporter))).json()
    assert listing["exports"] == []


async def test_the_audit_export_scope_is_required(client: TestClient, token: TokenFactory) -> None:
    reader = token("audit:read", "secrets:read")
    now = datetime.now(timezone.utc)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl", "destination": {"type": "local"}}
    for method, url in (("POST", "/v1/audit/export"), ("GET", "/v1/audit/exports"),
                        ("GET", "/v1/audit/exports/exp_00000000000000000000000000")):
        response = await client.request(method, url, json=body if method == "POST" else None, headers=bearer(reader))
        assert response.status == 403, url
        error = (await response.json())["error"]
        assert error["code"] == "insufficient_scope" and error["details"]["required_scope"] == "audit:export"


async def test_another_tenant_cannot_see_an_export(client: TestClient, token: TokenFactory) -> None:
    now = datetime.now(timezone.utc)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl", "destination": {"type": "local"}}
    mine = await create_export(client, token("audit:export"), body)
    other = token("audit:export", tenant=OTHER_TENANT)
    for export_id in (mine["export_id"], "exp_00000000000000000000000000", "not-an-export"):
        response = await client.get(f"/v1/audit/exports/{export_id}", headers=bearer(other))
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "export_not_found"
    listing = await (await client.get("/v1/audit/exports", headers=bearer(other))).json()
    assert listing["exports"] == []
    admin = token("audit:export", tenant=OTHER_TENANT, roles=("partner_admin",))
    assert (await client.get(f"/v1/t/{OTHER_TENANT}/audit/exports/{mine['export_id']}", headers=bearer(admin))).status == 404


async def test_the_egress_guard_refuses_loopback_unless_allowed(
    client: TestClient, token: TokenFactory, s3_endpoint: str
) -> None:
    exporter = token(*WRITER_SCOPES)
    s3(s3_endpoint).create_bucket(Bucket="guarded")
    port = s3_endpoint.rsplit(":", 1)[1]
    path = await store_credentials(client, exporter, f"http://localhost:{port}")
    now = datetime.now(timezone.utc)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl",
            "destination": {"type": "s3", "bucket": "guarded", "credentials_path": path}}
    export = await create_export(client, exporter, body)
    document = await finished(client, exporter, export["export_id"])
    assert document["status"] == "failed" and "manifest" not in document
    assert "loopback" in document["error"] and "SCAIVAULT_EGRESS_ALLOW" in document["error"]
    assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)
    assert s3(s3_endpoint).list_objects_v2(Bucket="guarded").get("KeyCount") == 0  # nothing reached the store


async def test_a_failing_destination_ends_failed(allowing: Server, token: TokenFactory, s3_endpoint: str) -> None:
    client = allowing.client
    exporter = token(*WRITER_SCOPES)
    good = await store_credentials(client, exporter, s3_endpoint)
    partial = await store_credentials(client, exporter, s3_endpoint, path="infra/partial", secret_access_key=None)
    now = datetime.now(timezone.utc)
    base = {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1)), "format": "csv"}
    no_bucket = await create_export(client, exporter, {
        **base, "destination": {"type": "s3", "bucket": "no-such-bucket", "credentials_path": good}})
    no_key = await create_export(client, exporter, {
        **base, "destination": {"type": "s3", "bucket": "no-such-bucket", "credentials_path": partial}})
    failed = await finished(client, exporter, no_bucket["export_id"])
    assert failed["status"] == "failed" and "NoSuchBucket" in failed["error"], failed
    incomplete = await finished(client, exporter, no_key["export_id"])
    assert incomplete["status"] == "failed" and "has no secret_access_key" in incomplete["error"]
    for document in (failed, incomplete):
        assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)


async def test_pending_exports_survive_a_restart_and_run_once_under_the_lock(
    container: Container, database_url: str, settings: Settings
) -> None:
    """No background tasks run on this container until the test starts the worker: like a server starting up
    on exports requested (or interrupted) before."""
    now = datetime.now(timezone.utc)
    request = RequestExport(
        tenant_id=TENANT, partner_id=PARTNER, format="jsonl", since=now - timedelta(hours=1), until=now, filters={},
        destination={"type": "local", "prefix": "restart"}, estimated_records=0,
    )
    actor = Actor(identity_id="user:alice@acme.example", request_id=None)
    pending = await container.audit_exports.request(request, actor)
    interrupted = await container.audit_exports.request(request, actor)
    assert (await container.audit_exports.start(interrupted.export_id)).status == "running"  # then the process died

    other_process = await asyncpg.connect(database_url)
    await other_process.execute("SELECT pg_advisory_lock($1)", _lock_key(pending.export_id))
    await container.access_recorder.start()
    await container.projections.start()
    worker = asyncio.create_task(container.export_worker.run())
    try:
        await wait_status(container, interrupted.export_id, "completed")
        await asyncio.sleep(1.2)  # a poll or more: the locked job is left to its holder
        assert await status_of(container, pending.export_id) == "pending"
        await other_process.execute("SELECT pg_advisory_unlock($1)", _lock_key(pending.export_id))
        await wait_status(container, pending.export_id, "completed")
    finally:
        await other_process.close()
        worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
    row = await container.pool.fetchrow(
        "SELECT attempts FROM scaivault_audit_exports WHERE export_id = $1", interrupted.export_id
    )
    assert row["attempts"] == 2
    history = await container.repository.history(container.pool, interrupted.id)
    assert [type(e).__name__ for e in history] == ["Requested", "Started", "Started", "Completed"]
    assert (settings.exports_directory / TENANT / "restart" / pending.export_id / "manifest.json").is_file()


async def status_of(container: Container, export_id: str) -> str:
    return await container.pool.fetchval("SELECT status FROM scaivault_audit_exports WHERE export_id = $1", export_id)


async def wait_status(container: Container, export_id: str, status: str) -> None:
    for _ in range(200):
        if await status_of(container, export_id) == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{export_id} is {await status_of(container, export_id)}, not {status}")


def test_export_files_of_other_tenants_are_apart(settings: Settings, tmp_path: Path) -> None:
    """Each tenant's local exports live in a folder of its own, under the configured directory only."""
    assert settings.exports_directory == settings.data_dir / "exports"
    configured = Settings.from_env({"SCAIVAULT_EXPORT_DIR": str(tmp_path / "elsewhere")})
    assert configured.exports_directory == tmp_path / "elsewhere"
