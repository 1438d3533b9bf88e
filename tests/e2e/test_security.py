"""Security lessons, each an attack tried and refused."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from eventsourcing.persistence import StoredEvent

from commands.tokens import IssueToken
from scaivault.audit.access_records import AccessRecord
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.access import AccessRecorded
from scaivault.domain.errors import ServiceUnavailable
from scaivault.eventstore.mapper import create_mapper
from scaivault.http.app import create_app
from scaivault.ids import new_request_id
from tests.e2e.conftest import PARTNER, TENANT, TokenFactory, bearer
from tests.helpers import eventually

KNOWN_VALUES = ["plaintext-canary-7f3a9c", "another-canary-b81e02"]


async def all_text_of_every_table(conn: asyncpg.Connection) -> str:
    """Every row of every table, as text, with bytea also decoded as latin-1 (raw bytes) to catch raw plaintext."""
    tables = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    dump = []
    for table in tables:
        for row in await conn.fetch(f'SELECT * FROM "{table["tablename"]}"'):
            for value in row.values():
                if isinstance(value, (bytes, bytearray, memoryview)):
                    dump.append(bytes(value).decode("latin-1"))
                else:
                    dump.append(str(value))
    return "\n".join(dump)


async def test_no_plaintext_value_anywhere_in_postgresql(
    client: TestClient, token: TokenFactory, pool: asyncpg.Pool
) -> None:
    t = bearer(token())
    for n, value in enumerate(KNOWN_VALUES):
        await client.put(f"/v1/secrets/canary/{n}", json={"data": {"password": value}}, headers=t)
        await client.put(f"/v1/secrets/canary/{n}", json={"data": {"password": value, "v": "2"}}, headers=t)
        await client.get(f"/v1/secrets/canary/{n}", headers=t)
    await client.post("/v1/secrets/batch", json={"paths": ["canary/0", "canary/1"]}, headers=t)
    async with pool.acquire() as conn:
        dump = await all_text_of_every_table(conn)
    assert "canary/0" in dump  # the scan does see the tables
    for value in KNOWN_VALUES:
        for form in (value, base64.b64encode(value.encode()).decode(), value.encode().hex()):
            assert form not in dump


async def test_a_ciphertext_moved_to_another_row_fails_to_open(
    client: TestClient, token: TokenFactory, pool: asyncpg.Pool
) -> None:
    t = bearer(token())
    await client.put("/v1/secrets/app/victim", json={"data": {"pw": "victim"}}, headers=t)
    await client.put("/v1/secrets/app/attacker", json={"data": {"pw": "attacker"}}, headers=t)
    async with pool.acquire() as conn:
        # Swap the ciphertexts and data keys of the two rows, as someone with database write access could.
        await conn.execute(
            """
            WITH a AS (SELECT v.stream_id, v.ciphertext, v.data_key_id FROM scaivault_secret_versions v
                       JOIN scaivault_secrets s USING (stream_id) WHERE s.path = 'app/victim'),
                 b AS (SELECT v.stream_id, v.ciphertext, v.data_key_id FROM scaivault_secret_versions v
                       JOIN scaivault_secrets s USING (stream_id) WHERE s.path = 'app/attacker')
            UPDATE scaivault_secret_versions v SET ciphertext = CASE WHEN v.stream_id = a.stream_id THEN b.ciphertext
                                                                      ELSE a.ciphertext END,
                                                   data_key_id = CASE WHEN v.stream_id = a.stream_id THEN b.data_key_id
                                                                      ELSE a.data_key_id END
            FROM a, b WHERE v.stream_id IN (a.stream_id, b.stream_id)
            """
        )
    for path in ("app/victim", "app/attacker"):
        response = await client.get(f"/v1/secrets/{path}", headers=t)
        body = await response.text()
        assert response.status == 500 and "victim" not in body.replace("app/victim", "") and '"pw"' not in body


async def access_events(pool: asyncpg.Pool) -> list[AccessRecorded]:
    mapper = create_mapper()
    rows = await pool.fetch(
        "SELECT originator_id, originator_version, topic, state FROM scaivault_events"
        " WHERE topic = 'scaivault.domain.access:AccessRecorded' ORDER BY notification_id"
    )
    return [mapper.to_domain_event(StoredEvent(r["originator_id"], r["originator_version"], r["topic"], r["state"]))
            for r in rows]


async def test_every_request_allowed_or_denied_leaves_an_access_record(
    client: TestClient, token: TokenFactory, pool: asyncpg.Pool
) -> None:
    t = token()
    responses = [
        await client.put("/v1/secrets/app/rec", json={"data": {"k": "v"}}, headers=bearer(t)),
        await client.get("/v1/secrets/app/rec", headers=bearer(t)),
        await client.get("/v1/secrets/app/rec", headers=bearer(token("secrets:list"))),
        await client.get("/v1/secrets/app/rec"),
        await client.get("/v1/secrets/app/none", headers=bearer(t)),
        await client.delete("/v1/secrets/app/rec", headers=bearer(t)),
    ]
    records = await access_events(pool)
    by_request = {record.request_id: record for record in records}
    for response in responses:
        record = by_request[response.headers["X-Request-ID"]]
        assert record.status == response.status
        assert record.success == (response.status < 400)
    write, read, denied, anonymous, missing, deleted = (by_request[r.headers["X-Request-ID"]] for r in responses)
    assert (write.action, write.identity_id, write.tenant_id, write.secret_path) == (
        "write", "user:alice@acme.example", TENANT, "app/rec")
    assert read.action == "read" and denied.error_code == "insufficient_scope"
    assert anonymous.identity_id is None and anonymous.error_code == "authentication_required"
    assert missing.error_code == "secret_not_found"
    assert (deleted.action, deleted.status) == ("delete", 200)
    # The write's record committed in the write's own transaction, right after the write's events.
    topics = [r["topic"] for r in await pool.fetch("SELECT topic FROM scaivault_events ORDER BY notification_id")]
    written_at = topics.index("scaivault.domain.secrets:Secret.VersionWritten")
    assert topics[written_at + 1] == "scaivault.domain.access:AccessRecorded"
    # Liveness and readiness are not audited.
    await client.get("/v1/health")
    assert len(await access_events(pool)) == len(records)


async def test_no_answer_may_be_kept_by_a_cache(client: TestClient, token: TokenFactory) -> None:
    """Values, tokens' introspection and audit trails travel in answers: every answer says ``no-store``, errors
    too (a shared cache must never hand one caller's answer to another)."""
    t = bearer(token("secrets:read", "secrets:write", "audit:read", "admin"))
    answers = [
        await client.put("/v1/secrets/app/cached", json={"data": {"k": "v"}}, headers=t),
        await client.get("/v1/secrets/app/cached", headers=t),
        await client.post("/v1/secrets/batch", json={"paths": ["app/cached"]}, headers=t),
        await client.post("/v1/auth/introspect", json={"token": token()}, headers=t),
        await client.get("/v1/auth/whoami", headers=t),
        await client.get("/v1/audit/logs", headers=t),
        await client.get("/v1/secrets/app/none", headers=t),
        await client.get("/v1/health"),
    ]
    for answer in answers:
        assert answer.headers.get("Cache-Control") == "no-store", (answer.url, answer.status)


@pytest.fixture
async def impatient_client(pool: asyncpg.Pool, settings: Settings) -> AsyncIterator[TestClient]:
    """A server that gives up on the event store after 1 s (audit and lock timeouts)."""
    impatient = settings.model_copy(update={"audit_timeout_seconds": 1.0, "event_lock_timeout_seconds": 1.0})
    container = await build_container(impatient)
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    try:
        async with TestClient(TestServer(create_app(container=container))) as client:
            yield client
    finally:
        await container.close()


async def test_audit_is_fail_closed_and_recovers(
    impatient_client: TestClient, token: TokenFactory, pool: asyncpg.Pool
) -> None:
    client, t = impatient_client, bearer(token())
    await client.put("/v1/secrets/app/audited", json={"data": {"v": "1"}}, headers=t)
    blocker = await pool.acquire()
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE scaivault_events IN ACCESS EXCLUSIVE MODE")  # a hung audit sink
    try:
        read = await client.get("/v1/secrets/app/audited", headers=t)
        assert read.status == 503 and (await read.json())["error"]["code"] == "service_unavailable"
        assert "data" not in await read.json()
        write = await client.put("/v1/secrets/app/audited", json={"data": {"v": "2"}}, headers=t)
        assert write.status == 503 and (await write.json())["error"]["code"] == "service_unavailable"
    finally:
        await transaction.rollback()
        await pool.release(blocker)
    read = await client.get("/v1/secrets/app/audited", headers=t)
    assert read.status == 200
    assert (await read.json())["data"] == {"v": "1"}  # the refused write changed nothing


async def test_records_queued_behind_a_hung_batch_fail_by_their_own_deadline(
    pool: asyncpg.Pool, settings: Settings
) -> None:
    """The audit timeout is kept per batch, not by a timer per request: a batch must commit before its oldest
    record's deadline, so no request waits longer than the timeout, even queued behind a batch that hangs (here
    PostgreSQL itself would wait 30 s for the lock). Records that joined a batch late fail with it, sooner."""
    patient = settings.model_copy(update={"audit_timeout_seconds": 0.5, "event_lock_timeout_seconds": 30.0})
    container = await build_container(patient)
    await container.access_recorder.start()
    blocker = await pool.acquire()
    transaction = blocker.transaction()
    await transaction.start()
    await blocker.execute("LOCK TABLE scaivault_events IN ACCESS EXCLUSIVE MODE")
    loop = asyncio.get_running_loop()

    async def one(delay: float) -> float:
        await asyncio.sleep(delay)  # the point: records arrive at times spread over the timeout, joining batches late
        started = loop.time()
        with pytest.raises(ServiceUnavailable):
            await container.access_recorder.record(AccessRecord(
                recorded_at=datetime.now(UTC), request_id=new_request_id(), method="GET", route="/v1/health",
                action="read", status=200))
        return loop.time() - started

    try:
        waited = await asyncio.gather(*(one(delay) for delay in (0, 0.1, 0.2, 0.3, 0.45, 0.6)))
    finally:
        await transaction.rollback()
        await pool.release(blocker)
        await container.close()
    assert all(seconds < 0.5 + 0.3 for seconds in waited), waited
    assert waited[0] > 0.45 and waited[-1] > 0.45, waited  # a record alone in its batch gets all its time


async def test_revoked_and_unknown_personal_access_tokens(client: TestClient, container: Container) -> None:
    pat = await container.token_commands.issue(IssueToken(
        partner_id=PARTNER, tenant_id=TENANT, identity_id="user:bob@acme.example", scopes=("secrets:read",),
        personal_access_token=True,
    ))
    assert pat.startswith("skt_")
    assert (await client.get("/v1/auth/whoami", headers=bearer(pat))).status == 200
    assert await container.token_commands.revoke(pat)
    await container.revocations.refresh(container.pool)
    revoked = await client.get("/v1/auth/whoami", headers=bearer(pat))
    assert revoked.status == 401 and (await revoked.json())["error"]["code"] == "token_revoked"
    assert not await container.token_commands.revoke(pat)  # nothing more to revoke
    topics = [r["topic"] for r in await container.pool.fetch(
        "SELECT topic FROM scaivault_events WHERE topic LIKE 'scaivault.domain.tokens:%' ORDER BY notification_id")]
    assert topics == ["scaivault.domain.tokens:PersonalAccessToken.Issued",
                      "scaivault.domain.tokens:PersonalAccessToken.Revoked"]
    unknown = await client.get("/v1/auth/whoami", headers=bearer("skt_" + "A" * 43))
    assert unknown.status == 401 and (await unknown.json())["error"]["code"] == "token_invalid"


async def test_revoked_jwt(client: TestClient, token: TokenFactory, container: Container) -> None:
    t = token()
    assert (await client.get("/v1/auth/whoami", headers=bearer(t))).status == 200
    assert await container.token_commands.revoke(t)
    assert not await container.token_commands.revoke(t)
    assert await container.pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic = 'scaivault.domain.tokens:JwtRevocation.Recorded'") == 1
    # No manual refresh: the server's own sync (NOTIFY wake-up, 2 s polling) must pick the revocation up.

    async def refused() -> dict[str, Any] | None:
        response = await client.get("/v1/auth/whoami", headers=bearer(t))
        return await response.json() if response.status == 401 else None

    body = await eventually(refused, timeout=5, message="the revocation did not reach the server")
    assert body["error"]["code"] == "token_revoked"


async def test_no_value_or_token_reaches_a_log_line_or_an_error(
    client: TestClient, token: TokenFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    t = token()
    value = "log-canary-4d1e"
    await client.put("/v1/secrets/app/logged", json={"data": {"pw": value}}, headers=bearer(t))
    await client.get("/v1/secrets/app/logged", headers=bearer(t))
    bad = await client.put("/v1/secrets/app/logged", json={"data": {"pw": value}, "bogus": value}, headers=bearer(t))
    tampered = await client.get("/v1/secrets/app/logged", headers=bearer(t[:-3] + "abc"))
    for response in (bad, tampered):
        text = await response.text()
        assert value not in text and t[:40] not in text
    logged = "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)
    assert "request" in logged  # the access log did record these requests
    assert value not in logged and t.split(".")[1] not in logged and t.split(".")[2] not in logged


async def test_hostile_bytes_in_a_request_cannot_break_auditing(
    client: TestClient, token: TokenFactory, pool: asyncpg.Pool
) -> None:
    """A NUL in the path (or a header) must neither fail other requests' records nor stall the audit log."""
    t = bearer(token())
    await client.put("/v1/secrets/app/ok", json={"data": {"k": "v"}}, headers=t)
    hostile = [client.get("/v1/secrets/x%00y") for _ in range(20)]
    friendly = [client.get("/v1/secrets/app/ok", headers=t) for _ in range(20)]
    responses = await asyncio.gather(*hostile, *friendly)
    assert [r.status for r in responses[20:]] == [200] * 20
    assert {r.status for r in responses[:20]} == {401}
    recorded = [e for e in await access_events(pool) if e.secret_path and e.secret_path.startswith("x")]
    assert len(recorded) == 20 and all("\x00" not in e.secret_path for e in recorded)


async def test_revoking_refuses_input_that_may_be_a_credential(client: TestClient, container: Container) -> None:
    from scaivault.domain.errors import InvalidRequest

    pat = await container.token_commands.issue(IssueToken(partner_id=PARTNER, tenant_id=TENANT, identity_id="sa:x",
                                                  scopes=("secrets:read",), personal_access_token=True))
    for typed in ("Bearer " + pat, "eyJhbGciOi.eyJzdWIiOiJ4In0", "not a jti"):
        with pytest.raises(InvalidRequest):
            await container.token_commands.revoke(typed)
    assert await container.token_commands.revoke(f"  {pat}\n")  # surrounding white space is not part of a token
    events = [r["state"] for r in await container.pool.fetch("SELECT state FROM scaivault_events")]
    assert not any(pat.encode() in state for state in events)


async def test_the_benchmark_switch_skips_only_records_of_requests_that_change_nothing(
    pool: asyncpg.Pool, settings: Settings, token: TokenFactory
) -> None:
    skipping = await build_container(settings.model_copy(update={"unsafe_skip_read_audit": True}))
    await skipping.tenancy_commands.register_tenant(PARTNER, TENANT)
    try:
        async with TestClient(TestServer(create_app(container=skipping))) as client:
            t = bearer(token())
            await client.put("/v1/secrets/app/bench", json={"data": {"k": "v"}}, headers=t)
            assert (await client.get("/v1/secrets/app/bench", headers=t)).status == 200
    finally:
        await skipping.close()
    assert [e.action for e in await access_events(pool)] == ["write"]
