"""The subscriptions' fan-out sink on the real database, fed FeedEntry batches directly: which subscriptions get
which events (tenant, paths, types, filters, events without a path), polling queues held to their buffer size with
the drops counted, push subscriptions' outbox rows, replays that queue nothing twice, and a queue that goes with
its subscription."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from commands.actor import Actor
from commands.subscriptions import SubscriptionChanges
from projections.fanout.retention import trim_outbox
from projections.fanout.sinks import FeedEntry
from projections.maintenance.rebuild import ReadModel, Rebuilder
from projections.subscriptions import queries
from projections.subscriptions.fanout import SubscriptionSink
from projections.subscriptions.polling import FeedSignal
from projections.subscriptions.projection import SubscriptionsProjection
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from tests.helpers import eventually

TENANT, OTHER, PARTNER = "tnt_a", "tnt_b", "ptn_a"
SECRET = "a-signing-secret-of-32-characters"


def caller(identity: str = "sa:svc", tenant: str = TENANT, roles: tuple[str, ...] = ()) -> Caller:
    principal = Principal(
        identity_id=identity, identity_type="service_account", display_name=None, tenant_id=tenant,
        partner_id=PARTNER, scopes=frozenset({"subscriptions:write"}), roles=frozenset(roles), groups=(),
        mfa_verified_at=None, expires_at=None, issued_at=None, token_kind="jwt", token_id="tok_x",
    )
    return Caller(principal, tenant, PARTNER)


ADMIN = caller("user:admin@x.example", roles=("tenant_admin",))


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, OTHER)
    try:
        yield container
    finally:
        await container.close()


async def subscribe(
    container: Container, paths: list[str], events: list[str], *, who: Caller | None = None, filters: Any = None,
    delivery: dict[str, Any] | None = None,
) -> str:
    who = who or caller()
    subscription = await container.subscription_commands.create(
        who, name="s", paths=paths, events=events, filters=filters, delivery=delivery or {"type": "polling"},
        actor=Actor(who.identity_id, None, who),
    )
    return subscription.subscription_id


_counter = 0


async def feed(
    pool: asyncpg.Pool, *events: tuple[str, str | None], tenant: str = TENANT, secret_type: str | None = "kv",
    tags: tuple[str, ...] = (), notification_id: int | None = None,
) -> list[FeedEntry]:
    """Feed entries for (event type, path) pairs, stored as the fan-out stores them, in order, as if from events at
    the log's head (after every subscription created so far), or at ``notification_id``."""
    global _counter
    entries = []
    head = await log_head(pool) if notification_id is None else notification_id
    for event_type, path in events:
        _counter += 1
        event_id = f"evt_{_counter:026d}"
        envelope: dict[str, Any] = {
            "event_id": event_id, "event_type": event_type, "tenant_id": tenant, "path": path, "data": {},
        }
        at = datetime.now(UTC)
        position = await pool.fetchval(
            """INSERT INTO scaivault_event_feed (event_id, notification_id, tenant_id, partner_id, event_type, path,
                   secret_type, tags, envelope, recorded_at)
               VALUES ($1, $10, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING position""",
            event_id, tenant, PARTNER, event_type, path, secret_type, list(tags), envelope, at, head,
        )
        entries.append(FeedEntry(position, event_id, event_type, tenant, PARTNER, path, secret_type, tags, envelope,
                                 at, notification_id=head))
    return entries


