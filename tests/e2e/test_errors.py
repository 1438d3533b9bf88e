"""Every malformed body, path, token, cursor or duration gets the error envelope with the right code and status:
never a 500, never a stack trace; and a failed request changes nothing."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import jwt
import orjson
import pytest
from aiohttp.test_utils import TestClient

from scaivault.auth.authenticator import MAX_TOKEN_LENGTH
from scaivault.bootstrap import Container
from scaivault.domain.access import ACCESS_TOPIC
from tests.e2e.conftest import TokenFactory, bearer


async def assert_error(response, status: int, code: str) -> dict:  # type: ignore[no-untyped-def]
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"] and error["request_id"].startswith("req_")
    assert "Traceback" not in error["message"]
    return error


def expired_token(container: Container) -> str:
    """Signed by the server's own issuer key, expired well beyond the leeway."""
    claims = jwt.decode(container.issuer.issue(identity_id="user:a@x.example", tenant_id="tnt_acme_prod",
                                               partner_id="ptn_acme", scopes="secrets:read", ttl=timedelta(hours=1)),
                        options={"verify_signature": False})
    claims["exp"] = int(time.time()) - 600
    return jwt.encode(claims, container.issuer._private_key, algorithm="EdDSA", headers={"kid": container.issuer.kid})


async def test_authentication_errors(client: TestClient, token: TokenFactory, container: Container) -> None:
    await assert_error(await client.get("/v1/secrets/a"), 401, "authentication_required")
    basic = {"Authorization": "Basic abc"}
    await assert_error(await client.get("/v1/secrets/a", headers=basic), 401, "authentication_required")
    await assert_error(await client.get("/v1/secrets/a", headers=bearer("not.a.jwt")), 401, "token_invalid")
    expired = expired_token(container)
    await assert_error(await client.get("/v1/secrets/a", headers=bearer(expired)), 401, "token_expired")
    good = token()
    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-6]}AAAAAA"
    await assert_error(await client.get("/v1/secrets/a", headers=bearer(tampered)), 401, "token_invalid")


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("App/Db", "a-z"),
        ("app/db.password", "a-z"),
        ("app//db", "empty segment"),
        ("app/db/versions", "reserved"),
        ("/".join("a" * 11), "deeper"),
        ("a" * 513, "longer"),
    ],
)
async def test_invalid_paths(client: TestClient, token: TokenFactory, path: str, reason: str) -> None:
    error = await assert_error(
        await client.put(f"/v1/secrets/{path}", json={"data": {"k": "v"}}, headers=bearer(token())), 400, "invalid_path"
    )
    assert reason in error["message"]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_request"),
        (b"[1, 2]", 400, "invalid_request"),
        (b"", 400, "invalid_request"),
        (b'{"data": "not an object"}', 422, "validation_error"),
        (b'{"nodata": {}}', 422, "validation_error"),
        (b'{"data": {}, "option": {"cas": 1}}', 422, "validation_error"),
        (b'{"data": {}, "options": {"max_versions": 0}}', 422, "validation_error"),
        (b'{"data": {}, "secret_type": "password"}', 400, "invalid_secret_type"),
        (b'{"data": {}, "options": {"expires_in": "90 days"}}', 400, "invalid_duration"),
        (b'{"data": {}, "options": {"expires_in": "0d"}}', 400, "invalid_duration"),
    ],
)
async def test_malformed_write_bodies_change_nothing(
    client: TestClient, token: TokenFactory, body: bytes, status: int, code: str
) -> None:
    t = token()
    response = await client.put(
        "/v1/secrets/app/body", data=body, headers={**bearer(t), "Content-Type": "application/json"}
    )
    error = await assert_error(response, status, code)
    if code == "validation_error":
        assert error["details"]["fields"]
    await assert_error(await client.get("/v1/secrets/app/body", headers=bearer(t)), 404, "secret_not_found")


async def test_oversized_body(client: TestClient, token: TokenFactory) -> None:
    huge = b'{"data": {"k": "' + b"x" * (600 * 1024) + b'"}}'
    response = await client.put("/v1/secrets/app/big", data=huge,
                                headers={**bearer(token()), "Content-Type": "application/json"})
    await assert_error(response, 413, "payload_too_large")
    big_value = {"data": {"k": "x" * (70 * 1024)}}
    response = await client.put("/v1/secrets/app/big", json=big_value, headers=bearer(token()))
    await assert_error(response, 422, "validation_error")


async def test_unknown_routes_and_methods(client: TestClient, token: TokenFactory) -> None:
    await assert_error(await client.get("/v1/nothing-here", headers=bearer(token())), 404, "not_found")
    await assert_error(await client.post("/v1/auth/whoami", headers=bearer(token())), 405, "method_not_allowed")


