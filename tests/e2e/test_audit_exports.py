"""Audit exports end to end: the API, the background worker, a real S3-compatible server (moto) on loopback, and the
local export directory."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from moto.server import ThreadedMotoServer

from commands.audit_exports import RequestExport, requester_of
from projections.audit_exports.projector import project_audit_export
from scaivault.audit.exports.credentials import NOT_ALLOWED
from scaivault.audit.exports.worker import job_lock_key
from scaivault.auth.authenticator import LEEWAY
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.audit_exports import AuditExport
from scaivault.http.app import create_app
from scaivault.ids import new_id
from tests.e2e.conftest import OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import admin, caller_token, caught_up, error_document, grant
from tests.helpers import Clock, eventually

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
    run_jobs: Callable[[], None]  # wakes the export worker


async def serving(settings: Settings, *, paused: bool = False) -> AsyncIterator[Server]:
    """A server whose egress guard lets exports reach loopback (where the test's S3 server listens). ``paused``: its
    export worker runs jobs only when ``run_jobs`` is called (it is not woken by the API, and polls once an hour)."""
    container = await build_container(settings.model_copy(update={"egress_allow": "127.0.0.0/8"}))
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, OTHER_TENANT)
    worker = container.export_worker
    run_jobs = worker.wake
    if paused:
        worker.poll_seconds = 3600
        worker.wake = lambda: None  # type: ignore[method-assign]
    try:
        async with TestClient(TestServer(create_app(container=container))) as client:
            yield Server(client, container, run_jobs)
    finally:
        await container.close()


@pytest.fixture
async def allowing(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Server]:
    async for server in serving(settings):
        yield server


@pytest.fixture
async def paused(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[Server]:
    async for server in serving(settings, paused=True):
        yield server


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def store_credentials(
    client: TestClient, token: str, endpoint: str, path: str = "infra/audit-s3", **extra: Any
) -> str:
    data = {
        "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY, "region": "us-east-1", "endpoint_url": endpoint
    }
    data.update(extra)
    data = {key: value for key, value in data.items() if value is not None}
    response = await client.put(f"/v1/secrets/{path}", json={"data": data}, headers=bearer(token))
    assert response.status == 201, await response.text()
    return path


Auth = str | dict[str, str]  # a token, or the headers that carry one


def headers_of(auth: Auth) -> dict[str, str]:
    return bearer(auth) if isinstance(auth, str) else auth


async def create_export(client: TestClient, auth: Auth, body: dict[str, Any], status: int = 202) -> dict[str, Any]:
    response = await client.post("/v1/audit/export", json=body, headers=headers_of(auth))
    assert response.status == status, await response.text()
    return await response.json()


async def finished(client: TestClient, auth: Auth, export_id: str) -> dict[str, Any]:
    async def final_document() -> dict[str, Any] | None:
        response = await client.get(f"/v1/audit/exports/{export_id}", headers=headers_of(auth))
        assert response.status == 200, await response.text()
        document: dict[str, Any] = await response.json()
        return document if document["status"] in ("completed", "failed") else None

    document: dict[str, Any] = await eventually(final_document, message=f"export {export_id} did not finish")
    return document


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
    since = datetime.now(UTC)
    await activity(client, token)
    until = datetime.now(UTC)
    await caught_up(container)
    container.export_worker.records_per_file = 4  # several parts from a small log

    destination = {
        "type": "s3", "bucket": "audit-archive", "prefix": "acme/audit", "credentials_path": credentials_path
    }
    jsonl = await create_export(client, exporter, {
        "from": iso(since), "to": iso(until), "format": "jsonl",
        "filters": {"action": ["write", "read"], "path_prefix": "app/"}, "destination": destination,
    })
    as_csv = await create_export(client, exporter, {
        "from": iso(since), "to": iso(until), "format": "csv", "filters": {"success": True, "action": "read,write"},
        "destination": destination,
    })
    assert jsonl["export_id"].startswith("exp_") and jsonl["status"] == "pending"

    window = f"from={iso(since)}&to={iso(until)}"
    expected = await log_entries(client, exporter, f"{window}&action=write,read&path_prefix=app/")
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
    stored_manifest = orjson.loads(
        bucket.get_object(Bucket="audit-archive", Key=manifest["manifest_key"])["Body"].read()
    )
    assert stored_manifest["files"] == manifest["files"]

    expected_csv = await log_entries(client, exporter, f"{window}&action=read,write&success=true")
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

    # Each job read the credentials as its requester, and the read is in the audit log; the credentials are nowhere
    # in the API's answers.
    await caught_up(container)
    reads = await log_entries(
        client, exporter, f"identity_id=user:alice@acme.example&action=read&path_prefix={credentials_path}"
    )
    assert {r["extra_data"]["export_id"] for r in reads} == {jsonl["export_id"], as_csv["export_id"]}
    for read in reads:
        assert (read["method"], read["route"], read["status"], read["success"]) == ("JOB", "audit-export", 200, True)
        assert read["identity_type"] == "user" and read["secret_path"] == credentials_path
        assert read["extra_data"]["via"] == "audit-export" and read["extra_data"]["version"] == 1
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
    since = datetime.now(UTC) - timedelta(seconds=1)
    await activity(client, token)
    until = datetime.now(UTC)
    destination = {"type": "local", "prefix": "daily/acme"}
    body = {"from": iso(since), "to": iso(until), "format": "jsonl", "destination": destination}
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
    next_page = f"/v1/audit/exports?limit=1&cursor={page['cursor']}"
    rest = await (await client.get(next_page, headers=bearer(exporter))).json()
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
    now = datetime.now(UTC)
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
    now = datetime.now(UTC)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl",
            "destination": {"type": "local", "prefix": prefix}}
    response = await client.post("/v1/audit/export", json=body, headers=bearer(token("audit:export")))
    error = (await response.json())["error"]
    if "\u0000" in prefix:  # no request body may carry a NUL anywhere
        assert (response.status, error["code"]) == (422, "validation_error")
    else:
        assert (response.status, error["code"], error["details"]["field"]) == (
            400, "invalid_config", "destination.prefix"
        )
    assert not settings.exports_directory.exists()


async def test_invalid_requests_create_nothing(client: TestClient, token: TokenFactory, s3_endpoint: str) -> None:
    exporter = token(*WRITER_SCOPES)
    now = datetime.now(UTC)
    base = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl"}

    async def refused(body: dict[str, Any], status: int, code: str) -> dict[str, Any]:
        answer = await create_export(client, exporter, body, status=status)
        assert answer["error"]["code"] == code, answer
        return answer

    for kind in ("gcs", "azure_blob"):
        destination = {"type": kind, "bucket": "b", "credentials_path": "x/y"}
        answer = await refused({**base, "destination": destination}, 400, "invalid_config")
        assert "not available in this build" in answer["error"]["message"]
    inline = {"type": "s3", "bucket": "audit-archive", "credentials_path": "infra/s3",
              "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY}
    answer = await refused({**base, "destination": inline}, 400, "invalid_config")
    assert SECRET_KEY not in str(answer) and ACCESS_KEY not in str(answer)
    assert "Inline credentials" in answer["error"]["message"]
    await refused({**base, "destination": {"type": "s3", "bucket": "audit-archive", "credentials_path": "infra/none"}},
                  400, "invalid_config")  # no such secret
    await refused({**base, "destination": {"type": "s3", "bucket": "Not_A_Bucket", "credentials_path": "infra/s3"}},
                  400, "invalid_config")
    await refused({**base, "destination": {"type": "s3", "bucket": "audit-archive", "credentials_path": "../x"}},
                  400, "invalid_path")
    for unknown_type in ("ftp", None, 3, [], ["s3"], {}, {"s3": 1}):  # a list or object cannot even be looked up
        await refused({**base, "destination": {"type": unknown_type}}, 400, "invalid_config")
    await refused({**base, "destination": {"type": "local", "path": "/tmp"}}, 422, "validation_error")
    await refused({**base, "format": "xml", "destination": {"type": "local"}}, 422, "validation_error")
    local = {"type": "local"}
    await refused({**base, "filters": {"action": "read,steal"}, "destination": local}, 422, "validation_error")
    await refused({**base, "filters": {"colour": "red"}, "destination": {"type": "local"}}, 422, "validation_error")
    await refused({**base, "from": base["to"], "to": base["from"], "destination": local}, 422, "validation_error")
    await refused({"to": base["to"], "format": "csv", "destination": {"type": "local"}}, 422, "validation_error")
    listing = await (await client.get("/v1/audit/exports", headers=bearer(exporter))).json()
    assert listing["exports"] == []


async def test_the_audit_export_scope_is_required(client: TestClient, token: TokenFactory) -> None:
    reader = token("audit:read", "secrets:read")
    now = datetime.now(UTC)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl", "destination": {"type": "local"}}
    for method, url in (("POST", "/v1/audit/export"), ("GET", "/v1/audit/exports"),
                        ("GET", "/v1/audit/exports/exp_00000000000000000000000000")):
        response = await client.request(method, url, json=body if method == "POST" else None, headers=bearer(reader))
        assert response.status == 403, url
        error = (await response.json())["error"]
        assert error["code"] == "insufficient_scope" and error["details"]["required_scope"] == "audit:export"


async def test_another_tenant_cannot_see_an_export(client: TestClient, token: TokenFactory) -> None:
    now = datetime.now(UTC)
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
    prefixed = f"/v1/t/{OTHER_TENANT}/audit/exports/{mine['export_id']}"
    assert (await client.get(prefixed, headers=bearer(admin))).status == 404


async def test_the_egress_guard_refuses_loopback_unless_allowed(
    client: TestClient, token: TokenFactory, s3_endpoint: str
) -> None:
    exporter = token(*WRITER_SCOPES)
    s3(s3_endpoint).create_bucket(Bucket="guarded")
    port = s3_endpoint.rsplit(":", 1)[1]
    path = await store_credentials(client, exporter, f"http://localhost:{port}")
    now = datetime.now(UTC)
    body = {"from": iso(now - timedelta(hours=1)), "to": iso(now), "format": "jsonl",
            "destination": {"type": "s3", "bucket": "guarded", "credentials_path": path}}
    export = await create_export(client, exporter, body)
    document = await finished(client, exporter, export["export_id"])
    assert document["status"] == "failed" and "manifest" not in document
    assert "not a publicly routable address" in document["error"] and "SCAIVAULT_EGRESS_ALLOW" in document["error"]
    assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)
    assert s3(s3_endpoint).list_objects_v2(Bucket="guarded").get("KeyCount") == 0  # nothing reached the store


async def test_a_failing_destination_ends_failed(allowing: Server, token: TokenFactory, s3_endpoint: str) -> None:
    client = allowing.client
    exporter = token(*WRITER_SCOPES)
    good = await store_credentials(client, exporter, s3_endpoint)
    partial = await store_credentials(client, exporter, s3_endpoint, path="infra/partial", secret_access_key=None)
    now = datetime.now(UTC)
    base = {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1)), "format": "csv"}
    no_bucket = await create_export(client, exporter, {
        **base, "destination": {"type": "s3", "bucket": "no-such-bucket", "credentials_path": good}})
    no_key = await create_export(client, exporter, {
        **base, "destination": {"type": "s3", "bucket": "no-such-bucket", "credentials_path": partial}})
    failed = await finished(client, exporter, no_bucket["export_id"])
    assert failed["status"] == "failed" and "NoSuchBucket" in failed["error"], failed
    incomplete = await finished(client, exporter, no_key["export_id"])
    assert incomplete["status"] == "failed" and incomplete["error"].endswith("has no secret_access_key")
    for document in (failed, incomplete):
        assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)


async def test_pending_exports_survive_a_restart_and_run_once_under_the_lock(
    container: Container, database_url: str, settings: Settings
) -> None:
    """No background jobs run on this container until the test starts them (the worker among them): like a server
    starting up on exports requested (or interrupted) before."""
    now = datetime.now(UTC)
    request = RequestExport(
        tenant_id=TENANT, partner_id=PARTNER, format="jsonl", since=now - timedelta(hours=1), until=now, filters={},
        destination={"type": "local", "prefix": "restart"},
    )
    alice = caller_of_claims({"sub": "user:alice@acme.example", "scopes": ["audit:export"]})
    pending = await container.audit_exports.request(request, alice, None)
    interrupted = await container.audit_exports.request(request, alice, None)
    started = await container.audit_exports.start(interrupted.export_id)
    assert started is not None and started.status == "running"  # then the process died

    other_process = await asyncpg.connect(database_url)
    await other_process.execute("SELECT pg_advisory_lock($1)", job_lock_key(pending.export_id))
    container.export_worker.poll_seconds = 0.05
    refusals = lock_refusals(container, pending.export_id)
    try:
        async with container.running_background():
            await wait_status(container, interrupted.export_id, "completed")
            await eventually(lambda: refusals.count >= 2, message="the worker did not try the locked job twice")
            assert await status_of(container, pending.export_id) == "pending"  # left to the lock's holder
            await other_process.execute("SELECT pg_advisory_unlock($1)", job_lock_key(pending.export_id))
            await wait_status(container, pending.export_id, "completed")
    finally:
        await other_process.close()
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
    async def reached() -> bool:
        return await status_of(container, export_id) == status

    await eventually(reached, message=f"{export_id} is not {status}")


@dataclass
class Refusals:
    count: int = 0


def lock_refusals(container: Container, export_id: str) -> Refusals:
    """Counts the worker's attempts at the export's job lock that another process's hold refused: proof that the
    worker saw the job and left it, where waiting a while would only suggest it."""
    refusals = Refusals()

    def refused(candidate: str) -> None:
        if candidate == export_id:
            refusals.count += 1

    container.export_worker.on_lock_refused = refused
    return refusals


def test_export_files_of_other_tenants_are_apart(settings: Settings, tmp_path: Path) -> None:
    """Each tenant's local exports live in a folder of its own, under the configured directory only."""
    assert settings.exports_directory == settings.data_dir / "exports"
    configured = Settings.from_env({"SCAIVAULT_EXPORT_DIR": str(tmp_path / "elsewhere")})
    assert configured.exports_directory == tmp_path / "elsewhere"


async def mirror_user(client: TestClient, headers: dict[str, str], email: str) -> str:
    created = await client.post(f"/v1/identity/tenants/{TENANT}/users", json={"email": email}, headers=headers)
    assert created.status == 201, await created.text()
    user_id: str = (await created.json())["id"]
    return user_id


def caller_of_claims(claims: dict[str, Any]) -> Caller:
    """A caller in the test tenant, as the API would build it from a token with these claims."""
    principal = Principal.from_claims({"jti": "test-token", "tenant_id": TENANT, "partner_id": PARTNER, **claims})
    return Caller(principal, TENANT, PARTNER)


def s3_body(path: str, bucket: str = "audit-archive") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"from": iso(now - timedelta(hours=1)), "to": iso(now + timedelta(hours=1)), "format": "jsonl",
            "destination": {"type": "s3", "bucket": bucket, "credentials_path": path}}


