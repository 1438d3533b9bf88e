"""The fan-out projection on the real database: public events in log order with the spec's envelope, only for
tenants whose receivers ask for them, each once even when a batch is replayed after a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from commands.actor import Actor
from commands.secrets import UpdateSecretMetadata, WriteSecret
from projections.fanout.retention import Trimmed, trim_outbox
from projections.fanout.sinks import FeedEntry
from projections.runner import record_position
from projections.subscriptions.fanout import SubscriptionSink
from projections.webhooks.fanout import WebhookSink
from scaivault.audit.access_records import AccessRecord
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.secrets import SecretAddress
from tests.integration.fanout_runs import run_fan_out

ADDRESS = SecretAddress(owner="tnt_a", partner_id="ptn_a", tenant_id="tnt_a", path="app/db")
ELSEWHERE = SecretAddress(owner="tnt_b", partner_id="ptn_a", tenant_id="tnt_b", path="app/db")
ACTOR = Actor(identity_id="user:a@x.example", request_id="req_fanout")
SUBSCRIBER = Caller(Principal(
    identity_id="sa:subscriber", identity_type="service_account", display_name=None, tenant_id="tnt_a",
    partner_id="ptn_a", scopes=frozenset({"subscriptions:write"}), roles=frozenset(), groups=(),
    mfa_verified_at=None, expires_at=None, issued_at=None, token_kind="jwt", token_id="tok_x",
), "tnt_a", "ptn_a")


class CollectingSink:
    def __init__(self) -> None:
        self.entries: list[FeedEntry] = []

    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        self.entries.extend(entries)


async def wants(pool: asyncpg.Pool, tenant_id: str, events: list[str]) -> None:
    """A receiver in the tenant asking for ``events`` (the row the webhooks read model would hold)."""
    await pool.execute(
        """INSERT INTO scaivault_webhooks (webhook_id, stream_id, tenant_id, partner_id, name, url, events, filters,
               enabled, secret_ciphertext, secret_key_id, created_at, created_by, updated_at, updated_by)
           VALUES ('wh_' || $1, gen_random_uuid(), $1, 'ptn_a', 'w', 'https://example.com/', $2, '{}', true, '\\x00',
                   'dk_x', now(), 'test', now(), 'test')""",
        tenant_id, events,
    )


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_a")
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_b")
    try:
        yield container
    finally:
        await container.close()


async def test_secret_events_reach_the_feed_in_order_with_the_spec_envelope(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await wants(pool, "tnt_a", ["secret.*"])
    commands = container.secret_commands
    await commands.write(WriteSecret(address=ADDRESS, data={"p": "s3cr3t-value"}, metadata={"tags": ["db"]}), ACTOR)
    await commands.write(WriteSecret(address=ADDRESS, data={"p": "n3w-value"}), ACTOR)
    more_tags = UpdateSecretMetadata(address=ADDRESS, metadata_patch={"tags": ["db", "prod"]})
    await commands.update_metadata(more_tags, ACTOR)
    await commands.delete(ADDRESS, ACTOR)
    await commands.write(WriteSecret(address=ELSEWHERE, data={"p": "x"}), ACTOR)  # nobody in tnt_b listens
    sink = CollectingSink()
    await run_fan_out(container, database_url, [sink], seen=3)

    assert [e.event_type for e in sink.entries] == ["secret.created", "secret.updated", "secret.deleted"]
    created, updated, deleted = (e.envelope for e in sink.entries)
    assert created["event_id"].startswith("evt_") and len(created["event_id"]) == 30
    assert {k: created[k] for k in ("event_type", "tenant_id", "partner_id", "identity_id", "path", "request_id")} == {
        "event_type": "secret.created", "tenant_id": "tnt_a", "partner_id": "ptn_a",
        "identity_id": "user:a@x.example", "path": "app/db", "request_id": "req_fanout",
    }
    assert created["timestamp"].endswith("Z")
    assert created["data"] == {
        "version": 1, "secret_type": "kv", "created_by": "user:a@x.example", "tags": ["db"], "expires_at": None,
    }
    assert updated["data"] == {
        "old_version": 1, "new_version": 2, "updated_by": "user:a@x.example", "is_rotation": False,
    }
    assert deleted["data"]["version_count"] == 2 and deleted["data"]["permanent"] is False
    assert deleted["data"]["recoverable_until"].endswith("Z")
    assert sink.entries[2].tags == ("db", "prod")  # the facets follow the metadata change
    assert [e.position for e in sink.entries] == sorted(e.position for e in sink.entries)
    assert all(b"s3cr3t" not in repr(e.envelope).encode() for e in sink.entries)


async def test_receivers_get_no_event_committed_before_they_were_created(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    """The fan-out lags (here it is not running at all): when it reaches an event committed before a webhook or a
    subscription was created, that receiver exists, yet the event is not for it."""

    async def create_receivers() -> tuple[str, str]:
        hook = await container.webhook_commands.create(
            tenant_id="tnt_a", partner_id="ptn_a", name="hook", url="https://receiver.example/hook",
            events=["secret.*"], filters=None, enabled=True, secret="a-signing-secret-of-32-characters", actor=ACTOR,
        )
        subscription = await container.subscription_commands.create(
            SUBSCRIBER, name="s", paths=["**"], events=["secret.*"], filters=None, delivery={"type": "polling"},
            actor=Actor(SUBSCRIBER.identity_id, None, SUBSCRIBER),
        )
        return hook.webhook_id, subscription.subscription_id

    early_hook, early_subscription = await create_receivers()
    await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"p": "1"}), ACTOR)
    late_hook, late_subscription = await create_receivers()
    await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"p": "2"}), ACTOR)
    sink = CollectingSink()
    await run_fan_out(container, database_url, [sink, SubscriptionSink(), WebhookSink()], seen=2)
    created, updated = (e.event_id for e in sink.entries)

    async def received(target: str) -> list[str]:
        rows = await pool.fetch(
            """SELECT event_id, feed_position FROM scaivault_webhook_deliveries WHERE target_id = $1
               UNION ALL SELECT event_id, feed_position FROM scaivault_subscription_queue WHERE subscription_id = $1
               ORDER BY feed_position""",
            target,
        )
        return [row["event_id"] for row in rows]

    assert await received(early_hook) == [created, updated]
    assert await received(early_subscription) == [created, updated]
    assert await received(late_hook) == [updated]
    assert await received(late_subscription) == [updated]


async def test_a_replayed_batch_queues_nothing_twice(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await wants(pool, "tnt_a", ["secret.created", "secret.updated"])
    await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"p": "1"}), ACTOR)
    await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"p": "2"}), ACTOR)
    first = CollectingSink()
    await run_fan_out(container, database_url, [first], seen=2)
    ids = [e.event_id for e in first.entries]

    # As if the tracking transaction had been lost after the feed rows committed (it cannot, but replay must cope).
    await pool.execute("DELETE FROM scaivault_tracking WHERE application_name = 'fanout'")
    async with pool.acquire() as conn:
        await record_position(conn, "fanout", 0)
    again = CollectingSink()
    await run_fan_out(container, database_url, [again])
    assert again.entries == []
    feed = await pool.fetch("SELECT event_id FROM scaivault_event_feed ORDER BY position")
    assert [r["event_id"] for r in feed] == ids


async def test_reads_and_denials_become_public_only_when_asked_for(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await wants(pool, "tnt_a", ["secret.accessed", "policy.violation"])
    await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"p": "1"}), ACTOR)
    now = datetime.now(UTC)
    read = AccessRecord(
        now, "req_read", "GET", "/v1/secrets/{path}", "secret_read", partner_id="ptn_a", tenant_id="tnt_a",
        identity_id="sa:reader", secret_path="app/db", status=200, accessed_streams=[ADDRESS.stream_id],
    )
    denied = AccessRecord(
        now, "req_denied", "GET", "/v1/secrets/{path}", "secret_read", partner_id="ptn_a", tenant_id="tnt_a",
        identity_id="sa:x", secret_path="app/db", status=403, error_code="access_denied",
    )
    listed = AccessRecord(  # no value read, not refused: no news
        now, "req_list", "GET", "/v1/secrets", "secret_list", partner_id="ptn_a", tenant_id="tnt_a",
        identity_id="sa:reader", status=200,
    )
    await container.access_recorder.start()
    try:
        await container.access_recorder.record(read)
        await container.access_recorder.record(denied)
        await container.access_recorder.record(listed)
    finally:
        await container.access_recorder.close()
    sink = CollectingSink()
    await run_fan_out(container, database_url, [sink], seen=2)
    assert [e.event_type for e in sink.entries] == ["secret.accessed", "policy.violation"]
    accessed, violation = (e.envelope for e in sink.entries)
    assert accessed["event_type"] == "secret.accessed" and accessed["identity_id"] == "sa:reader"
    assert accessed["path"] == "app/db" and accessed["request_id"] == "req_read"
    assert violation["event_type"] == "policy.violation" and violation["data"]["error_code"] == "access_denied"


async def polling_subscription(pool: asyncpg.Pool, subscription_id: str, tenant_id: str = "t") -> None:
    """A polling subscription's row, as the subscriptions read model would hold it."""
    await pool.execute(
        """INSERT INTO scaivault_subscriptions (subscription_id, stream_id, tenant_id, partner_id, identity_id, name,
               paths, events, filters, delivery_type, buffer_size, status, created_at, created_by, updated_at,
               updated_by)
           VALUES ($1, gen_random_uuid(), $2, 'ptn_a', 'sa:x', 's', '{**}', '{*}', '{}', 'polling', 10, 'active',
                   now(), 'test', now(), 'test')""",
        subscription_id, tenant_id,
    )


