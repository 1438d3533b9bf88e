"""/v1/identity with ScaiKey: sync runs started over the API against the stand-in ScaiKey (a real server on
loopback), their history, and the webhook receiver with its signature, freshness and replay checks."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from scaivault.bootstrap import Container
from scaivault.config import Settings
from scaivault.identity.signatures import MAX_AGE_SECONDS, signature
from tests.e2e.conftest import FOREIGN_TENANT, OTHER_PARTNER, OTHER_TENANT, PARTNER, TENANT, TokenFactory, bearer
from tests.e2e.helpers import admin, caller_token, error_of, grant, put_secrets
from tests.scaikey_standin import CLIENT_ID, CLIENT_SECRET, ScaiKeyStandIn

WEBHOOK_SECRET = "scaikey-webhook-secret-0123456789"
PREVIOUS_SECRET = "scaikey-webhook-previous-0123456789"
SYNC = ("identity:read", "identity:admin")


@pytest.fixture
def settings(database_url: str, tmp_path: Path, standin: tuple[ScaiKeyStandIn, str]) -> Settings:
    return Settings(
        database_url=database_url,
        data_dir=tmp_path / "data",
        bind_address="127.0.0.1:8443",
        rate_limits="*=1000000/s",
        scaikey_url=standin[1],
        scaikey_client_id=CLIENT_ID,
        scaikey_client_secret=CLIENT_SECRET,
        scaikey_webhook_secret=WEBHOOK_SECRET,
        scaikey_webhook_previous_secret=PREVIOUS_SECRET,
    )


async def start_sync(client: TestClient, headers: dict[str, str], query: str = "") -> Any:
    return await client.post(f"/v1/identity/sync{query}", headers=headers)


async def test_a_sync_started_over_the_api_runs_and_shows_in_the_history(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    # Not alice: once synced, alice's mirrored roles (tenant_admin, from ScaiKey) are hers, whatever a token says.
    partner_admin = bearer(token(*SYNC, identity="user:ops@acme.example", roles=("partner_admin",)))
    started = await start_sync(client, partner_admin)
    assert started.status == 202, await started.text()
    body = await started.json()
    assert body["sync_id"].startswith("syn_") and body["status"] == "running" and body["started_at"].endswith("Z")
    assert body["partner_id"] == PARTNER and started.headers["Location"] == f"/v1/identity/sync/{body['sync_id']}"
    await container.identity.synchronizer.wait()

    run = await (await client.get(f"/v1/identity/sync/{body['sync_id']}", headers=partner_admin)).json()
    assert run["status"] == "completed" and run["trigger"] == "manual"
    assert run["requested_by"] == "user:ops@acme.example" and run["completed_at"] is not None
    assert run["stats"]["users_created"] == 3
    history = await (await client.get("/v1/identity/sync/history", headers=partner_admin)).json()
    assert [h["sync_id"] for h in history["syncs"]] == [body["sync_id"]] and history["total"] == 1

    users = await (await client.get(f"/v1/identity/tenants/{TENANT}/users", headers=partner_admin)).json()
    assert [(u["id"], u["groups"], u["roles"]) for u in users["users"]] == [
        ("usr_alice", ["grp_sre"], ["tenant_admin"]), ("usr_bob", ["grp_dev", "grp_sre"], []),
    ]
    assert all(u["last_synced_at"] is not None for u in users["users"])
    partners = await (await client.get("/v1/identity/partners", headers=partner_admin)).json()
    assert partners["partners"][0]["slug"] == "acme" and partners["partners"][0]["last_synced_at"] is not None

    # Another partner's admin sees neither the run nor its details.
    foreign = bearer(token(*SYNC, tenant=FOREIGN_TENANT, partner=OTHER_PARTNER, roles=("partner_admin",)))
    assert (await (await client.get("/v1/identity/sync/history", headers=foreign)).json())["total"] == 0
    assert await error_of(await client.get(f"/v1/identity/sync/{body['sync_id']}", headers=foreign)) == (
        404, "not_found"
    )


async def test_who_may_sync_what(client: TestClient, token: TokenFactory, container: Container) -> None:
    tenant_admin = bearer(token(*SYNC, roles=("tenant_admin",)))
    partner_admin = bearer(token(*SYNC, roles=("partner_admin",)))
    super_admin = bearer(token(*SYNC, identity="user:root@acme.example", roles=("super_admin",)))
    reader = bearer(token("identity:read", roles=("partner_admin",)))
    assert await error_of(await start_sync(client, reader)) == (403, "insufficient_scope")
    assert await error_of(await start_sync(client, tenant_admin, f"?tenant_id={OTHER_TENANT}")) == (
        403, "tenant_access_denied"
    )
    assert await error_of(await start_sync(client, tenant_admin, f"?partner_id={PARTNER}")) == (
        403, "tenant_access_denied"
    )
    assert await error_of(await start_sync(client, partner_admin, f"?partner_id={OTHER_PARTNER}")) == (
        403, "tenant_access_denied"
    )
    assert await error_of(await start_sync(client, partner_admin, f"?tenant_id={FOREIGN_TENANT}")) == (
        403, "tenant_access_denied"
    )
    assert await error_of(await start_sync(client, partner_admin, "?tenant_id=bad")) == (400, "invalid_request")
    own = await start_sync(client, tenant_admin)
    assert own.status == 202 and (await own.json())["tenant_id"] == TENANT
    everything = await start_sync(client, super_admin)
    assert everything.status == 202 and (await everything.json())["partner_id"] is None
    await container.identity.synchronizer.wait()
    # The tenant admin's history shows its tenant's run; the super admin's, every run.
    mine = await (await client.get("/v1/identity/sync/history", headers=tenant_admin)).json()
    assert mine["total"] == 1
    assert (await (await client.get("/v1/identity/sync/history", headers=super_admin)).json())["total"] == 2
    # Synced, alice's token no longer speaks for her roles: ScaiKey gave her tenant_admin only.
    alice_as_super = bearer(token(*SYNC, roles=("super_admin",)))
    assert (await (await client.get("/v1/auth/whoami", headers=alice_as_super)).json())["roles"] == ["tenant_admin"]


def deliver(client: TestClient, event: dict[str, Any], *, secret: str = WEBHOOK_SECRET, at: int | None = None,
            raw: bytes | None = None) -> Any:
    body = raw if raw is not None else orjson.dumps(event)
    timestamp = str(int(time.time()) if at is None else at)
    return client.post(
        "/v1/identity/webhooks/scaikey",
        data=body,
        headers={"X-ScaiKey-Timestamp": timestamp, "X-ScaiKey-Signature": signature(secret, timestamp, body),
                 "Content-Type": "application/json"},
    )


def user_event(event_id: str, kind: str = "user.created", **changes: Any) -> dict[str, Any]:
    data = {"id": "usr_zed", "tenant_id": TENANT, "email": "zed@acme.example", "display_name": "Zed",
            "status": "ACTIVE", "roles": ["tenant_admin"], **changes}
    return {"event_id": event_id, "event_type": kind, "data": data}


async def test_signed_deliveries_keep_the_mirror_current(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    reader = bearer(token("identity:read"))
    applied = await deliver(client, {"event_id": "evt_g1", "event_type": "group.created",
                                     "data": {"id": "grp_ops", "tenant_id": TENANT, "name": "ops"}})
    assert applied.status == 200 and (await applied.json())["applied"] is True
    applied = await deliver(client, user_event("evt_1", groups=["grp_ops"]))
    assert (await applied.json()) == {"ok": True, "event_id": "evt_1", "applied": True, "duplicate": False}
    zed = await (await client.get("/v1/identity/users/usr_zed", headers=reader)).json()
    assert (zed["email"], zed["roles"], zed["groups"], zed["source"]) == (
        "zed@acme.example", ["tenant_admin"], ["grp_ops"], "scaikey"
    )
    # Signed with the previous secret (a rotation under way): accepted.
    renamed = await deliver(client, user_event("evt_2", "user.updated", display_name="Zed Z"), secret=PREVIOUS_SECRET)
    assert renamed.status == 200
    removed_member = await deliver(client, {"event_id": "evt_3", "event_type": "group.member_removed",
                                            "data": {"tenant_id": TENANT, "group_id": "grp_ops", "user_id": "usr_zed"}})
    assert (await removed_member.json())["applied"] is True
    zed = await (await client.get("/v1/identity/users/usr_zed", headers=reader)).json()
    assert (zed["display_name"], zed["groups"]) == ("Zed Z", [])
    gone = await deliver(client, {"event_id": "evt_4", "event_type": "user.deleted",
                                  "data": {"tenant_id": TENANT, "id": "usr_zed"}})
    assert gone.status == 200
    assert (await client.get("/v1/identity/users/usr_zed", headers=reader)).status == 404

    tenant = await deliver(client, {"event_id": "evt_5", "event_type": "tenant.created",
                                    "data": {"id": "tnt_acme_new", "partner_id": PARTNER, "name": "New"}})
    assert tenant.status == 200
    assert await container.tenants.partner_of("tnt_acme_new") == PARTNER
    # The access records name the delivery, not a credential.
    states = [bytes(r["state"]) for r in await container.pool.fetch(
        "SELECT state FROM scaivault_events WHERE topic = 'scaivault.domain.access:AccessRecorded'")]
    assert any(b"evt_4" in s and b"system:scaikey" in s for s in states)
    assert not any(WEBHOOK_SECRET.encode() in s for s in states)


async def test_a_replayed_delivery_is_acknowledged_and_not_applied_again(
    client: TestClient, token: TokenFactory
) -> None:
    reader = bearer(token("identity:read"))
    first = user_event("evt_r1")
    assert (await (await deliver(client, first)).json())["applied"] is True
    await deliver(client, user_event("evt_r2", "user.updated", roles=[]))
    replay = await deliver(client, first)  # re-signed with a fresh timestamp, even: the event id decides
    assert replay.status == 200
    assert (await replay.json()) == {"ok": True, "event_id": "evt_r1", "applied": False, "duplicate": True}
    zed = await (await client.get("/v1/identity/users/usr_zed", headers=reader)).json()
    assert zed["roles"] == []  # the replay did not bring the old role back


async def test_forged_stale_and_malformed_deliveries_are_refused_and_change_nothing(
    client: TestClient, token: TokenFactory
) -> None:
    reader = bearer(token("identity:read"))
    event = user_event("evt_f1")
    forged = await deliver(client, event, secret="not-the-shared-secret-000")
    assert await error_of(forged) == (401, "signature_invalid")
    # A minute beyond the window either way: whole seconds and a clock that moves on cannot bring them within it.
    stale = MAX_AGE_SECONDS + 60
    assert await error_of(await deliver(client, event, at=int(time.time()) - stale)) == (401, "signature_expired")
    assert await error_of(await deliver(client, event, at=int(time.time()) + stale)) == (401, "signature_expired")
    body = orjson.dumps(event)
    unsigned = await client.post("/v1/identity/webhooks/scaikey", data=body)
    assert await error_of(unsigned) == (400, "invalid_request")
    tampered = await client.post(
        "/v1/identity/webhooks/scaikey",
        data=body.replace(b"tenant_admin", b"super_admin"),
        headers={"X-ScaiKey-Timestamp": str(int(time.time())),
                 "X-ScaiKey-Signature": signature(WEBHOOK_SECRET, str(int(time.time())), body)},
    )
    assert await error_of(tampered) == (401, "signature_invalid")
    assert await error_of(await deliver(client, {}, raw=b"[1, 2]")) == (400, "invalid_request")
    assert await error_of(await deliver(client, {"event_id": "evt_f2"})) == (422, "validation_error")
    bad_data = user_event("evt_f3", email="not an address")
    assert await error_of(await deliver(client, bad_data)) == (422, "validation_error")
    assert (await client.get("/v1/identity/users/usr_zed", headers=reader)).status == 404
    # A delivery that failed is not remembered as delivered: ScaiKey's corrected retry gets through.
    retry = await deliver(client, user_event("evt_f3"))
    assert (await retry.json())["applied"] is True


async def test_deliveries_about_unknown_tenants_or_types_are_acknowledged_and_ignored(client: TestClient) -> None:
    unknown_tenant = await deliver(client, user_event("evt_u1", tenant_id="tnt_nowhere"))
    assert (await unknown_tenant.json())["ignored"] == "unknown tenant"
    unknown_type = await deliver(client, {"event_id": "evt_u2", "event_type": "user.teleported",
                                          "data": {"tenant_id": TENANT}})
    assert (await unknown_type.json())["ignored"] == "unknown event type"
    unknown_member = await deliver(client, {"event_id": "evt_u3", "event_type": "group.member_added",
                                            "data": {"tenant_id": TENANT, "group_id": "grp_x", "user_id": "usr_x"}})
    assert (await unknown_member.json())["ignored"] == "unknown user or group"


@pytest.fixture
def no_secret_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"scaikey_webhook_secret": None, "scaikey_webhook_previous_secret": None})


async def test_without_a_webhook_secret_there_is_no_receiver(no_secret_settings: Settings, pool: Any) -> None:
    from scaivault.bootstrap import build_container
    from scaivault.http.app import create_app

    container = await build_container(no_secret_settings)
    try:
        async with TestClient(TestServer(create_app(container=container))) as client:
            response = await deliver(client, user_event("evt_n1"))
            assert await error_of(response) == (404, "not_found")
    finally:
        await container.close()


async def test_each_caller_sees_the_runs_that_covered_it(
    client: TestClient, token: TokenFactory, container: Container
) -> None:
    """One rule for the history and for a single run: a tenant's reader sees its tenant's runs and its partner's
    partner-wide runs, never another tenant's run; a super admin sees every run."""
    tenant_run = await (await start_sync(client, bearer(token(*SYNC, roles=("tenant_admin",))))).json()
    partner_run = await (await start_sync(client, bearer(token(*SYNC, roles=("partner_admin",))))).json()
    await container.identity.synchronizer.wait()
    assert (tenant_run["tenant_id"], partner_run["tenant_id"]) == (TENANT, None)
    readers = {
        "own tenant": bearer(token("identity:read", roles=())),
        "sibling tenant": bearer(token("identity:read", tenant=OTHER_TENANT, roles=())),
        "other partner": bearer(token("identity:read", tenant=FOREIGN_TENANT, partner=OTHER_PARTNER, roles=())),
        "super admin": bearer(token("identity:read", tenant=FOREIGN_TENANT, partner=OTHER_PARTNER,
                                    identity="user:root@elsewhere.example", roles=("super_admin",))),
    }
    expected = {
        "own tenant": {tenant_run["sync_id"], partner_run["sync_id"]},
        "sibling tenant": {partner_run["sync_id"]},
        "other partner": set(),
        "super admin": {tenant_run["sync_id"], partner_run["sync_id"]},
    }
    for who, headers in readers.items():
        history = await (await client.get("/v1/identity/sync/history", headers=headers)).json()
        assert {run["sync_id"] for run in history["syncs"]} == expected[who], who
        assert history["total"] == len(expected[who]), who
        for run in (tenant_run, partner_run):
            response = await client.get(f"/v1/identity/sync/{run['sync_id']}", headers=headers)
            if run["sync_id"] in expected[who]:
                assert response.status == 200 and (await response.json())["sync_id"] == run["sync_id"], who
            else:
                assert await error_of(response) == (404, "not_found"), who