async def test_bad_query_parameters(client: TestClient, token: TokenFactory) -> None:
    t = bearer(token())
    await client.put("/v1/secrets/app/q", json={"data": {"k": "v"}}, headers=t)
    await assert_error(await client.get("/v1/secrets/app/q?version=abc", headers=t), 400, "invalid_request")
    await assert_error(await client.get("/v1/secrets/app/q?version=0", headers=t), 400, "invalid_request")
    await assert_error(await client.delete("/v1/secrets/app/q?permanent=maybe", headers=t), 400, "invalid_request")
    await assert_error(await client.get("/v1/secrets?prefix=UP", headers=t), 400, "invalid_path")
    await assert_error(await client.get("/v1/secrets?cursor=%%%", headers=t), 400, "invalid_cursor")
    assert (await client.get("/v1/secrets/app/q", headers=t)).status == 200


async def test_operations_on_missing_secrets(client: TestClient, token: TokenFactory) -> None:
    t = bearer(token())
    for call in (
        client.get("/v1/secrets/app/none", headers=t),
        client.get("/v1/secrets/app/none/metadata", headers=t),
        client.get("/v1/secrets/app/none/versions", headers=t),
        client.patch("/v1/secrets/app/none/metadata", json={"metadata": {}}, headers=t),
        client.delete("/v1/secrets/app/none", headers=t),
        client.post("/v1/secrets/app/none/restore", headers=t),
    ):
        await assert_error(await call, 404, "secret_not_found")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"data": {"acct": 123456789012345678901234567890}}', 422, "validation_error"),
        (b'{"data": {"x": NaN}}', 400, "invalid_request"),
        (b'{"data": ' + b'{"a": ' * 40 + b"1" + b"}" * 40 + b"}", 422, "validation_error"),
        (b'{"data": {}, "metadata": {"custom": {"_type_": "bytes_b64", "_data_": "AA=="}}}', 422, "validation_error"),
    ],
)
async def test_values_that_could_not_be_given_back_exactly_are_refused(
    client: TestClient, token: TokenFactory, body: bytes, status: int, code: str
) -> None:
    response = await client.put("/v1/secrets/app/exact", data=body,
                                headers={**bearer(token()), "Content-Type": "application/json"})
    await assert_error(response, status, code)


async def test_out_of_range_numbers_in_queries_and_batches(client: TestClient, token: TokenFactory) -> None:
    t = bearer(token())
    await client.put("/v1/secrets/app/n", json={"data": {"k": "v"}}, headers=t)
    for query in ("version=99999999999", "version=%C2%B2"):
        await assert_error(await client.get(f"/v1/secrets/app/n?{query}", headers=t), 400, "invalid_request")
    await assert_error(await client.get("/v1/secrets?limit=%C2%B2", headers=t), 400, "invalid_request")
    huge = {"paths": ["app/n"], "options": {"version": 2**40}}
    await assert_error(await client.post("/v1/secrets/batch", json=huge, headers=t), 422, "validation_error")


async def test_metadata_patches_obey_the_metadata_rules(client: TestClient, token: TokenFactory) -> None:
    t = bearer(token())
    await client.put("/v1/secrets/app/m", json={"data": {"k": "v"}}, headers=t)
    for patch in ({"tags": 5}, {"description": "x" * 2000}, {"blob": "x" * 20_000}):
        response = await client.patch("/v1/secrets/app/m/metadata", json={"metadata": patch}, headers=t)
        await assert_error(response, 422, "validation_error")
    for n in range(3):  # each patch small, together too big
        response = await client.patch("/v1/secrets/app/m/metadata", json={"metadata": {f"k{n}": "x" * 7000}}, headers=t)
    await assert_error(response, 422, "validation_error")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"data": {"k": "v"}, "metadata": {"description": "a\\u0000b"}}', "metadata.description"),
        (b'{"data": {"k": "v"}, "metadata": {"a\\u0000b": "x"}}', "metadata.a\\u0000b"),
        (b'{"data": {"k": "v"}, "metadata": {"tags": ["ok", "x\\u0000"]}}', "metadata.tags[1]"),
        (b'{"data": {"k": "\\ud800"}}', "data.k"),
        (b'{"data": {"\\udfff": "v"}}', "data.\\udfff"),
        (b'{"data": {"k": "v"}, "metadata": {"owner": "\\ud83d"}}', "metadata.owner"),
    ],
)
async def test_text_that_cannot_be_stored_is_refused_naming_its_field(
    client: TestClient, token: TokenFactory, container: Container, body: bytes, field: str
) -> None:
    """A NUL (PostgreSQL text and JSON hold none) outside a secret's sealed data, or an unpaired surrogate (no UTF-8
    text holds one) anywhere: 422 naming the field, in a valid JSON answer; never a 500, and nothing stored."""
    response = await client.put("/v1/secrets/app/unstorable", data=body,
                                headers={**bearer(token()), "Content-Type": "application/json"})
    error = await assert_error(response, 422, "validation_error")
    assert error["details"]["fields"][0]["field"] == field
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_secrets") == 0


