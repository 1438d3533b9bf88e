"""/v1/subscriptions over HTTP (spec reference/subscriptions), with the fan-out projection running as the server runs
it: every endpoint, bad input answered with the spec's envelope, who may see, change and poll a subscription, long
polls that answer at once, on a write made while they wait, or empty at their timeout, acknowledgements and
redelivery, and policies that keep a subscriber from learning of secrets it may not list."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from scaivault.bootstrap import Container
from scaivault.config import Settings
from tests.e2e.conftest import GENEROUS_RATE_LIMITS, OTHER_TENANT
from tests.e2e.helpers import caller_token, caught_up, error_of, grant, put_secrets
from tests.helpers import eventually
from tests.webhook_receiver import Receiver, receiving

SCOPES = ("subscriptions:read", "subscriptions:write", "secrets:list")
SECRET = "a-signing-secret-of-32-characters"
WATCH_ALL = {"name": "everything", "paths": ["**"], "events": ["secret.*"], "delivery": {"type": "polling"}}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Push receivers run on loopback: the operator allows it (and plain http to it)."""
    return Settings(
        database_url=database_url, data_dir=tmp_path / "data", bind_address="127.0.0.1:8443",
        rate_limits=GENEROUS_RATE_LIMITS, egress_allow="127.0.0.1/32",
    )


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving() as receiver:
        yield receiver


def subscriber(container: Container, identity: str = "sa:svc", **fields: Any) -> dict[str, str]:
    """A caller with no role: it sees only what policies grant it."""
    return caller_token(container, *SCOPES, identity=identity, **fields)


def tenant_admin(container: Container) -> dict[str, str]:
    return caller_token(container, *SCOPES, "secrets:write", identity="user:admin@acme.example",
                        roles=("tenant_admin",))


async def create(client: TestClient, headers: dict[str, str], **fields: Any) -> dict[str, Any]:
    response = await client.post("/v1/subscriptions", json={**WATCH_ALL, **fields}, headers=headers)
    body = await response.json()
    assert response.status == 201, body
    return body


async def poll(client: TestClient, headers: dict[str, str], subscription_id: str, query: str = "timeout=10"
               ) -> dict[str, Any]:
    response = await client.get(f"/v1/subscriptions/{subscription_id}/poll?{query}", headers=headers)
    body = await response.json()
    assert response.status == 200, body
    return body


def paths_of(answer: dict[str, Any]) -> list[str]:
    return [event["path"] for event in answer["events"]]


async def test_create_fetch_list_patch_and_delete(client: TestClient, container: Container) -> None:
    mine = subscriber(container)
    response = await client.post("/v1/subscriptions", headers=mine, json={
        "name": "db watcher", "paths": ["app/**", "db/*"], "events": ["secret.created", "secret.rotated"],
        "delivery": {"type": "polling", "buffer_size": 50}, "filters": {"tags": ["prod"]},
    })
    created = await response.json()
    assert response.status == 201 and response.headers["Location"] == f"/v1/subscriptions/{created['id']}"
    assert created["id"].startswith("sub_") and created["status"] == "active"
    assert (created["name"], created["identity_id"], created["paths"]) == ("db watcher", "sa:svc", ["app/**", "db/*"])
    assert created["delivery"] == {"type": "polling", "buffer_size": 50} and created["filters"] == {"tags": ["prod"]}
    assert created["queue"] == {"queued": 0, "dropped_events": 0, "last_dropped_at": None}
    url = f"/v1/subscriptions/{created['id']}"
    assert await (await client.get(url, headers=mine)).json() == created

    patched = await client.patch(url, headers=mine, json={"paths": ["web/**"], "delivery": {"buffer_size": 7}})
    body = await patched.json()
    assert patched.status == 200 and body["paths"] == ["web/**"] and body["events"] == created["events"]
    assert body["delivery"] == {"type": "polling", "buffer_size": 7} and body["updated_at"] >= created["updated_at"]

    other = await create(client, subscriber(container, "sa:other"))
    listed = await (await client.get("/v1/subscriptions", headers=mine)).json()
    assert [s["id"] for s in listed["subscriptions"]] == [created["id"]] and listed["has_more"] is False
    everything = await (await client.get("/v1/subscriptions?limit=1", headers=tenant_admin(container))).json()
    assert [s["id"] for s in everything["subscriptions"]] == [created["id"]] and everything["has_more"] is True
    rest = await client.get(f"/v1/subscriptions?limit=1&cursor={everything['cursor']}", headers=tenant_admin(container))
    assert [s["id"] for s in (await rest.json())["subscriptions"]] == [other["id"]]
    mine_cursor = await client.get(f"/v1/subscriptions?cursor={everything['cursor']}", headers=mine)
    assert await error_of(mine_cursor) == (400, "invalid_cursor")  # a listing of someone else's view

    deleted = await client.delete(url, headers=mine)
    assert deleted.status == 200 and await deleted.json() == {"id": created["id"], "deleted": True}
    assert await error_of(await client.get(url, headers=mine)) == (404, "subscription_not_found")
    assert await error_of(await client.delete(url, headers=mine)) == (404, "subscription_not_found")