async def test_naming_credentials_needs_the_right_to_read_them(
    client: TestClient, container: Container, token: TokenFactory, s3_endpoint: str
) -> None:
    """A caller who may not read the credentials secret gets the answer a GET of it gets, whether or not it exists,
    and no export is made."""
    await store_credentials(client, token(*WRITER_SCOPES), s3_endpoint, path="private/s3creds")
    refusals = ((("audit:export", "secrets:read"), "access_denied"), (("audit:export",), "insufficient_scope"))
    for scopes, code in refusals:
        exporter = caller_token(container, *scopes, identity="sa:exporter")  # no role, no policy
        answers = []
        for path in ("private/s3creds", "private/nothing-here"):
            posted = await client.post("/v1/audit/export", json=s3_body(path, "attacker-bucket"), headers=exporter)
            fetched = await client.get(f"/v1/secrets/{path}", headers=exporter)
            assert posted.status == fetched.status == 403
            error = await error_document(posted)
            assert error == await error_document(fetched) and error["code"] == code
            answers.append(str(error).replace(path, "<path>"))
        assert answers[0] == answers[1]  # nothing tells whether the secret exists
    listing = await (await client.get("/v1/audit/exports", headers=bearer(token("audit:export")))).json()
    assert listing["exports"] == []

    # Once a policy lets the caller read the path, naming it is accepted, and a missing secret is named as such.
    await grant(client, container, [{"path_pattern": "private/*", "permissions": ["read"]}], identity_id="sa:exporter")
    exporter = caller_token(container, "audit:export", "secrets:read", identity="sa:exporter")
    await create_export(client, exporter, s3_body("private/s3creds"))
    missing = await create_export(client, exporter, s3_body("private/nothing-here"), status=400)
    assert missing["error"]["code"] == "invalid_config"