async def test_a_nul_inside_a_secrets_data_is_kept_exactly(client: TestClient, token: TokenFactory) -> None:
    """The data is sealed whole, never stored as text: a NUL there is a value like any other."""
    t = bearer(token())
    response = await client.put("/v1/secrets/app/binary", data=b'{"data": {"k": "a\\u0000b"}}',
                                headers={**t, "Content-Type": "application/json"})
    assert response.status == 201, await response.text()
    assert (await (await client.get("/v1/secrets/app/binary", headers=t)).json())["data"] == {"k": "a\x00b"}


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"1E400", b"123456789e999"])
async def test_a_number_too_large_for_a_double_is_refused_not_stored_as_null(
    client: TestClient, token: TokenFactory, container: Container, number: bytes
) -> None:
    t = bearer(token())
    body = b'{"data": {"n": ' + number + b"}}"
    response = await client.put("/v1/secrets/app/huge", data=body, headers={**t, "Content-Type": "application/json"})
    await assert_error(response, 400, "invalid_request")
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_secrets") == 0


async def test_every_timestamp_a_caller_sends_is_refused_at_the_calendars_edge(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    """One parser (scaivault.domain.timestamps) for all of them: none may turn into a 500 further down."""
    headers = bearer(token("audit:read", "audit:export"))
    early, late = "0001-01-01T00:00:00%2B14:00", "9999-12-31T23:59:59-14:00"
    for url in (f"/v1/audit/logs?from={early}", f"/v1/audit/logs?to={late}", f"/v1/audit/summary?from={early}",
                f"/v1/audit/secrets/app/db?to={late}"):
        await assert_error(await client.get(url, headers=headers), 400, "invalid_request")
    export = {"from": "0001-01-01T00:00:00+14:00", "to": "2026-01-01T00:00:00Z", "format": "jsonl",
              "destination": {"type": "local", "prefix": "x"}}
    await assert_error(await client.post("/v1/audit/export", json=export, headers=headers), 422, "validation_error")
    assert await container.pool.fetchval("SELECT count(*) FROM scaivault_audit_exports") == 0


async def test_a_nul_in_any_text_parameter_is_a_bad_request_not_a_500(client: TestClient, token: TokenFactory) -> None:
    """PostgreSQL refuses NUL in text: whichever parameter carries one, the answer is 400, found at the front door
    rather than handler by handler."""
    headers = bearer(token("audit:read"))
    for url in ("/v1/audit/logs?identity_id=a%00b", "/v1/audit/logs?request_id=a%00b",
                "/v1/audit/identities/user:a%00b"):
        await assert_error(await client.get(url, headers=headers), 400, "invalid_request")


async def test_undecodable_bytes_in_a_header_echoed_by_an_error_still_get_the_envelope(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    """A header's bytes that are not UTF-8 arrive as lone surrogates; an error naming the value (an X-Tenant-ID that
    is no tenant id) is still the JSON envelope, the bytes escaped, and the request leaves its access record."""
    url = client.make_url("/v1/secrets/app/db")
    reader, writer = await asyncio.open_connection(url.host, url.port)
    writer.write(
        b"GET /v1/secrets/app/db HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + b"Authorization: Bearer " + token().encode() + b"\r\nX-Tenant-ID: tnt_\xff\xfe\r\n\r\n"
    )
    head, _, body = (await reader.read()).partition(b"\r\n\r\n")
    writer.close()
    assert head.startswith(b"HTTP/1.1 400 "), head + body
    error = orjson.loads(body)["error"]
    assert error["code"] == "invalid_request" and error["details"]["tenant_id"] == "tnt_\\udcff\\udcfe"
    recorded = await container.pool.fetchval(
        "SELECT count(*) FROM scaivault_events WHERE topic = $1 AND position($2::bytea IN state) > 0",
        ACCESS_TOPIC, error["request_id"].encode(),
    )
    assert recorded == 1


async def test_a_token_up_to_the_authenticators_limit_reaches_it(client: TestClient, token: TokenFactory) -> None:
    """The HTTP parser admits an Authorization header as long as the longest token the authenticator accepts, so
    a long token gets the envelope (not the parser's plain-text answer, which would log the token's start)."""
    long_token = token() + "A" * 12_000
    await assert_error(await client.get("/v1/auth/whoami", headers=bearer(long_token)), 401, "token_invalid")
    too_long = "A" * (MAX_TOKEN_LENGTH + 1)
    await assert_error(await client.get("/v1/auth/whoami", headers=bearer(too_long)), 401, "token_invalid")