async def test_push_subscriptions_are_for_admins_and_never_show_their_secret(
    client: TestClient, container: Container
) -> None:
    push = {"type": "webhook", "url": "https://receiver.example/hook", "secret": SECRET}
    refused = await client.post("/v1/subscriptions", json={**WATCH_ALL, "delivery": push},
                                headers=subscriber(container))
    assert await error_of(refused) == (403, "access_denied")
    created = await create(client, tenant_admin(container), delivery=push)
    assert created["delivery"] == {"type": "webhook", "url": "https://receiver.example/hook"}
    assert created["identity_id"] == "user:admin@acme.example"
    url = f"/v1/subscriptions/{created['id']}"
    fetched = await client.get(url, headers=tenant_admin(container))
    assert SECRET not in await fetched.text()
    to_polling = await client.patch(url, json={"delivery": {"type": "polling"}}, headers=tenant_admin(container))
    assert (await to_polling.json())["delivery"] == {"type": "polling", "buffer_size": 1000}
    polled = await client.get(f"/v1/subscriptions/{created['id']}/poll?timeout=0", headers=tenant_admin(container))
    assert polled.status == 200


async def test_bad_input_gets_the_error_envelope(client: TestClient, container: Container) -> None:
    mine = subscriber(container)
    for body, expected in [
        ({**WATCH_ALL, "name": None}, (422, "validation_error")),
        ({k: v for k, v in WATCH_ALL.items() if k != "paths"}, (422, "validation_error")),
        ({**WATCH_ALL, "paths": []}, (422, "validation_error")),
        ({**WATCH_ALL, "paths": ["App/**"]}, (400, "invalid_glob")),
        ({**WATCH_ALL, "events": ["secret.nonsense"]}, (422, "validation_error")),
        ({**WATCH_ALL, "delivery": {"type": "carrier-pigeon"}}, (422, "validation_error")),
        ({**WATCH_ALL, "delivery": {"type": "polling", "buffer_size": 0}}, (422, "validation_error")),
        ({**WATCH_ALL, "delivery": {"type": "polling", "buffer_size": 10_001}}, (422, "validation_error")),
        ({**WATCH_ALL, "delivery": {"type": "webhook", "url": "https://x.example/"}}, (422, "validation_error")),
        ({**WATCH_ALL, "filters": {"colour": "red"}}, (422, "validation_error")),
        ({**WATCH_ALL, "surprise": True}, (422, "validation_error")),
    ]:
        response = await client.post("/v1/subscriptions", json=body, headers=mine)
        assert await error_of(response) == expected, body
    broken = await client.post("/v1/subscriptions", data=b"{not json", headers=mine)
    assert await error_of(broken) == (400, "invalid_request")
    no_scope = caller_token(container, "subscriptions:read")
    assert await error_of(await client.post("/v1/subscriptions", json=WATCH_ALL, headers=no_scope)) == (
        403, "insufficient_scope"
    )

    created = await create(client, mine)
    url = f"/v1/subscriptions/{created['id']}"
    assert await error_of(await client.patch(url, json={"name": "renamed"}, headers=mine)) == (
        422, "validation_error"
    )
    assert await error_of(await client.patch(url, json={"paths": None}, headers=mine)) == (422, "validation_error")
    for query, parameter in [
        ("timeout=61", "timeout"), ("timeout=abc", "timeout"), ("timeout=-1", "timeout"), ("timeout=2m", "timeout"),
        ("max_events=0", "max_events"), ("max_events=1001", "max_events"), ("max_events=x", "max_events"),
        ("since_event_id=nope", "since_event_id"), ("since_event_id=evt_00000000000000000000000000", "since_event_id"),
    ]:
        response = await client.get(f"{url}/poll?{query}", headers=mine)
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["details"]["parameter"]) == (
            400, "invalid_request", parameter
        ), query
    for body in ({"event_ids": []}, {"event_ids": "evt_x"}, {}, {"event_ids": [1]}):
        assert await error_of(await client.post(f"{url}/ack", json=body, headers=mine)) == (
            422, "validation_error"
        ), body
    for missing in ("/v1/subscriptions/sub_missing", "/v1/subscriptions/sub_missing/poll"):
        assert await error_of(await client.get(missing, headers=mine)) == (404, "subscription_not_found")