async def log_head(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT coalesce(max(notification_id), 0) FROM scaivault_events"))


async def fan_out(pool: asyncpg.Pool, entries: list[FeedEntry]) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await SubscriptionSink().fan_out(conn, entries)


async def queued(pool: asyncpg.Pool, subscription_id: str) -> list[str]:
    rows = await pool.fetch(
        "SELECT event_id FROM scaivault_subscription_queue WHERE subscription_id = $1 ORDER BY feed_position",
        subscription_id,
    )
    return [row["event_id"] for row in rows]


async def test_each_subscription_queues_the_events_its_paths_and_types_select(
    container: Container, pool: asyncpg.Pool
) -> None:
    app = await subscribe(container, ["app/**"], ["secret.created", "secret.updated"])
    prod_deletes = await subscribe(container, ["*/prod/*"], ["secret.deleted"])
    everything = await subscribe(container, ["**"], ["*"])
    elsewhere = await subscribe(container, ["**"], ["*"], who=caller(tenant=OTHER))
    entries = await feed(
        pool, ("secret.created", "app/db"), ("secret.deleted", "app/prod/db"), ("secret.updated", "app"),
        ("secret.created", "web/prod/key"), ("policy.created", None), ("secret.deleted", "web/prod/key"),
    )
    await fan_out(pool, entries)
    ids = [entry.event_id for entry in entries]
    assert await queued(pool, app) == [ids[0], ids[2]]  # app/** matches app itself
    assert await queued(pool, prod_deletes) == [ids[1], ids[5]]
    assert await queued(pool, everything) == ids  # ** also takes the policy event, which has no path
    assert await queued(pool, elsewhere) == []


async def test_filters_select_by_secret_type_and_tags(container: Container, pool: asyncpg.Pool) -> None:
    databases = await subscribe(container, ["**"], ["secret.*"], filters={"secret_type": "database"})
    tagged = await subscribe(container, ["**"], ["secret.*"], filters={"tags": ["prod", "pci"]})
    plain = await feed(pool, ("secret.created", "a"), secret_type="kv", tags=("dev",))
    database = await feed(pool, ("secret.created", "b"), secret_type="database", tags=("prod",))
    pci = await feed(pool, ("secret.created", "c"), secret_type="kv", tags=("pci", "dev"))
    await fan_out(pool, plain + database + pci)
    assert await queued(pool, databases) == [database[0].event_id]
    assert await queued(pool, tagged) == [database[0].event_id, pci[0].event_id]


async def test_a_queue_keeps_its_newest_events_and_counts_the_dropped(container: Container, pool: asyncpg.Pool) -> None:
    small = await subscribe(container, ["**"], ["*"], delivery={"type": "polling", "buffer_size": 3})
    roomy = await subscribe(container, ["**"], ["*"])
    first = await feed(pool, *[("secret.updated", f"p{n}") for n in range(5)])
    await fan_out(pool, first)
    assert await queued(pool, small) == [e.event_id for e in first[2:]]
    state = await queries.queue_state(pool, small)
    assert state is not None and (state["queued"], state["dropped_events"]) == (3, 2)
    assert state["last_dropped_at"] is not None
    second = await feed(pool, ("secret.updated", "p5"), ("secret.updated", "p6"))
    await fan_out(pool, second)
    assert await queued(pool, small) == [first[4].event_id, *(e.event_id for e in second)]
    state = await queries.queue_state(pool, small)
    assert state is not None and (state["queued"], state["dropped_events"]) == (3, 4)
    roomy_state = await queries.queue_state(pool, roomy)
    assert roomy_state is not None and (roomy_state["queued"], roomy_state["dropped_events"]) == (7, 0)


async def test_acknowledged_events_leave_the_queue_and_make_room(container: Container, pool: asyncpg.Pool) -> None:
    small = await subscribe(container, ["**"], ["*"], delivery={"type": "polling", "buffer_size": 2})
    entries = await feed(pool, ("secret.updated", "a"), ("secret.updated", "b"))
    await fan_out(pool, entries)
    async with pool.acquire() as conn:
        assert await queries.acknowledge(conn, small, [entries[0].event_id, "evt_unknown"]) == 1
    more = await feed(pool, ("secret.updated", "c"))
    await fan_out(pool, more)
    assert await queued(pool, small) == [entries[1].event_id, more[0].event_id]
    state = await queries.queue_state(pool, small)
    assert state is not None and state["dropped_events"] == 0


async def test_entries_removed_while_a_batch_waits_stay_uncounted(container: Container, pool: asyncpg.Pool) -> None:
    """A poll removes an entry (hidden from the poller) and commits while the fan-out's batch waits for the queue's
    state row: the batch's count, taken before the removal, must not put it back."""
    subscription = await subscribe(container, ["**"], ["*"])
    first = await feed(pool, ("secret.updated", "a"), ("secret.updated", "b"))
    await fan_out(pool, first)
    later = await feed(pool, ("secret.updated", "c"))
    async with pool.acquire() as poller, pool.acquire() as fan_out_conn:
        removal = poller.transaction()
        await removal.start()
        await queries.remove_positions(poller, subscription, [first[0].position])  # holds the state row

        async def batch() -> None:
            async with fan_out_conn.transaction():
                await SubscriptionSink().fan_out(fan_out_conn, later)

        batching = asyncio.create_task(batch())
        fan_out_pid = fan_out_conn.get_server_pid()
        await eventually(lambda: pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE pid = $1 AND NOT granted)", fan_out_pid
        ), message="the batch did not wait for the state row")
        await removal.commit()
        await batching
    assert await queued(pool, subscription) == [first[1].event_id, later[0].event_id]
    state = await queries.queue_state(pool, subscription)
    assert state is not None and state["queued"] == 2


