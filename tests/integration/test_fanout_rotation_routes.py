"""A rotation policy's ``webhook_ids`` on the real database (docs/rotation.md, "Webhooks of a policy"): the fan-out
queues the rotation events of the policy's secrets for the webhooks it names, whatever those webhooks' own ``events``
and ``filters``, if they exist, are the tenant's and are enabled; once per webhook and event; by the policy's
``webhook_ids`` as they were when the event happened, however far the fan-out is behind."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from commands.actor import Actor
from commands.rotation import PolicyOwner
from commands.secrets import WriteSecret
from projections.fanout.sinks import FeedEntry
from projections.webhooks.fanout import WebhookSink
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.secrets import SecretAddress
from tests.integration.fanout_runs import run_fan_out

OWNER = PolicyOwner(tenant_id="tnt_a", partner_id="ptn_a")
ACTOR = Actor(identity_id="user:ops@x.example", request_id="req_routes")


def address(path: str) -> SecretAddress:
    return SecretAddress(owner="tnt_a", partner_id="ptn_a", tenant_id="tnt_a", path=path)


async def webhook(pool: asyncpg.Pool, webhook_id: str, tenant_id: str, events: list[str], *, enabled: bool = True,
                  filters: dict[str, list[str]] | None = None) -> None:
    """A webhook as the webhooks read model holds it."""
    await pool.execute(
        """INSERT INTO scaivault_webhooks (webhook_id, stream_id, tenant_id, partner_id, name, url, events, filters,
               enabled, secret_ciphertext, secret_key_id, created_at, created_by, updated_at, updated_by)
           VALUES ($1, gen_random_uuid(), $2, 'ptn_a', 'w', 'https://example.com/', $3, $4::jsonb, $5, '\\x00',
                   'dk_x', now(), 'test', now(), 'test')""",
        webhook_id, tenant_id, events, filters or {}, enabled,
    )


class Collecting(WebhookSink):
    """The webhook sink, noting what it was handed."""

    def __init__(self) -> None:
        self.entries: list[FeedEntry] = []

    async def fan_out(self, conn: asyncpg.Connection, entries: Sequence[FeedEntry]) -> None:
        self.entries.extend(entries)
        await super().fan_out(conn, entries)


@pytest.fixture
async def container(pool: asyncpg.Pool, database_url: str, tmp_path: Path) -> AsyncIterator[Container]:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path))
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_a")
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_b")
    try:
        yield container
    finally:
        await container.close()


async def fan_out_everything(container: Container, database_url: str, pool: asyncpg.Pool) -> Collecting:
    sink = Collecting()
    await run_fan_out(container, database_url, [sink])
    return sink


async def deliveries(pool: asyncpg.Pool) -> dict[str, list[str]]:
    """Webhook -> the event types queued for it, in feed order."""
    rows = await pool.fetch(
        """SELECT target_id, event_type FROM scaivault_webhook_deliveries WHERE target_kind = 'webhook'
           ORDER BY target_id, feed_position"""
    )
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["target_id"], []).append(row["event_type"])
    return found


async def test_rotation_events_reach_the_policys_webhooks_once_and_as_of_the_event(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await webhook(pool, "wh_ops", "tnt_a", ["secret.created"], filters={"path_prefix": ["elsewhere/"]})
    await webhook(pool, "wh_all", "tnt_a", ["rotation.*", "secret.rotated"])  # asks for them itself too
    await webhook(pool, "wh_off", "tnt_a", ["secret.created"], enabled=False)
    await webhook(pool, "wh_theirs", "tnt_b", ["secret.created"])  # another tenant's
    await webhook(pool, "wh_bystander", "tnt_a", ["secret.created"])  # not named by the policy
    rotation = container.rotation_commands
    await rotation.create(OWNER, {
        "name": "manual", "interval": "90d", "grace_period": "48h",
        "webhook_ids": ["wh_ops", "wh_all", "wh_off", "wh_theirs", "wh_never_created"],
    }, ACTOR)
    await container.secret_commands.write(
        WriteSecret(address=address("oauth/client"), data={"secret": "one"}, rotation_policy_id="rot_manual"), ACTOR)
    [asked] = await rotation.rotate_now(OWNER, "rot_manual", None, address, ACTOR)  # rotation.due, due_now
    assert asked["status"] == "pending"
    await container.secret_commands.write(
        WriteSecret(address=address("oauth/client"), data={"secret": "two"}), ACTOR)  # the rotation
    # The policy stops naming wh_ops: what happened before still went to it, what happens after does not, although
    # the fan-out reads all of it only now, when the rotation read model already shows the change.
    await rotation.change(OWNER, "rot_manual", {"webhook_ids": ["wh_all"]}, ACTOR)
    await rotation.rotate_now(OWNER, "rot_manual", None, address, ACTOR)  # the next rotation.due

    sink = await fan_out_everything(container, database_url, pool)

    queued = await deliveries(pool)
    assert queued == {
        # secret.updated and secret.rotated are not rotation events: only its own filter could ask for those.
        "wh_ops": ["rotation.due", "rotation.completed"],
        # Named and asking for them itself: one delivery each (and secret.rotated by its own events).
        "wh_all": ["rotation.due", "secret.rotated", "rotation.completed", "rotation.due"],
        "wh_bystander": ["secret.created"],
    }
    routed = {(e.event_type, e.routed_to) for e in sink.entries}
    assert ("rotation.completed", ("wh_ops", "wh_all")) in routed and ("secret.rotated", ()) in routed
    assert sum(1 for e in sink.entries if e.event_type == "rotation.due") == 2
    envelope = next(e.envelope for e in sink.entries if e.event_type == "rotation.due")
    assert envelope["data"]["rotation_policy_id"] == "rot_manual" and envelope["data"]["due_now"] is True
    assert envelope["path"] == "oauth/client" and envelope["tenant_id"] == "tnt_a"
    route = await pool.fetchrow("SELECT tenant_id, policy_id, webhook_ids FROM scaivault_fanout_rotation_routes")
    assert dict(route) == {"tenant_id": "tnt_a", "policy_id": "rot_manual", "webhook_ids": ["wh_all"]}


async def test_a_policy_that_routes_to_nobody_adds_nothing_and_a_deleted_one_is_forgotten(
    container: Container, pool: asyncpg.Pool, database_url: str
) -> None:
    await webhook(pool, "wh_ops", "tnt_a", ["secret.created"], enabled=False)
    rotation = container.rotation_commands
    await rotation.create(OWNER, {"name": "manual", "interval": "90d", "webhook_ids": ["wh_ops"]}, ACTOR)
    await rotation.create(OWNER, {"name": "other", "interval": "30d"}, ACTOR)
    await container.secret_commands.write(
        WriteSecret(address=address("svc/token"), data={"t": "1"}, rotation_policy_id="rot_manual"), ACTOR)
    await rotation.rotate_now(OWNER, "rot_manual", None, address, ACTOR)
    sink = await fan_out_everything(container, database_url, pool)
    # The only webhook named is disabled: the rotation event is nobody's news, not even kept in the feed.
    assert sink.entries == [] and await pool.fetchval("SELECT count(*) FROM scaivault_event_feed") == 0
    routes = await pool.fetch("SELECT policy_id, webhook_ids FROM scaivault_fanout_rotation_routes ORDER BY 1")
    assert [tuple(r) for r in routes] == [("rot_manual", ["wh_ops"]), ("rot_other", [])]

    await rotation.delete(OWNER, "rot_manual", ACTOR)
    await fan_out_everything(container, database_url, pool)
    routes = await pool.fetch("SELECT policy_id FROM scaivault_fanout_rotation_routes")
    assert [r["policy_id"] for r in routes] == ["rot_other"]