async def test_only_the_owner_polls_and_others_see_nothing(client: TestClient, container: Container) -> None:
    created = await create(client, subscriber(container))
    url = f"/v1/subscriptions/{created['id']}"
    stranger = subscriber(container, "sa:stranger")
    for response in (await client.get(url, headers=stranger),
                     await client.get(f"{url}/poll?timeout=0", headers=stranger),
                     await client.post(f"{url}/ack", json={"event_ids": ["evt_x"]}, headers=stranger),
                     await client.patch(url, json={"paths": ["x/*"]}, headers=stranger),
                     await client.delete(url, headers=stranger)):
        assert await error_of(response) == (404, "subscription_not_found")
    boss = tenant_admin(container)
    assert (await client.get(url, headers=boss)).status == 200  # administrators see and manage it ...
    assert await error_of(await client.get(f"{url}/poll?timeout=0", headers=boss)) == (403, "access_denied")
    assert await error_of(await client.post(f"{url}/ack", json={"event_ids": ["evt_x"]}, headers=boss)) == (
        403, "access_denied"
    )  # ... but do not consume its events
    other_tenant = subscriber(container, tenant=OTHER_TENANT)
    assert await error_of(await client.get(url, headers=other_tenant)) == (404, "subscription_not_found")
    answer = await poll(client, subscriber(container), created["id"], "timeout=0")
    assert answer == {"events": [], "has_more": False, "dropped_events": 0}


async def test_a_long_poll_answers_at_once_when_events_wait(client: TestClient, container: Container) -> None:
    mine = subscriber(container, roles=("tenant_admin",))
    created = await create(client, mine)
    await put_secrets(client, container, "app/one", "app/two")
    first = await poll(client, mine, created["id"], "timeout=20")  # waits for the fan-out at most
    deadline = time.monotonic() + 20
    events = first["events"]
    while len(events) < 2 and time.monotonic() < deadline:
        events = (await poll(client, mine, created["id"], "timeout=20"))["events"]
    assert [(e["event_type"], e["path"]) for e in events] == [("secret.created", "app/one"),
                                                              ("secret.created", "app/two")]
    assert all(e["event_id"].startswith("evt_") and e["tenant_id"] == "tnt_acme_prod" for e in events)
    started = time.monotonic()
    again = await poll(client, mine, created["id"], "timeout=30")
    assert time.monotonic() - started < 5 and paths_of(again) == ["app/one", "app/two"]
    one = await poll(client, mine, created["id"], "timeout=30&max_events=1")
    assert paths_of(one) == ["app/one"] and one["has_more"] is True