@pytest.mark.parametrize("taken_away", ["policy binding", "mirrored role", "mirror record"])
async def test_a_requester_who_lost_the_right_to_the_credentials_before_the_job_ran_uploads_nothing(
    paused: Server, token: TokenFactory, s3_endpoint: str, taken_away: str
) -> None:
    """``mirror record``: the requester's token has no role; the identity mirror's record made it a tenant admin
    when it asked, and was removed before the job ran: the job derives roles from the token's, not from the roles
    held at the request."""
    client, container = paused.client, paused.container
    s3(s3_endpoint).create_bucket(Bucket="revoked-archive")
    path = await store_credentials(client, token(*WRITER_SCOPES), s3_endpoint, path="private/s3creds")
    root = bearer(token("identity:read", "identity:admin", identity="user:root@acme.example", roles=("super_admin",)))
    bob_record = None
    if taken_away == "policy binding":
        requester = "sa:exporter"
        policy_id, binding_id = await grant(
            client, container, [{"path_pattern": "private/*", "permissions": ["read"]}], identity_id=requester
        )
        exporter = caller_token(container, "audit:export", "secrets:read", identity=requester)
    elif taken_away == "mirrored role":
        requester = "user:bob@acme.example"
        exporter = bearer(token("audit:export", "secrets:read", identity=requester))  # tenant_admin by its token
    else:
        requester = "user:bob@acme.example"
        bob_record = await mirror_user(client, root, "bob@acme.example")
        granted = await client.put(f"/v1/identity/users/{bob_record}/roles", json={"roles": ["tenant_admin"]},
                                   headers=root)
        assert granted.status == 200, await granted.text()
        exporter = bearer(token("audit:export", "secrets:read", identity=requester, roles=()))
        assert (await (await client.get("/v1/auth/whoami", headers=exporter)).json())["roles"] == ["tenant_admin"]
    export = await create_export(client, exporter, s3_body(path, "revoked-archive"))

    if taken_away == "policy binding":
        unbound = await client.delete(f"/v1/policies/{policy_id}/bindings/{binding_id}", headers=admin(container))
        assert unbound.status in (200, 204), await unbound.text()
    else:
        if bob_record is None:  # the mirror learns of Bob, with no role: his token's tenant_admin no longer counts
            await mirror_user(client, root, "bob@acme.example")
        else:  # the record goes, and with it the role it gave
            removed = await client.delete(f"/v1/identity/users/{bob_record}", headers=root)
            assert removed.status in (200, 204), await removed.text()

        async def roles_gone() -> bool:
            return (await (await client.get("/v1/auth/whoami", headers=exporter)).json())["roles"] == []

        await eventually(roles_gone, message="the mirror's roles did not reach the token's caller")
    paused.run_jobs()

    viewer = token("audit:export")
    document = await finished(client, viewer, export["export_id"])
    assert (document["status"], document["error"]) == ("failed", NOT_ALLOWED)
    assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)
    assert s3(s3_endpoint).list_objects_v2(Bucket="revoked-archive")["KeyCount"] == 0  # the credentials were not used
    await caught_up(container)
    refused = await log_entries(client, token(*WRITER_SCOPES), f"identity_id={requester}&action=read")
    assert [(e["route"], e["status"], e["success"], e["extra_data"]["via"], e["extra_data"]["export_id"])
            for e in refused] == [("audit-export", 403, False, "audit-export", export["export_id"])]


