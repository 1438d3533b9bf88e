"""The webhook sink and the delivery dispatcher on the real database, delivering to real receivers on loopback:
matching, order per key, retries with backoff, the dead letter, isolation of a slow receiver, the egress guard,
redirects, disabled webhooks and push subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web

from commands.actor import Actor
from projections.fanout.retention import trim_outbox
from projections.fanout.sinks import FeedEntry
from projections.webhooks.fanout import WebhookSink
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.crypto.signing_secrets import seal_signing_secret
from scaivault.webhooks.client import WebhookClient
from scaivault.webhooks.dispatcher import DeliveryDispatcher, RetryPolicy
from scaivault.webhooks.outbox import queue_deliveries, repair_lanes
from scaivault.webhooks.signing import sign
from scaivault.webhooks.targets import SigningSecrets
from tests.helpers import eventually
from tests.webhook_receiver import receiving

TENANT, PARTNER = "tnt_a", "ptn_a"
SECRET = "whsec_dispatch_0123456789abcdef0123"
ACTOR = Actor(identity_id="user:a@x.example", request_id=None)
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"),)
FAST = RetryPolicy(max_attempts=3, base_seconds=0.05, cap_seconds=0.2)


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path,
                                               egress_allow="127.0.0.1/32"))
    await container.tenancy_commands.register_tenant(PARTNER, TENANT)
    await container.tenancy_commands.register_tenant(PARTNER, "tnt_b")
    try:
        yield container
    finally:
        await container.close()


async def webhook(container: Container, url: str, *, tenant: str = TENANT, events: Sequence[str] = ("secret.*",),
                  filters: dict[str, Any] | None = None, enabled: bool = True) -> str:
    created = await container.webhook_commands.create(
        tenant_id=tenant, partner_id=PARTNER, name="hook", url=url, events=list(events), filters=filters,
        enabled=enabled, secret=SECRET, actor=ACTOR,
    )
    return created.webhook_id


_position = 0


async def publish(pool: asyncpg.Pool, *events: tuple[str, str | None], tenant: str = TENANT,
                  secret_type: str | None = "json", tags: tuple[str, ...] = (),
                  notification_id: int | None = None) -> list[FeedEntry]:
    """Public events (type, path) stored in the feed as the fan-out stores them, then given to the webhook sink in
    one tracking-like transaction. They come from the log's head (after every webhook created so far), or from
    ``notification_id``."""
    async with pool.acquire() as conn, conn.transaction():
        return await stage(conn, *events, tenant=tenant, secret_type=secret_type, tags=tags,
                           notification_id=notification_id)


async def log_head(conn: asyncpg.Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval("SELECT coalesce(max(notification_id), 0) FROM scaivault_events"))


async def stage(conn: asyncpg.Connection, *events: tuple[str, str | None], tenant: str = TENANT,
                secret_type: str | None = "json", tags: tuple[str, ...] = (),
                notification_id: int | None = None) -> list[FeedEntry]:
    """``publish`` within the caller's transaction."""
    global _position
    entries = []
    head = await log_head(conn) if notification_id is None else notification_id
    for event_type, path in events:
        _position += 1
        event_id = f"evt_test{_position:010d}"
        envelope = {"event_id": event_id, "event_type": event_type, "timestamp": "2026-05-01T00:00:00.000000Z",
                    "tenant_id": tenant, "partner_id": PARTNER, "identity_id": "user:a", "data": {"n": _position},
                    "request_id": None, **({"path": path} if path else {})}
        position = await conn.fetchval(
            """INSERT INTO scaivault_event_feed (event_id, notification_id, tenant_id, partner_id, event_type,
                   path, secret_type, tags, envelope, recorded_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, now()) RETURNING position""",
            event_id, head, tenant, PARTNER, event_type, path, secret_type, list(tags), envelope,
        )
        entries.append(FeedEntry(position, event_id, event_type, tenant, PARTNER, path, secret_type, tags,
                                 envelope, datetime.now(UTC), notification_id=head))
    await WebhookSink().fan_out(conn, entries)
    return entries