async def test_a_long_poll_wakes_on_a_write_made_while_it_waits(client: TestClient, container: Container) -> None:
    mine = subscriber(container, roles=("tenant_admin",))
    created = await create(client, mine)
    started = time.monotonic()
    waiting = asyncio.create_task(poll(client, mine, created["id"], "timeout=30"))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    written = time.monotonic()
    await put_secrets(client, container, "app/late")
    answer = await asyncio.wait_for(waiting, 20)
    # woken by the fan-out's NOTIFY, not by the 5 s recheck (nor the timeout)
    assert paths_of(answer) == ["app/late"] and time.monotonic() - written < 3
    assert written - started >= 0.5


async def test_a_poll_times_out_with_an_empty_answer(client: TestClient, container: Container) -> None:
    mine = subscriber(container)
    created = await create(client, mine)
    started = time.monotonic()
    answer = await poll(client, mine, created["id"], "timeout=1")
    assert answer == {"events": [], "has_more": False, "dropped_events": 0}
    assert 1 <= time.monotonic() - started < 5


async def test_unacknowledged_events_come_again_until_acknowledged(client: TestClient, container: Container) -> None:
    mine = subscriber(container, roles=("tenant_admin",))
    created = await create(client, mine)
    sid = created["id"]
    await put_secrets(client, container, "app/a", "app/b")

    async def both_queued() -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while True:
            answer = await poll(client, mine, sid, "timeout=5")
            if len(answer["events"]) == 2 or time.monotonic() > deadline:
                return answer

    first = await both_queued()
    assert paths_of(first) == ["app/a", "app/b"]
    reconnected = await poll(client, mine, sid, "timeout=0")  # taken but not acknowledged: delivered again
    assert reconnected["events"] == first["events"]
    ids = [event["event_id"] for event in first["events"]]
    after_first = await poll(client, mine, sid, f"timeout=0&since_event_id={ids[0]}")
    assert paths_of(after_first) == ["app/b"]
    acked = await client.post(f"/v1/subscriptions/{sid}/ack", json={"event_ids": [ids[0], ids[0]]}, headers=mine)
    assert acked.status == 200 and await acked.json() == {"acknowledged": 1}
    assert paths_of(await poll(client, mine, sid, "timeout=0")) == ["app/b"]
    again = await client.post(f"/v1/subscriptions/{sid}/ack", json={"event_ids": ids}, headers=mine)
    assert await again.json() == {"acknowledged": 1}
    assert (await poll(client, mine, sid, "timeout=0"))["events"] == []
    fetched = await (await client.get(f"/v1/subscriptions/{sid}", headers=mine)).json()
    assert fetched["queue"]["queued"] == 0


async def queue_of(client: TestClient, headers: dict[str, str], subscription_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/subscriptions/{subscription_id}", headers=headers)
    body = await response.json()
    assert response.status == 200, body
    return dict(body["queue"])


async def test_a_subscriber_never_learns_of_secrets_it_may_not_list(client: TestClient, container: Container) -> None:
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["list"]}], "sa:svc")
    await caught_up(container)  # the grant's policy events are fanned out before the subscription exists
    mine = subscriber(container)
    created = await create(client, mine, events=["secret.*", "policy.*"])

    async def queued(headers: dict[str, str]) -> int:
        return int((await queue_of(client, headers, created["id"]))["queued"])

    await put_secrets(client, container, "prod/db", "app/visible", "prod/other")
    await caught_up(container)  # all three are queued, and nothing else will be
    assert await queued(tenant_admin(container)) == 3  # the queue holds them all; an administrator may list them
    assert await queued(mine) == 1  # its owner is never told of the two it may not list, not even by a count
    listed = await (await client.get("/v1/subscriptions", headers=mine)).json()
    assert [s["queue"]["queued"] for s in listed["subscriptions"]] == [1]
    assert paths_of(await poll(client, mine, created["id"], "timeout=0")) == ["app/visible"]
    # the prod events were taken out of the queue unseen, whoever asks later
    assert await queued(mine) == 1 and await queued(tenant_admin(container)) == 1
    assert paths_of(await poll(client, mine, created["id"], "timeout=0")) == ["app/visible"]