@pytest.mark.parametrize(
    ("credentials", "canaries"),
    [
        ({"endpoint_url": "http://localhost:{port}"}, ("localhost", "127.0.0.1", "{port}")),
        ({"endpoint_url": "http://canary-host-5e1d.invalid:4455"}, ("canary-host-5e1d", "4455")),
        ({"endpoint_url": "http://[::ffff:7f00:1]:4456"}, ("ffff", "7f00", "4456", "127.0.0.1")),
        ({"region": "Canary-Region-Value-7731"}, ("Canary-Region-Value-7731",)),
    ],
)
async def test_failed_exports_name_no_host_address_or_value_of_the_secret(
    client: TestClient, token: TokenFactory, s3_endpoint: str, credentials: dict[str, str], canaries: tuple[str, ...]
) -> None:
    port = s3_endpoint.rsplit(":", 1)[1]
    exporter = token(*WRITER_SCOPES)
    values = {key: value.format(port=port) for key, value in credentials.items()}
    path = await store_credentials(client, exporter, s3_endpoint, path="infra/canary", **values)
    document = await finished(client, exporter, (await create_export(client, exporter, s3_body(path)))["export_id"])
    assert document["status"] == "failed"
    for canary in (*(c.format(port=port) for c in canaries), ACCESS_KEY, SECRET_KEY):
        assert canary not in document["error"], document["error"]
    assert SECRET_KEY not in str(document) and ACCESS_KEY not in str(document)