@pytest.mark.parametrize("change", ["user suspended", "group suspended", "group renamed", "claimed group suspended"])
async def test_a_status_or_a_name_scaikey_reports_counts_from_the_next_request(
    client: TestClient, container: Container, change: str
) -> None:
    """A delivery that changes a user's or a group's profile (not a membership) changes what bindings grant at once
    on this server, however recently the caller's groups were looked up; a group ScaiKey suspends grants nothing
    through the tokens that claim it either."""
    await put_secrets(client, container, "app/db")
    ops = {"id": "grp_ops", "tenant_id": TENANT, "name": "ops", "status": "ACTIVE"}
    assert (await deliver(client, {"event_id": "evt_g", "event_type": "group.created", "data": ops})).status == 200
    assert (await deliver(client, user_event("evt_u", roles=[], groups=["grp_ops"]))).status == 200
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["read"]}], identity_id="group:ops")
    if change == "claimed group suspended":  # an identity the mirror does not know, in ops by its token only
        caller = caller_token(container, "secrets:read", identity="user:yan@acme.example", groups=("group:ops",))
    else:
        caller = caller_token(container, "secrets:read", identity="user:zed@acme.example")
    assert (await client.get("/v1/secrets/app/db", headers=caller)).status == 200

    if change == "user suspended":
        event = user_event("evt_c", "user.updated", roles=[], groups=["grp_ops"], status="SUSPENDED")
    else:
        profile = {"name": "operations"} if change == "group renamed" else {"status": "SUSPENDED"}
        event = {"event_id": "evt_c", "event_type": "group.updated", "data": {**ops, **profile}}
    applied = await deliver(client, event)
    assert applied.status == 200 and (await applied.json())["applied"] is True, await applied.text()
    assert await error_of(await client.get("/v1/secrets/app/db", headers=caller)) == (403, "access_denied")
    if change == "group suspended":  # the dry run agrees, asked about the group itself
        dry_run = await client.post("/v1/policies/test", headers=admin(container), json={
            "identity_id": "group:ops", "path": "app/db", "permission": "read"})
        assert (await dry_run.json())["allowed"] is False