async def test_a_token_that_may_not_list_secrets_learns_of_none(client: TestClient, container: Container) -> None:
    """Scopes intersect policies, as for listings: the policy grants list, the token lacks ``secrets:list``."""
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["list"]}], "sa:svc")
    mine = subscriber(container)
    created = await create(client, mine)
    no_list = caller_token(container, "subscriptions:read", identity="sa:svc")
    await put_secrets(client, container, "app/visible")

    async def queued(headers: dict[str, str]) -> int:
        return int((await queue_of(client, headers, created["id"]))["queued"])

    await eventually(lambda: queued(mine), timeout=20, message="the event was not queued")
    assert await queued(no_list) == 0  # not even counted for a token that may not list it
    assert (await poll(client, no_list, created["id"], "timeout=0"))["events"] == []
    assert await queued(mine) == 0


async def test_dropped_events_count_only_what_the_subscriber_may_list(
    client: TestClient, container: Container
) -> None:
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["list"]}], "sa:svc")
    mine = subscriber(container)
    created = await create(client, mine, delivery={"type": "polling", "buffer_size": 1})
    await put_secrets(client, container, "prod/1", "app/1", "prod/2", "app/2")
    await caught_up(container)  # the three oldest gave way to app/2
    everything = await queue_of(client, tenant_admin(container), created["id"])
    assert (everything["queued"], everything["dropped_events"]) == (1, 3)
    seen = await queue_of(client, mine, created["id"])
    assert (seen["queued"], seen["dropped_events"]) == (1, 1)  # app/1 only: prod/1 and prod/2 are not its business
    assert seen["last_dropped_at"] is not None
    listed = await (await client.get("/v1/subscriptions", headers=mine)).json()
    assert [s["queue"] for s in listed["subscriptions"]] == [seen]
    answer = await poll(client, mine, created["id"], "timeout=0")
    assert paths_of(answer) == ["app/2"] and answer["dropped_events"] == 1
    no_list = caller_token(container, "subscriptions:read", identity="sa:svc")
    assert (await poll(client, no_list, created["id"], "timeout=0"))["dropped_events"] == 0


async def test_a_full_queue_drops_its_oldest_and_the_poll_says_how_many(
    client: TestClient, container: Container
) -> None:
    mine = subscriber(container, roles=("tenant_admin",))
    created = await create(client, mine, delivery={"type": "polling", "buffer_size": 2})
    await put_secrets(client, container, "app/1", "app/2", "app/3", "app/4")

    async def dropped() -> int:
        body = await (await client.get(f"/v1/subscriptions/{created['id']}", headers=mine)).json()
        return int(body["queue"]["dropped_events"])

    deadline = time.monotonic() + 20
    while await dropped() < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    answer = await poll(client, mine, created["id"], "timeout=0")
    assert paths_of(answer) == ["app/3", "app/4"] and answer["dropped_events"] == 2
    again = await poll(client, mine, created["id"], "timeout=0")
    assert again["dropped_events"] == 2  # cumulative: a lost answer loses no count


async def test_an_owner_reads_its_subscription_an_administrator_switched_to_push(
    client: TestClient, container: Container
) -> None:
    mine = subscriber(container)
    created = await create(client, mine)
    push = {"type": "webhook", "url": "https://receiver.example/hook", "secret": SECRET}
    response = await client.patch(f"/v1/subscriptions/{created['id']}", json={"delivery": push},
                                  headers=tenant_admin(container))
    assert response.status == 200, await response.text()
    response = await client.get(f"/v1/subscriptions/{created['id']}", headers=mine)
    body = await response.json()
    assert response.status == 200 and "queue" not in body, body
    listed = await (await client.get("/v1/subscriptions", headers=mine)).json()
    assert [s["delivery"]["type"] for s in listed["subscriptions"]] == ["webhook"]