async def test_trimming_keeps_what_a_delivery_or_queue_still_points_at(pool: asyncpg.Pool) -> None:
    old, now = datetime(2020, 1, 1, tzinfo=UTC), datetime.now(UTC)
    await wants(pool, "t", ["*"])  # wh_t
    await polling_subscription(pool, "sub_1")
    for n, at in enumerate((old, old, old, now), start=1):
        await pool.execute(
            """INSERT INTO scaivault_event_feed (event_id, notification_id, event_type, envelope, recorded_at)
               VALUES ($1, $2, 'secret.created', '{}', $3)""",
            f"evt_{n}", n, at,
        )
    await pool.execute(
        """INSERT INTO scaivault_webhook_deliveries (delivery_id, target_kind, target_id, tenant_id, event_id,
               event_type, feed_position, ordering_key, status, created_at)
           VALUES ('del_pending', 'webhook', 'wh_t', 't', 'evt_1', 'secret.created', 1, 'p', 'pending', $1),
                  ('del_done_long_ago', 'webhook', 'wh_t', 't', 'evt_3', 'secret.created', 3, 'p', 'success', $1)""",
        old,
    )
    await pool.execute(
        """INSERT INTO scaivault_subscription_queue (subscription_id, feed_position, event_id)
           VALUES ('sub_1', 2, 'evt_2')"""
    )
    trimmed = await trim_outbox(pool, feed_before=now - timedelta(days=7), deliveries_before=now - timedelta(days=30))
    assert trimmed == Trimmed(deliveries=1, feed_entries=1)  # the finished delivery, then the entry it held
    kept = [r["event_id"] for r in await pool.fetch("SELECT event_id FROM scaivault_event_feed ORDER BY position")]
    assert kept == ["evt_1", "evt_2", "evt_4"]