async def test_push_subscriptions_get_outbox_rows(container: Container, pool: asyncpg.Pool) -> None:
    pushed = await subscribe(container, ["app/**"], ["secret.*"], who=ADMIN, delivery={
        "type": "webhook", "url": "https://receiver.example/hook", "secret": SECRET,
    })
    entries = await feed(pool, ("secret.created", "app/db"), ("secret.created", "web/x"), ("secret.updated", "app/db"))
    await fan_out(pool, entries)
    await fan_out(pool, entries)  # a replayed batch queues nothing twice
    rows = await pool.fetch(
        """SELECT delivery_id, target_kind, target_id, tenant_id, event_id, event_type, feed_position, ordering_key,
               status, attempts, next_attempt_at <= now() AS due
           FROM scaivault_webhook_deliveries ORDER BY feed_position"""
    )
    assert [(r["target_kind"], r["target_id"], r["event_id"], r["ordering_key"]) for r in rows] == [
        ("subscription", pushed, entries[0].event_id, "app/db"),
        ("subscription", pushed, entries[2].event_id, "app/db"),
    ]
    assert all(r["delivery_id"].startswith("del_") and r["status"] == "pending" and r["due"] for r in rows)
    assert [r["feed_position"] for r in rows] == [entries[0].position, entries[2].position]
    assert await queued(pool, pushed) == []
    stored = await pool.fetchrow(
        "SELECT url, secret_ciphertext, secret_key_id FROM scaivault_subscriptions WHERE subscription_id = $1", pushed
    )
    assert stored["url"] == "https://receiver.example/hook" and SECRET.encode() not in stored["secret_ciphertext"]
    events = await pool.fetch("SELECT state FROM scaivault_events WHERE topic LIKE '%subscriptions:Subscription%'")
    assert events and all(SECRET.encode() not in row["state"] for row in events)


async def test_a_replayed_batch_queues_nothing_twice(container: Container, pool: asyncpg.Pool) -> None:
    subscription = await subscribe(container, ["**"], ["*"], delivery={"type": "polling", "buffer_size": 2})
    entries = await feed(pool, ("secret.updated", "a"), ("secret.updated", "b"))
    await fan_out(pool, entries)
    await fan_out(pool, entries)
    assert await queued(pool, subscription) == [e.event_id for e in entries]
    state = await queries.queue_state(pool, subscription)
    assert state is not None and (state["queued"], state["dropped_events"]) == (2, 0)


async def test_a_queue_goes_with_its_subscription_or_its_polling(container: Container, pool: asyncpg.Pool) -> None:
    deleted = await subscribe(container, ["**"], ["*"])
    switched = await subscribe(container, ["**"], ["*"], who=ADMIN)
    await fan_out(pool, await feed(pool, ("secret.updated", "a")))
    assert await queued(pool, deleted) and await queued(pool, switched)
    owner = caller()
    await container.subscription_commands.delete(owner, deleted, Actor(owner.identity_id, None, owner))
    push = {"type": "webhook", "url": "https://receiver.example/", "secret": SECRET}
    await container.subscription_commands.change(
        ADMIN, switched, SubscriptionChanges(delivery=push), Actor(ADMIN.identity_id, None, ADMIN)
    )
    assert await queued(pool, deleted) == [] and await queries.queue_state(pool, deleted) is None
    assert await queued(pool, switched)  # left for the sink, which alone knows the switch is current
    await fan_out(pool, await feed(pool, ("secret.updated", "b")))
    assert await queued(pool, switched) == [] and await queries.queue_state(pool, switched) is None
    remaining = await pool.fetch("SELECT subscription_id, delivery_type FROM scaivault_subscriptions")
    assert [(r["subscription_id"], r["delivery_type"]) for r in remaining] == [(switched, "webhook")]


async def test_a_subscription_gets_no_event_committed_before_it(container: Container, pool: asyncpg.Pool) -> None:
    """A lagging fan-out reaches events committed before a subscription was created after it was: not for it."""
    older = await subscribe(container, ["**"], ["*"])
    before = await log_head(pool)  # an event committed here, before the next subscription
    newer = await subscribe(container, ["**"], ["*"])
    pushed = await subscribe(container, ["**"], ["*"], who=ADMIN, delivery={
        "type": "webhook", "url": "https://receiver.example/hook", "secret": SECRET,
    })
    history = await feed(pool, ("secret.updated", "a"), notification_id=before)
    news = await feed(pool, ("secret.updated", "b"))
    await fan_out(pool, history + news)  # one batch, as a lagging fan-out takes them
    assert await queued(pool, older) == [history[0].event_id, news[0].event_id]
    assert await queued(pool, newer) == [news[0].event_id]
    pushed_events = await pool.fetch(
        "SELECT event_id FROM scaivault_webhook_deliveries WHERE target_id = $1 ORDER BY feed_position", pushed
    )
    assert [row["event_id"] for row in pushed_events] == [news[0].event_id]