@contextlib.asynccontextmanager
async def dispatching(container: Container, *, allow: Sequence[Any] = LOOPBACK, retry: RetryPolicy = FAST,
                      per_target: int = 4, timeout: float = 10.0) -> AsyncIterator[DeliveryDispatcher]:
    client = WebhookClient(allow, timeout_seconds=timeout)
    dispatcher = DeliveryDispatcher(
        container.pool, SigningSecrets(container.keyring), client, dsn=container.database_url, retry=retry,
        per_target=per_target, poll_seconds=0.02,
    )
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await client.close()


async def deliveries(pool: asyncpg.Pool, webhook_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT d.*, f.position FROM scaivault_webhook_deliveries d
           LEFT JOIN scaivault_event_feed f USING (event_id)
           WHERE target_id = $1 ORDER BY feed_position""",
        webhook_id,
    )


async def all_finished(pool: asyncpg.Pool, webhook_id: str, count: int) -> list[asyncpg.Record] | None:
    rows = await deliveries(pool, webhook_id)
    return rows if len(rows) == count and all(r["status"] != "pending" for r in rows) else None


# ---- the sink ---------------------------------------------------------------------------------------------------


async def test_the_sink_queues_one_delivery_per_matching_enabled_webhook(container: Container) -> None:
    url = "http://127.0.0.1:9/hook"
    everything = await webhook(container, url, events=["*"])
    prod_only = await webhook(container, url, filters={"path_prefix": ["prod/"], "tags": ["pci", "gdpr"]})
    policies = await webhook(container, url, events=["policy.*"])
    disabled = await webhook(container, url, enabled=False)
    other_tenant = await webhook(container, url, tenant="tnt_b")
    entries = await publish(container.pool, ("secret.created", "prod/db"), ("secret.updated", "dev/db"),
                            ("policy.created", None), tags=("gdpr",))
    assert [(r["event_type"], r["ordering_key"], r["feed_position"]) for r in
            await deliveries(container.pool, everything)] == [
        ("secret.created", "prod/db", entries[0].position), ("secret.updated", "dev/db", entries[1].position),
        ("policy.created", entries[2].event_id, entries[2].position)]
    assert [r["event_type"] for r in await deliveries(container.pool, prod_only)] == ["secret.created"]
    assert [r["event_type"] for r in await deliveries(container.pool, policies)] == ["policy.created"]
    assert await deliveries(container.pool, disabled) == []
    assert await deliveries(container.pool, other_tenant) == []
    rows = await deliveries(container.pool, everything)
    assert all(r["status"] == "pending" and r["attempts"] == 0 and r["delivery_id"].startswith("del_") for r in rows)

    async with container.pool.acquire() as conn, conn.transaction():  # a replayed batch queues nothing twice
        await WebhookSink().fan_out(conn, entries)
    assert len(await deliveries(container.pool, everything)) == 3


# ---- the dispatcher ---------------------------------------------------------------------------------------------


async def test_deliveries_arrive_signed_and_are_recorded(container: Container) -> None:
    async with receiving() as receiver:
        webhook_id = await webhook(container, receiver.url)
        [entry] = await publish(container.pool, ("secret.created", "app/key"))
        async with dispatching(container):
            [row] = await eventually(lambda: all_finished(container.pool, webhook_id, 1))
        [sent] = receiver.received
        assert sent.verifies_with(SECRET) and sent.envelope == entry.envelope
        assert sent.headers["X-ScaiVault-Event-Id"] == entry.event_id
        assert (row["status"], row["attempts"], row["response_code"], row["error"]) == ("success", 1, 200, None)
        assert row["completed_at"] is not None and row["last_attempt_at"] is not None and row["duration_ms"] >= 0


async def test_one_path_is_delivered_in_feed_order_while_a_failure_is_retried(container: Container) -> None:
    async with receiving() as receiver:
        # The first try of the first event fails; the later events of its path must wait for it.
        receiver.answer = lambda n: 500 if n == 0 else 200
        webhook_id = await webhook(container, receiver.url)
        entries = await publish(container.pool, *[("secret.updated", "app/ordered")] * 5)
        async with dispatching(container, retry=RetryPolicy(max_attempts=5, base_seconds=0.2, cap_seconds=0.4)):
            rows = await eventually(lambda: all_finished(container.pool, webhook_id, 5))
        ids = [r.headers["X-ScaiVault-Event-Id"] for r in receiver.received]
        assert ids == [entries[0].event_id] + [e.event_id for e in entries]
        assert [r["attempts"] for r in rows] == [2, 1, 1, 1, 1]
        assert all(r["status"] == "success" for r in rows)


async def ready_flags(pool: asyncpg.Pool, webhook_id: str) -> list[tuple[str, str, bool]]:
    rows = await deliveries(pool, webhook_id)
    return [(r["ordering_key"], r["status"], r["ready"]) for r in rows]


async def test_only_the_head_of_each_lane_is_ready(container: Container) -> None:
    webhook_id = await webhook(container, "http://127.0.0.1:9/hook", events=["*"])
    await publish(container.pool, ("secret.updated", "app/a"), ("secret.updated", "app/a"),
                  ("secret.updated", "app/b"), ("policy.created", None), ("policy.updated", None))
    await publish(container.pool, ("secret.updated", "app/a"), ("secret.updated", "app/c"))
    flags = [(key if key.startswith("app/") else "no path", ready)
             for key, _, ready in await ready_flags(container.pool, webhook_id)]
    assert flags == [("app/a", True), ("app/a", False), ("app/b", True), ("no path", True), ("no path", True),
                     ("app/a", False), ("app/c", True)]
    async with container.pool.acquire() as conn:
        assert await repair_lanes(conn) == 0


async def test_a_head_finished_while_a_row_is_queued_behind_it_releases_that_row(container: Container) -> None:
    """The fan-out queues B behind A while the dispatcher records A: whichever commits first, B goes out."""
    async with receiving() as receiver:
        webhook_id = await webhook(container, receiver.url)
        await publish(container.pool, ("secret.updated", "app/a"))
        async with container.pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            [behind] = await stage(conn, ("secret.updated", "app/a"))  # holds the lane's lock, not committed
            async with dispatching(container):
                await eventually(lambda: len(receiver.received) >= 1)
                await asyncio.sleep(0.3)  # A's result waits for the lane
                await transaction.commit()
                await eventually(lambda: all_finished(container.pool, webhook_id, 2), timeout=10)
        assert [r.envelope["event_id"] for r in receiver.received][-1] == behind.event_id


async def test_repair_releases_a_lane_left_waiting(container: Container) -> None:
    webhook_id = await webhook(container, "http://127.0.0.1:9/hook")
    await publish(container.pool, ("secret.updated", "app/a"), ("secret.updated", "app/a"))
    await container.pool.execute("UPDATE scaivault_webhook_deliveries SET ready = false WHERE target_id = $1",
                                 webhook_id)
    async with container.pool.acquire() as conn:
        assert await repair_lanes(conn) == 1
        assert await repair_lanes(conn) == 0
    assert [ready for _, _, ready in await ready_flags(container.pool, webhook_id)] == [True, False]


async def test_different_paths_do_not_wait_for_each_other(container: Container) -> None:
    async with receiving() as receiver:
        receiver.answer = lambda n: 500  # nothing ever succeeds...
        await webhook(container, receiver.url)
        first_a, second_a, b = await publish(container.pool, ("secret.updated", "app/a"),
                                             ("secret.updated", "app/a"), ("secret.updated", "app/b"))
        async with dispatching(container, retry=RetryPolicy(max_attempts=3, base_seconds=5, cap_seconds=5)):
            # ...yet app/b goes out while app/a's first event waits for its retry (tried again, maybe: full jitter)
            await eventually(lambda: len(receiver.received) >= 2)
            await asyncio.sleep(0.3)
            sent = {r.envelope["event_id"] for r in receiver.received}
        assert sent == {first_a.event_id, b.event_id}


async def test_retries_back_off_until_the_receiver_recovers(container: Container) -> None:
    async with receiving() as receiver:
        receiver.answer = lambda n: 503 if n < 2 else 200
        webhook_id = await webhook(container, receiver.url)
        await publish(container.pool, ("secret.created", "app/retry"))
        policy = RetryPolicy(max_attempts=5, base_seconds=0.3, cap_seconds=0.3)
        async with dispatching(container, retry=policy):
            [row] = await eventually(lambda: all_finished(container.pool, webhook_id, 1))
        assert (row["status"], row["attempts"], row["response_code"], row["error"]) == ("success", 3, 200, None)
        gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
        assert all(gap <= 0.3 + 0.5 for gap in gaps)  # within the cap (+ slack), never the fixed poll


async def test_a_delivery_is_dead_lettered_after_max_attempts_and_releases_its_path(container: Container) -> None:
    async with receiving() as receiver:
        receiver.answer = lambda n: 500 if n < 3 else 200
        webhook_id = await webhook(container, receiver.url)
        await publish(container.pool, ("secret.updated", "app/dead"), ("secret.updated", "app/dead"))
        async with dispatching(container, retry=FAST):
            first, second = await eventually(lambda: all_finished(container.pool, webhook_id, 2))
        assert (first["status"], first["attempts"], first["response_code"]) == ("failed", 3, 500)
        assert "500" in first["error"] and first["completed_at"] is not None
        assert (second["status"], second["attempts"]) == ("success", 1)


async def test_a_slow_receiver_does_not_hold_up_another_webhook(container: Container) -> None:
    async with receiving() as slow, receiving() as fast:
        slow.delay = 3.0
        slow_id = await webhook(container, slow.url)
        fast_id = await webhook(container, fast.url)
        await publish(container.pool, *[("secret.created", f"app/{i}") for i in range(6)])
        async with dispatching(container, per_target=2):
            started = asyncio.get_running_loop().time()
            await eventually(lambda: all_finished(container.pool, fast_id, 6), timeout=10)
            assert asyncio.get_running_loop().time() - started < 2.0
            assert len(slow.received) == 2  # its own limit: two at a time
        assert len(fast.received) == 6
        assert [r["status"] for r in await deliveries(container.pool, slow_id)].count("success") <= 2


async def test_the_egress_guard_refuses_addresses_the_operator_did_not_allow(container: Container) -> None:
    async with receiving() as receiver:
        literal = await webhook(container, receiver.url)  # http://127.0.0.1:port, allowed when it was created
        by_name = await webhook(container, receiver.url.replace("127.0.0.1", "localhost").replace("http:", "https:"))
        await publish(container.pool, ("secret.created", "app/x"))
        async with dispatching(container, allow=(), retry=RetryPolicy(max_attempts=1)):
            [refused_literal] = await eventually(lambda: all_finished(container.pool, literal, 1))
            [refused_name] = await eventually(lambda: all_finished(container.pool, by_name, 1))
        assert receiver.received == []
        for row in (refused_literal, refused_name):  # refused, without saying where the name led
            assert row["status"] == "failed" and row["response_code"] is None
            assert row["error"].startswith("Refused to connect: the destination is not a publicly routable address")
            assert "127.0.0.1" not in row["error"] and "loopback" not in row["error"]


@pytest.mark.parametrize("host", [
    "\uff11\uff12\uff17.\uff10.\uff10.\uff11",  # full-width digits: aiohttp (yarl) folds them to 127.0.0.1
    "127\u30020\u30020\u30021",  # ideographic full stops
    "127.1", "2130706433", "0177.0.0.1", "127.0.0.1.", "0x7f.1", "[::ffff:127.0.0.1]", "[::1]",
])
async def test_the_client_checks_the_host_it_connects_to_whatever_form_the_url_spells_it(host: str) -> None:
    """A URL naming loopback in a form ``urlsplit`` does not read as an address never reaches the receiver."""
    async with receiving() as receiver:
        port = receiver.url.rsplit(":", 1)[1].split("/", 1)[0]
        client = WebhookClient(())
        try:
            result = await client.send(f"http://{host}:{port}/hook", sign({"event_id": "evt_x", "event_type": "t"},
                                                                         SECRET, 1))
        finally:
            await client.close()
        assert receiver.received == []
        assert not result.success and result.response_code is None and "Refused to connect" in (result.error or "")


async def test_a_redirect_is_a_failed_delivery_and_is_not_followed(container: Container) -> None:
    async with receiving() as receiver, receiving() as elsewhere:
        receiver.answer = lambda n: web.Response(status=302, headers={"Location": elsewhere.url})
        webhook_id = await webhook(container, receiver.url)
        await publish(container.pool, ("secret.created", "app/moved"))
        async with dispatching(container, retry=RetryPolicy(max_attempts=1)):
            [row] = await eventually(lambda: all_finished(container.pool, webhook_id, 1))
        assert (row["status"], row["response_code"]) == ("failed", 302) and "redirect" in row["error"]
        assert len(receiver.received) == 1 and elsewhere.received == []


async def test_a_disabled_webhook_fails_its_pending_deliveries(container: Container) -> None:
    async with receiving() as receiver:
        webhook_id = await webhook(container, receiver.url)
        await publish(container.pool, ("secret.created", "app/off"))
        await container.pool.execute("UPDATE scaivault_webhooks SET enabled = false WHERE webhook_id = $1", webhook_id)
        async with dispatching(container):
            [row] = await eventually(lambda: all_finished(container.pool, webhook_id, 1))
        assert (row["status"], row["attempts"], row["error"]) == ("failed", 0, "the webhook is disabled")
        assert receiver.received == []


async def test_a_deleted_webhook_takes_its_deliveries_with_it(container: Container) -> None:
    webhook_id = await webhook(container, "http://127.0.0.1:9/hook")
    await publish(container.pool, ("secret.created", "app/gone"))
    assert len(await deliveries(container.pool, webhook_id)) == 1
    await container.webhook_commands.delete(TENANT, webhook_id, ACTOR)
    assert await deliveries(container.pool, webhook_id) == []


async def test_a_webhook_gets_no_event_committed_before_it(container: Container) -> None:
    """A lagging fan-out reaches events committed before a webhook was created after it was: not for it."""
    url = "http://127.0.0.1:9/hook"
    older = await webhook(container, url)
    before = await log_head(container.pool)  # an event committed here, before the next webhook
    newer = await webhook(container, url)
    async with container.pool.acquire() as conn, conn.transaction():  # one batch, as a lagging fan-out takes it
        history = await stage(conn, ("secret.created", "app/a"), notification_id=before)
        news = await stage(conn, ("secret.created", "app/b"))
    assert [r["event_id"] for r in await deliveries(container.pool, older)] == [
        history[0].event_id, news[0].event_id]
    assert [r["event_id"] for r in await deliveries(container.pool, newer)] == [news[0].event_id]


async def deleted_mid_batch(container: Container, webhook_id: str, *events: tuple[str, str | None]) -> None:
    """A fan-out batch that read the webhook before its deletion committed, and commits after it."""
    async with container.pool.acquire() as conn:
        batch = conn.transaction()
        await batch.start()
        await stage(conn, *events)
        await container.webhook_commands.delete(TENANT, webhook_id, ACTOR)
        await batch.commit()


async def test_deliveries_queued_for_a_webhook_deleted_mid_batch_drain(container: Container) -> None:
    """The dispatcher removes the ready head of a deleted webhook's lane and readies the next, which it removes in
    turn: the whole lane drains, nothing is sent."""
    async with receiving() as receiver:
        webhook_id = await webhook(container, receiver.url)
        await deleted_mid_batch(container, webhook_id, *[("secret.updated", "app/x")] * 3)
        assert [r["ready"] for r in await deliveries(container.pool, webhook_id)] == [True, False, False]

        async def drained() -> bool:
            return await deliveries(container.pool, webhook_id) == []

        async with dispatching(container):
            await eventually(drained, message="the deleted webhook's lane did not drain")
        assert receiver.received == []


async def test_rows_behind_a_head_the_deletion_removed_go_with_housekeeping(container: Container) -> None:
    """The deletion removed the lane's head while the batch queued rows behind it: nothing readies them but the
    dispatcher's lane repair, so housekeeping removes them (and then the feed entries they held)."""
    webhook_id = await webhook(container, "http://127.0.0.1:9/hook")
    await publish(container.pool, ("secret.created", "app/x"))  # the lane's head, committed before the batch
    await deleted_mid_batch(container, webhook_id, ("secret.updated", "app/x"), ("secret.updated", "app/x"))
    rows = await deliveries(container.pool, webhook_id)
    assert [(r["status"], r["ready"]) for r in rows] == [("pending", False)] * 2
    client = WebhookClient(LOOPBACK)
    try:
        idle = DeliveryDispatcher(container.pool, SigningSecrets(container.keyring), client,
                                  dsn=container.database_url)
        assert await idle.dispatch_once() == 0  # nothing of the lane is ready
    finally:
        await client.close()
    later = datetime.now(UTC) + timedelta(minutes=1)
    trimmed = await trim_outbox(container.pool, feed_before=later, deliveries_before=later)
    assert trimmed.orphaned_deliveries == 2 and trimmed.feed_entries == 3
    assert await deliveries(container.pool, webhook_id) == []


async def test_push_subscriptions_are_delivered_with_their_own_secret(container: Container) -> None:
    async with receiving() as receiver:
        subscription_id = "sub_test0000000000000000000001"
        async with container.pool.acquire() as conn, conn.transaction():
            sealed = await seal_signing_secret(container.keyring, conn, SECRET, owner=TENANT,
                                               target_id=subscription_id)
            await conn.execute(
                """INSERT INTO scaivault_subscriptions (subscription_id, stream_id, tenant_id, partner_id, identity_id,
                       name, paths, events, filters, delivery_type, url, secret_ciphertext, secret_key_id, buffer_size,
                       status, created_at, created_by, updated_at, updated_by)
                   VALUES ($1, gen_random_uuid(), $2, $3, 'sa:x', 'push', '{app/*}', '{secret.*}', '{}', 'webhook',
                       $4, $5, $6, 100, 'active', now(), 'sa:x', now(), 'sa:x')""",
                subscription_id, TENANT, PARTNER, receiver.url, sealed.ciphertext, sealed.data_key_id,
            )
            [entry] = await publish(container.pool, ("secret.created", "app/pushed"))
            await queue_deliveries(conn, "subscription", [
                ("del_test0000000000000000000001", subscription_id, TENANT, entry.event_id, entry.event_type,
                 entry.position, "app/pushed")])
        async with dispatching(container):
            [row] = await eventually(lambda: all_finished(container.pool, subscription_id, 1))
        assert row["status"] == "success" and receiver.received[0].verifies_with(SECRET)


def test_the_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(max_attempts=8, base_seconds=1.0, cap_seconds=3600.0)
    assert [policy.delay(n, rng=lambda low, high: high) for n in (1, 2, 3, 10, 13, 100)] == [
        1.0, 2.0, 4.0, 512.0, 3600.0, 3600.0]
    assert all(policy.delay(n, rng=lambda low, high: low) == 0.0 for n in range(1, 20))
    assert all(0 <= policy.delay(5) <= 16 for _ in range(200))