async def test_uploads_go_to_the_address_the_guard_checked(
    allowing: Server, token: TokenFactory, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The endpoint's name is resolved once, by the egress guard: a resolver that answers differently afterwards
    (DNS rebinding) is never asked again."""
    client = allowing.client
    s3(s3_endpoint).create_bucket(Bucket="pinned-archive")
    port = int(s3_endpoint.rsplit(":", 1)[1])
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "rebinding-s3-endpoint":
            lookups.append(host)
            if len(lookups) > 1:
                raise socket.gaierror(socket.EAI_NONAME, "the resolver now answers otherwise")
            return real_getaddrinfo("127.0.0.1", *args, **kwargs)
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    exporter = token(*WRITER_SCOPES)
    path = await store_credentials(client, exporter, s3_endpoint, endpoint_url=f"http://rebinding-s3-endpoint:{port}")
    document = await finished(client, exporter, (await create_export(
        client, exporter, s3_body(path, "pinned-archive")
    ))["export_id"])
    assert document["status"] == "completed", document
    assert lookups == ["rebinding-s3-endpoint"]
    keys = [o["Key"] for o in s3(s3_endpoint).list_objects_v2(Bucket="pinned-archive")["Contents"]]
    assert f"{document['export_id']}/manifest.json" in keys


@pytest.mark.parametrize("version", [1, 2])
async def test_an_export_stored_without_its_requesters_token_roles_reads_no_credentials(
    allowing: Server, token: TokenFactory, s3_endpoint: str, version: int
) -> None:
    """Exports requested before requesters were recorded (version 1 of the request event), or when their roles were
    the roles held after the identity mirror and their token's expiry was not kept (version 2), fail their
    credentials check rather than pass it: taking those roles for the token's would keep a role given by a mirror
    record removed since. The refusal is in the audit log under the requester recorded."""
    client, container = allowing.client, allowing.container
    s3(s3_endpoint).create_bucket(Bucket="legacy-archive")
    path = await store_credentials(client, token(*WRITER_SCOPES), s3_endpoint)
    now = datetime.now(UTC)
    requester = requester_of(caller_of_claims({"sub": "user:alice@acme.example", "roles": ["tenant_admin"],
                                               "scopes": ["audit:export", "secrets:read"]}))
    export = AuditExport(
        export_id=new_id("exp_"), tenant_id=TENANT, partner_id=PARTNER, format="jsonl",
        since=now - timedelta(hours=1), until=now, filters={},
        destination={"type": "s3", "bucket": "legacy-archive", "prefix": "", "credentials_path": path},
        estimated_records=0, at=now, actor="user:alice@acme.example", request_id=None,
        requester=None if version == 1 else requester.state(),
    )
    mapper = container.repository.mapper
    stored = mapper.to_stored_event(export.collect_events()[0])
    state = mapper.transcoder.decode(stored.state)
    assert state.pop("class_version") == 3
    if version == 1:
        assert state.pop("requester") is None
    else:  # what a version 2 writer stored
        state["class_version"] = 2
        recorded = state["requester"]
        del recorded["token_roles"], recorded["expires_at"]
        recorded["roles"] = ["tenant_admin"]
    legacy = dataclasses.replace(stored, state=mapper.transcoder.encode(state))
    upcast = mapper.to_domain_event(legacy)
    if version == 1:
        assert upcast.requester is None  # type: ignore[attr-defined]
    else:
        assert upcast.requester["token_roles"] is None and "roles" not in upcast.requester  # type: ignore[attr-defined]
    async with container.pool.acquire() as conn, conn.transaction():
        await container.store.append(conn, [legacy])
        await project_audit_export(conn, upcast)
    allowing.run_jobs()
    document = await finished(client, token("audit:export"), export.export_id)
    assert (document["status"], document["error"]) == ("failed", NOT_ALLOWED)
    assert s3(s3_endpoint).list_objects_v2(Bucket="legacy-archive")["KeyCount"] == 0
    await caught_up(container)
    refused = await log_entries(client, token(*WRITER_SCOPES), f"action=read&path_prefix={path}")
    expected = "system:audit-export" if version == 1 else "user:alice@acme.example"
    assert [(e["identity_id"], e["status"]) for e in refused if e["route"] == "audit-export"] == [(expected, 403)]


async def test_a_requester_whose_token_expired_before_the_job_ran_uploads_nothing(
    paused: Server, token: TokenFactory, s3_endpoint: str
) -> None:
    """The job accepts the requester's token exactly as long as a request would: until its expiry plus the
    authenticator's leeway, on the clock the authenticator's cache uses (moved here instead of waiting)."""
    client = paused.client
    bucket = s3(s3_endpoint)
    bucket.create_bucket(Bucket="expiring-archive")
    path = await store_credentials(client, token(*WRITER_SCOPES), s3_endpoint, path="private/s3creds")
    short_lived = token("audit:export", "secrets:read", identity="user:carol@acme.example", ttl=timedelta(minutes=1))
    expires = jwt.decode(short_lived, options={"verify_signature": False})["exp"]
    clock = Clock(time.time())
    paused.container.authenticator.clock = clock
    viewer = token("audit:export")

    in_time = await create_export(client, short_lived, s3_body(path, "expiring-archive"))
    clock.now = expires + LEEWAY.total_seconds() - 10  # expired, but within the leeway: still accepted
    paused.run_jobs()
    assert (await finished(client, viewer, in_time["export_id"]))["status"] == "completed"

    too_late = await create_export(client, short_lived, s3_body(path, "expiring-archive"))
    clock.now = expires + LEEWAY.total_seconds() + 1
    expired = await client.get("/v1/auth/whoami", headers=bearer(short_lived))
    assert (expired.status, (await expired.json())["error"]["code"]) == (401, "token_expired")  # as a request is
    paused.run_jobs()
    document = await finished(client, viewer, too_late["export_id"])
    assert (document["status"], document["error"]) == ("failed", NOT_ALLOWED)
    assert bucket.list_objects_v2(Bucket="expiring-archive", Prefix=too_late["export_id"])["KeyCount"] == 0
    await caught_up(paused.container)
    reads = await log_entries(client, token(*WRITER_SCOPES), "identity_id=user:carol@acme.example&action=read")
    assert [(e["status"], e["extra_data"]["export_id"]) for e in reads] == [
        (200, in_time["export_id"]), (401, too_late["export_id"])
    ]


async def test_the_job_sees_a_revocation_its_server_was_not_told_of(
    paused: Server, token: TokenFactory, s3_endpoint: str
) -> None:
    """A token revoked on another server (its notification lost) while this server's revocation list has not been
    refreshed for longer than a request accepts: the job refreshes the list first, as a request would, and the
    revoked token reads nothing."""
    client, container = paused.client, paused.container
    s3(s3_endpoint).create_bucket(Bucket="revoked-token-archive")
    path = await store_credentials(client, token(*WRITER_SCOPES), s3_endpoint, path="private/s3creds")
    exporter = token("audit:export", "secrets:read", identity="user:carol@acme.example")
    export = await create_export(client, exporter, s3_body(path, "revoked-token-archive"))
    claims = jwt.decode(exporter, options={"verify_signature": False})
    await container.pool.execute(  # recorded without the NOTIFY that would have woken this server's refresh
        "INSERT INTO scaivault_token_revocations (kind, value, expires_at) VALUES ('jti', $1, $2)",
        claims["jti"], datetime.fromtimestamp(claims["exp"], UTC),
    )
    container.revocations.refreshed_at = None  # stale: its refresh has stalled
    paused.run_jobs()

    async def failed() -> bool:  # read from the database: a request now would refresh the list itself
        row = await container.pool.fetchrow(
            "SELECT status, error FROM scaivault_audit_exports WHERE export_id = $1", export["export_id"]
        )
        assert row is not None
        assert row["status"] != "completed", "the job used a revoked token"
        return (row["status"], row["error"]) == ("failed", NOT_ALLOWED)

    await eventually(failed)
    assert s3(s3_endpoint).list_objects_v2(Bucket="revoked-token-archive")["KeyCount"] == 0