async def test_a_queue_that_outlived_its_subscription_is_removed_by_housekeeping(
    container: Container, pool: asyncpg.Pool
) -> None:
    """The fan-out read the subscription before its deletion committed and queued after the deletion removed the
    queue: housekeeping removes what it left, so its feed entries can be trimmed."""
    gone = await subscribe(container, ["**"], ["*"], delivery={"type": "polling", "buffer_size": 1})
    switched = await subscribe(container, ["**"], ["*"], who=ADMIN)
    kept = await subscribe(container, ["keep/**"], ["*"])
    push = {"type": "webhook", "url": "https://receiver.example/", "secret": SECRET}
    pushed = await subscribe(container, ["a"], ["*"], who=ADMIN, delivery=push)
    entries = await feed(pool, ("secret.updated", "a"), ("secret.updated", "keep/b"))
    owner, admin = caller(), Actor(ADMIN.identity_id, None, ADMIN)
    async with pool.acquire() as conn:
        batch = conn.transaction()
        await batch.start()
        await SubscriptionSink().fan_out(conn, entries)  # the batch has read the subscriptions ...
        await container.subscription_commands.delete(owner, gone, Actor(owner.identity_id, None, owner))
        await batch.commit()  # ... and commits after the deletion
    # and no event of the tenant follows: the sink never looks at the switched one again
    await container.subscription_commands.change(ADMIN, switched, SubscriptionChanges(delivery=push), admin)
    await container.subscription_commands.delete(ADMIN, pushed, admin)  # its pending delivery stays for the dispatcher
    assert await queued(pool, gone) == [entries[1].event_id]  # what the race leaves (and the drop it counted)
    assert await queries.queue_state(pool, gone) is not None
    assert await pool.fetchval("SELECT count(*) FROM scaivault_subscription_drops WHERE subscription_id = $1", gone)
    assert await queued(pool, switched) == [e.event_id for e in entries]
    later = datetime.now(UTC) + timedelta(minutes=1)
    trimmed = await trim_outbox(pool, feed_before=later, deliveries_before=later)
    assert (trimmed.orphaned_queues, trimmed.orphaned_deliveries) == (2, 1)
    assert not await pool.fetchval("SELECT count(*) FROM scaivault_webhook_deliveries")
    assert await queued(pool, gone) == [] and await queries.queue_state(pool, gone) is None
    assert not await pool.fetchval("SELECT count(*) FROM scaivault_subscription_drops WHERE subscription_id = $1", gone)
    assert await queued(pool, switched) == [] and await queries.queue_state(pool, switched) is None
    assert await queued(pool, kept) == [entries[1].event_id]  # a live queue is left alone, with what it points at
    remaining = await pool.fetch("SELECT event_id FROM scaivault_event_feed")
    assert [row["event_id"] for row in remaining] == [entries[1].event_id]
    assert (await trim_outbox(pool, feed_before=later, deliveries_before=later)).orphaned_queues == 0


async def test_rebuilding_the_read_model_leaves_live_queues_alone(container: Container, pool: asyncpg.Pool) -> None:
    """A replay of history (polling, then push, then polling again; another one deleted) rebuilds the same table and
    empties no queue that lives."""
    back = await subscribe(container, ["**"], ["*"], who=ADMIN)
    gone = await subscribe(container, ["**"], ["*"])
    actor = Actor(ADMIN.identity_id, None, ADMIN)
    commands = container.subscription_commands
    push = {"type": "webhook", "url": "https://receiver.example/", "secret": SECRET}
    await commands.change(ADMIN, back, SubscriptionChanges(delivery=push), actor)
    await commands.change(ADMIN, back, SubscriptionChanges(delivery={"type": "polling"}, paths=["app/**"]), actor)
    await commands.delete(ADMIN, gone, actor)
    entries = await feed(pool, ("secret.updated", "app/x"))
    await fan_out(pool, entries)
    rebuilder = Rebuilder(container.database_url, container.store, container.repository.mapper)
    model = ReadModel(SubscriptionsProjection(), inline=True)
    assert (await rebuilder.verify(model))["identical"]
    report = await rebuilder.rebuild(model)
    assert report.events >= 5
    assert await queued(pool, back) == [entries[0].event_id]
    assert (await rebuilder.verify(model))["identical"]


async def test_a_notification_between_looking_and_waiting_is_not_missed() -> None:
    signal = FeedSignal()
    ticket = signal.ticket()  # a poll takes its ticket, then looks at its queue (finding nothing) ...
    signal.notify()  # ... while the fan-out commits and notifies ...
    assert await signal.wait(ticket, 0.01)  # ... so its wait returns at once
    assert not await signal.wait(signal.ticket(), 0.01)  # a fresh ticket waits for the next notification
