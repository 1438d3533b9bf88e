"""``scaivault events list|show`` as operators run it: a real process on the test server's database and data dir."""

from __future__ import annotations

import asyncio
import base64
import subprocess
from datetime import timedelta
from typing import Any

import orjson
from aiohttp.test_utils import TestClient

from commands.tokens import IssueToken
from scaivault.bootstrap import Container
from scaivault.domain.access import access_stream_id
from scaivault.domain.secrets import secret_stream_id
from tests.e2e.conftest import OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import caught_up, run_cli_async
from tests.helpers import instant_between_steps

CANARIES = ("canary-alpha", "canary-beta", "canary-partner")


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [orjson.loads(line) for line in result.stdout.splitlines()]


async def put(client: TestClient, token: str, url: str, data: dict[str, str]) -> None:
    response = await client.put(url, json={"data": data}, headers=bearer(token))
    assert response.status in (200, 201), await response.text()


async def test_events_list_filters_and_never_prints_values_or_ciphertext(
    client: TestClient, token: TokenFactory, container: Container, cli_env: dict[str, str]
) -> None:
    mine, admin = token(), token(roles=("partner_admin",))
    await put(client, mine, "/v1/secrets/app/db", {"pw": "canary-alpha"})
    middle = await instant_between_steps()
    await put(client, mine, "/v1/secrets/app/db", {"pw": "canary-beta"})
    await put(client, token(tenant=OTHER_TENANT), "/v1/secrets/app/db", {"pw": "canary-alpha"})
    await put(client, admin, "/v1/partner/secrets/shared/cert", {"pem": "canary-partner"})
    await client.get("/v1/secrets/app/db", headers=bearer(mine))
    pat = await container.token_commands.issue(IssueToken(
        partner_id=PARTNER, tenant_id=TENANT, identity_id="sa:ci", scopes=("secrets:read",), ttl=timedelta(days=1),
        personal_access_token=True,
    ))
    assert await container.token_commands.revoke(pat, actor="user:root@acme.example")
    await caught_up(container)
    stream = secret_stream_id(TENANT, "app/db")

    everything, by_tenant, by_stream, written, deleted_exact, partner, late, text = await asyncio.gather(
        run_cli_async(cli_env, "events", "list", "--json", "--limit", "1000"),
        run_cli_async(cli_env, "events", "list", "--json", "--tenant", TENANT, "--limit", "1000"),
        run_cli_async(cli_env, "events", "list", "--json", "--stream", str(stream)),
        run_cli_async(cli_env, "events", "list", "--json", "--type", "versionwritten"),
        run_cli_async(cli_env, "events", "list", "--json", "--type", "scaivault.domain.secrets:Secret.Deleted"),
        run_cli_async(cli_env, "events", "list", "--json", "--partner", PARTNER, "--type", "Secret.VersionWritten"),
        run_cli_async(cli_env, "events", "list", "--json", "--since", middle.isoformat(), "--type", "VersionWritten"),
        run_cli_async(cli_env, "events", "list", "--tenant", TENANT),
    )
    all_events = json_lines(everything)
    assert everything.stderr == ""  # the index is caught up: no lag note
    ids = [e["notification_id"] for e in all_events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    assert set(all_events[0]) == {
        "notification_id", "occurred_at", "type", "topic", "stream_id", "stream_version", "tenant_id", "partner_id",
        "actor", "request_id", "state",
    }
    types = {e["type"] for e in all_events}
    assert {"Partner.Registered", "Tenant.Registered", "Secret.Created", "Secret.VersionWritten", "AccessRecorded",
            "PersonalAccessToken.Issued", "PersonalAccessToken.Revoked"} <= types

    # No value and no ciphertext bytes, anywhere; a ciphertext is shown by its length.
    ciphertexts = [bytes(r["ciphertext"]) for r in await container.pool.fetch(
        "SELECT ciphertext FROM scaivault_secret_versions WHERE ciphertext IS NOT NULL")]
    assert len(ciphertexts) == 4
    for output in (everything.stdout, by_tenant.stdout, text.stdout, written.stdout):
        for canary in CANARIES:
            assert canary not in output
        for ciphertext in ciphertexts:
            assert base64.b64encode(ciphertext).decode() not in output and ciphertext.hex() not in output
    written_events = json_lines(written)
    assert {e["type"] for e in written_events} == {"Secret.VersionWritten"} and len(written_events) == 4
    assert {e["state"]["ciphertext"] for e in written_events} == {f"<ciphertext: {len(c)} bytes>" for c in ciphertexts}
    first = written_events[0]
    assert (first["tenant_id"], first["partner_id"], first["actor"]) == (TENANT, PARTNER, "user:alice@acme.example")
    assert first["request_id"].startswith("req_") and first["state"]["version"] == 1 and first["state"]["data_key_id"]

    # Filters.
    tenant_events = json_lines(by_tenant)
    assert tenant_events and {e["tenant_id"] for e in tenant_events} == {TENANT}
    assert {"Secret.VersionWritten", "AccessRecorded", "Tenant.Registered", "PersonalAccessToken.Revoked"} <= {
        e["type"] for e in tenant_events
    }
    revoked = next(e for e in tenant_events if e["type"] == "PersonalAccessToken.Revoked")
    assert revoked["actor"] == "user:root@acme.example"  # its tenant comes from the stream's Issued event
    assert [e["type"] for e in json_lines(by_stream)] == [
        "Secret.Created", "Secret.VersionWritten", "Secret.VersionWritten"]
    assert {e["stream_id"] for e in json_lines(by_stream)} == {str(stream)}
    assert json_lines(deleted_exact) == []
    partner_writes = json_lines(partner)  # the partner's own secret, and its tenants'
    assert {e["partner_id"] for e in partner_writes} == {PARTNER}
    assert sorted(e["tenant_id"] or "" for e in partner_writes) == ["", OTHER_TENANT, TENANT, TENANT]
    assert [(e["tenant_id"], e["state"]["version"]) for e in json_lines(late)] == [
        (TENANT, 2), (OTHER_TENANT, 1), (None, 1)]

    # One line per event: id, time, type, stream, tenant, actor, request id.
    lines = [line.split("  ") for line in text.stdout.splitlines()]
    assert [int(fields[0]) for fields in lines] == [e["notification_id"] for e in tenant_events]
    assert all(len(fields) == 7 and fields[4] == TENANT and fields[1].endswith("Z") for fields in lines)

    # Paging by notification id; since/until bound a window.
    page = json_lines(await run_cli_async(cli_env, "events", "list", "--json", "--after", str(ids[2]), "--limit", "2"))
    assert [e["notification_id"] for e in page] == ids[3:5]
    window = json_lines(await run_cli_async(cli_env, "events", "list", "--json", "--until", middle.isoformat()))
    assert window and all(e["occurred_at"] <= middle.isoformat().replace("+00:00", "Z") for e in window)


async def test_events_show_and_errors_and_lag(
    client: TestClient, token: TokenFactory, container: Container, cli_env: dict[str, str]
) -> None:
    await put(client, token(), "/v1/secrets/app/db", {"pw": "canary-alpha"})
    await caught_up(container)
    written = json_lines(await run_cli_async(cli_env, "events", "list", "--json", "--type", "VersionWritten"))[0]

    shown, shown_json, missing, bad_since, bad_stream = await asyncio.gather(
        run_cli_async(cli_env, "events", "show", str(written["notification_id"])),
        run_cli_async(cli_env, "events", "show", str(written["notification_id"]), "--json"),
        run_cli_async(cli_env, "events", "show", "999999"),
        run_cli_async(cli_env, "events", "list", "--since", "last tuesday"),
        run_cli_async(cli_env, "events", "list", "--stream", "not-a-uuid"),
    )
    assert shown.returncode == 0 and "canary" not in shown.stdout
    assert shown.stdout.splitlines()[0].split("  ")[2] == "Secret.VersionWritten"
    assert "  ciphertext: \"<ciphertext: " in shown.stdout and "  data_key_id: " in shown.stdout
    assert orjson.loads(shown_json.stdout) == written
    assert missing.returncode == 4 and missing.stdout == ""
    assert bad_since.returncode == 5 and "--since" in bad_since.stderr
    assert bad_stream.returncode == 5 and "--stream" in bad_stream.stderr

    # The index lags when no server runs its projection: the listing says so on stderr.
    await container.projections.stop()
    await container.tenancy_commands.register_tenant(PARTNER, "tnt_acme_new")
    lagging = await run_cli_async(cli_env, "events", "list", "--tenant", "tnt_acme_new")
    assert lagging.returncode == 0 and lagging.stdout == ""
    head = await container.store.max_notification_id(container.pool)
    assert "behind" in lagging.stderr and f"head {head}" in lagging.stderr
    unknown = await run_cli_async(cli_env, "events", "list", "--type", "NoSuchEvent")
    assert unknown.returncode == 0 and unknown.stdout == "" and "NoSuchEvent" in unknown.stderr


async def test_access_records_are_listed_from_the_audit_log_not_indexed_twice(
    client: TestClient, token: TokenFactory, container: Container, cli_env: dict[str, str]
) -> None:
    await put(client, token(), "/v1/secrets/app/db", {"pw": "canary-alpha"})
    await client.get("/v1/secrets/app/db", headers=bearer(token()))
    await client.get("/v1/secrets/app/db", headers=bearer(token(tenant=OTHER_TENANT)))
    await caught_up(container)
    assert await container.pool.fetchval(
        "SELECT count(*) FROM scaivault_event_index WHERE topic LIKE '%AccessRecorded'") == 0
    audited = await container.pool.fetch(
        "SELECT notification_id, tenant_id, identity_id, request_id FROM scaivault_audit_log ORDER BY notification_id")

    listed, mine, shown = await asyncio.gather(
        run_cli_async(cli_env, "events", "list", "--json", "--type", "AccessRecorded"),
        run_cli_async(cli_env, "events", "list", "--json", "--type", "AccessRecorded", "--tenant", OTHER_TENANT),
        run_cli_async(cli_env, "events", "show", "--json", str(audited[-1]["notification_id"])),
    )
    access_events = json_lines(listed)
    assert [(e["notification_id"], e["tenant_id"], e["actor"], e["request_id"]) for e in access_events] == [
        tuple(row) for row in audited
    ]
    assert all(e["stream_id"] == str(access_stream_id(e["request_id"])) for e in access_events)
    assert [e["tenant_id"] for e in json_lines(mine)] == [OTHER_TENANT]
    document = orjson.loads(shown.stdout)
    assert document["type"] == "AccessRecorded" and document["tenant_id"] == OTHER_TENANT
    assert document["state"]["route"].startswith("/v1/secrets/")
