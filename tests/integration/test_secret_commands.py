"""The secret commands on the real database: long histories, conflicting writers, listing as a property."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commands.actor import Actor
from commands.secrets import UpdateSecretMetadata, WriteSecret
from commands.unit_of_work import UnitOfWork
from projections.secrets.queries import list_secret_rows
from scaivault.auth.caller import Caller
from scaivault.auth.principal import Principal
from scaivault.bootstrap import Container, build_container
from scaivault.config import Settings
from scaivault.domain.errors import AccessDenied
from scaivault.domain.secrets import Secret, SecretAddress
from scaivault.eventstore.recorder import PostgresEventStore

ADDRESS = SecretAddress(owner="tnt_a", partner_id="ptn_a", tenant_id="tnt_a", path="app/history")
ACTOR = Actor(identity_id="user:a@x.example", request_id=None)


async def make_container(database_url: str, tmp_path: Path) -> Container:
    container = await build_container(Settings(database_url=database_url, data_dir=tmp_path, snapshot_interval=100))
    await container.tenancy_commands.register_tenant("ptn_a", "tnt_a")
    return container


def write_next_version(secret: Secret) -> None:
    secret.write(
        version=secret.next_version, ciphertext=b"x", data_key_id="dk_unused", at=datetime.now(UTC),
        actor="user:a", request_id=None, secret_type=None, metadata=None, max_versions=None,
        default_max_versions=10, expires_in=None, rotation_policy_id=None, cas=None,
    )


class CountingStore(PostgresEventStore):
    """Counts the events a load reads, so the test can tell a snapshot was used."""

    read = 0

    async def read_stream(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        events = await super().read_stream(*args, **kwargs)
        CountingStore.read += len(events)
        return events


async def test_a_secret_with_10000_versions_loads_from_a_snapshot(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    container = await make_container(database_url, tmp_path)
    try:
        # Build the history quickly: many versions per transaction, through the aggregate and the real repository.
        secret = Secret(owner="tnt_a", path="app/history", partner_id="ptn_a", tenant_id="tnt_a")
        for _ in range(100):
            for _ in range(100):
                write_next_version(secret)
            async with pool.acquire() as conn, conn.transaction():
                await container.repository.save(conn, secret.collect_events(), [secret])
        for _ in range(3):  # a few more writes, each its own save, after the last snapshot
            write_next_version(secret)
            async with pool.acquire() as conn, conn.transaction():
                await container.repository.save(conn, secret.collect_events(), [secret])
        assert secret.last_version == 10_003

        container.repository.store = CountingStore()
        CountingStore.read = 0
        loaded = await container.repository.get(pool, ADDRESS.stream_id)
        assert loaded.last_version == 10_003 and len(loaded.versions) == 10
        assert 0 < CountingStore.read < 200  # 10,000 versions and their aging-out events: > 19,000 events in all
    finally:
        await container.close()


async def test_a_writer_that_skips_the_queue_is_retried_not_lost(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    container = await make_container(database_url, tmp_path)
    try:
        await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"v": "1"}), ACTOR)
        attempts = 0
        original_get = UnitOfWork.get

        async def get_then_race(self: UnitOfWork, stream_id):  # type: ignore[no-untyped-def]
            nonlocal attempts
            aggregate = await original_get(self, stream_id)
            attempts += 1
            if attempts == 1:  # another process writes in between, without the advisory lock
                async with pool.acquire() as other, other.transaction():
                    rival = await container.repository.get(other, stream_id)
                    rival.update_metadata(at=rival.updated_at, actor="user:b", request_id=None,
                                          metadata_patch={"rival": "yes"}, secret_type=None, max_versions=None,
                                          expires_in=None, clear_expiry=False, rotation_policy_id=None,
                                          secret_policy_id=None)
                    await container.repository.save(other, rival.collect_events(), [rival])
            return aggregate

        UnitOfWork.get = get_then_race  # type: ignore[method-assign]
        try:
            secret, _ = await container.secret_commands.write(WriteSecret(address=ADDRESS, data={"v": "2"}), ACTOR)
        finally:
            UnitOfWork.get = original_get  # type: ignore[method-assign]
        assert attempts == 2
        assert secret.current_version == 2 and secret.metadata == {"rival": "yes"}
    finally:
        await container.close()


class _RollBack(Exception):
    pass


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    paths=st.sets(st.from_regex(r"[a-c]{1,2}(/[a-c_]{1,2}){0,2}", fullmatch=True), min_size=0, max_size=30),
    prefix=st.sampled_from(["", "a", "a/", "b/a", "c_"]),
    limit=st.integers(min_value=1, max_value=7),
)
def test_keyset_pages_cover_exactly_the_prefix_in_order(
    database_url: str, paths: set[str], prefix: str, limit: int
) -> None:
    async def check() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction():
                owner = "tnt_listing"
                await conn.execute("DELETE FROM scaivault_secrets WHERE owner = $1", owner)
                for path in sorted(paths):
                    await conn.execute(
                        """INSERT INTO scaivault_secrets (owner, path, stream_id, partner_id, tenant_id, secret_type,
                           current_version, metadata, max_versions, created_at, created_by, updated_at, updated_by)
                           VALUES ($1, $2, gen_random_uuid(), 'ptn_a', $1, 'kv', 1, '{}', 10,
                                   now(), 'x', now(), 'x')""",
                        owner, path,
                    )
                seen: list[str] = []
                after = None
                while True:
                    rows = await list_secret_rows(
                        conn, owner, prefix=prefix, after=after, limit=limit, include_deleted=False
                    )
                    seen += [row["path"] for row in rows]
                    if len(rows) < limit:
                        break
                    after = rows[-1]["path"]
                assert seen == sorted(p for p in paths if p.startswith(prefix))
                raise _RollBack  # leave nothing behind
        except _RollBack:
            pass
        finally:
            await conn.close()

    asyncio.run(check())


async def test_the_commands_enforce_the_callers_policies_whoever_calls_them(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    """Authorization is the command's, not only the HTTP edge's: a caller without a binding changes nothing,
    whatever calls the command; the server itself and the CLI (no caller) are not subject to policies."""
    container = await make_container(database_url, tmp_path)
    try:
        principal = Principal.from_claims({"sub": "sa:nobody", "tenant_id": "tnt_a", "partner_id": "ptn_a",
                                           "scopes": ["secrets:write", "secrets:delete"], "jti": "tok_x"})
        nobody = Actor.of(Caller(principal, "tnt_a", "ptn_a"), request_id=None)
        commands = container.secret_commands
        for attempt in (
            commands.write(WriteSecret(address=ADDRESS, data={"v": "1"}), nobody),
            commands.update_metadata(UpdateSecretMetadata(address=ADDRESS, max_versions=1), nobody),
            commands.delete(ADDRESS, nobody),
            commands.restore(ADDRESS, nobody),
            commands.destroy(ADDRESS, nobody),
            commands.destroy_version(ADDRESS, 1, nobody),
        ):
            with pytest.raises(AccessDenied):
                await attempt
        assert await pool.fetchval("SELECT count(*) FROM scaivault_secrets") == 0
        await commands.write(WriteSecret(address=ADDRESS, data={"v": "1"}), ACTOR)
        assert await pool.fetchval("SELECT count(*) FROM scaivault_secrets") == 1
    finally:
        await container.close()