async def test_events_without_a_path_reach_only_administrators(client: TestClient, container: Container) -> None:
    boss = tenant_admin(container)
    plain = subscriber(container)
    policy_events = {**WATCH_ALL, "events": ["policy.*"]}
    admins = await create(client, boss, **policy_events)
    others = await create(client, plain, **policy_events)
    narrow = await create(client, boss, **{**policy_events, "paths": ["app/**"]})
    await grant(client, container, [{"path_pattern": "app/**", "permissions": ["list"]}], "sa:someone")
    answer = await poll(client, boss, admins["id"], "timeout=20")
    assert answer["events"] and {e["event_type"] for e in answer["events"]} <= {
        "policy.created", "policy.binding.created"
    }
    assert all("path" not in e for e in answer["events"])
    await caught_up(container)
    # queued by the fan-out (same batch): an administrator sees them counted, the owner does not, and its poll
    # removes them unseen
    assert (await queue_of(client, boss, others["id"]))["queued"] >= 1
    assert (await queue_of(client, plain, others["id"]))["queued"] == 0
    assert (await poll(client, plain, others["id"], "timeout=1"))["events"] == []
    assert (await queue_of(client, boss, others["id"]))["queued"] == 0
    assert (await poll(client, boss, narrow["id"], "timeout=0"))["events"] == []


async def test_a_push_subscription_is_not_polled(client: TestClient, container: Container) -> None:
    boss = tenant_admin(container)
    push = {"type": "webhook", "url": "https://receiver.example/hook", "secret": SECRET}
    created = await create(client, boss, delivery=push)
    response = await client.get(f"/v1/subscriptions/{created['id']}/poll?timeout=0", headers=boss)
    assert await error_of(response) == (400, "invalid_request")


async def test_every_endpoint_is_audited_with_its_action(client: TestClient, container: Container) -> None:
    mine = subscriber(container)
    created = await create(client, mine)
    url = f"/v1/subscriptions/{created['id']}"
    await client.get("/v1/subscriptions", headers=mine)
    await client.get(url, headers=mine)
    await client.patch(url, json={"events": ["*"]}, headers=mine)
    await poll(client, mine, created["id"], "timeout=0")
    await client.post(f"{url}/ack", json={"event_ids": ["evt_x"]}, headers=mine)
    await client.delete(url, headers=mine)
    actions = [row["action"] for row in await container.pool.fetch(
        """SELECT convert_from(state, 'UTF8')::jsonb ->> 'action' AS action FROM scaivault_events
           WHERE topic = 'scaivault.domain.access:AccessRecorded'
             AND convert_from(state, 'UTF8')::jsonb ->> 'route' LIKE '/v1/subscriptions%'
           ORDER BY notification_id""")]
    assert sorted(actions) == sorted([
        "subscription_create", "subscription_read", "subscription_read", "subscription_update",
        "subscription_poll", "subscription_ack", "subscription_delete",
    ])


async def test_a_push_subscription_delivers_signed_envelopes_of_its_paths(
    client: TestClient, container: Container, receiver: Receiver
) -> None:
    boss = tenant_admin(container)
    created = await create(client, boss, paths=["app/**"], events=["secret.created"],
                           delivery={"type": "webhook", "url": receiver.url, "secret": SECRET})
    await put_secrets(client, container, "web/ignored", "app/pushed")
    await eventually(lambda: len(receiver.received) >= 1, timeout=20)
    await asyncio.sleep(0.3)  # nothing else may follow
    [delivery] = receiver.received
    assert delivery.verifies_with(SECRET)
    assert (delivery.envelope["event_type"], delivery.envelope["path"]) == ("secret.created", "app/pushed")

    async def delivered() -> bool:
        row = await container.pool.fetchrow(
            "SELECT target_kind, target_id, status FROM scaivault_webhook_deliveries WHERE event_id = $1",
            delivery.envelope["event_id"],
        )
        return row is not None and tuple(row) == ("subscription", created["id"], "success")

    await eventually(delivered, timeout=10, message="the delivery was not recorded as a success")
