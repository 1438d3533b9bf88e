"""The unit of work's transaction: one command, one transaction, committed by the append's own message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner
from scaivault.eventstore.mapper import create_mapper
from scaivault.eventstore.recorder import PostgresEventStore
from scaivault.eventstore.repository import Repository
from tests.helpers import Counter


class RecordingConnection(asyncpg.Connection):  # type: ignore[misc]
    """Remembers every simple-protocol message (``execute`` without arguments) it sends."""

    messages: list[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages = []

    async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
        if not args:
            self.messages.append(query)
        return await super().execute(query, *args, timeout=timeout)


@pytest.fixture
async def recording_pool(database_url: str, pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Pool]:
    """A pool of one ``RecordingConnection`` (``pool`` truncated the tables first)."""
    recording = await asyncpg.create_pool(database_url, min_size=1, max_size=1, connection_class=RecordingConnection)
    try:
        yield recording
    finally:
        await recording.close()


async def messages_of(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        assert not conn.is_in_transaction()
        connection = conn._con  # the pool lends a proxy; the messages are on the connection behind it
        assert isinstance(connection, RecordingConnection)
        # Less the pool's own reset, sent on every release.
        return [m for m in connection.messages if not m.startswith("SELECT pg_advisory_unlock_all()")]


def runner_on(pool: asyncpg.Pool) -> UnitOfWorkRunner:
    return UnitOfWorkRunner(pool, Repository(PostgresEventStore(), create_mapper()), [])


async def _stored_versions(pool: asyncpg.Pool, counter: Counter) -> list[int]:
    rows = await pool.fetch("SELECT originator_version FROM scaivault_events WHERE originator_id = $1 "
                            "ORDER BY originator_version", counter.id)
    return [row[0] for row in rows]


async def test_the_append_and_the_commit_are_one_message(recording_pool: asyncpg.Pool, pool: asyncpg.Pool) -> None:
    """The table lock the append takes ends with the same message: no round trip through the event loop (which may
    be busy with other requests) while every other writer waits for it."""
    counter = Counter("one-message")
    counter.increment(2)

    async def work(uow: UnitOfWork) -> None:
        uow.add(counter)

    await runner_on(recording_pool).run(work)

    messages = await messages_of(recording_pool)
    last = messages[-1]
    assert "scaivault_append_events" in last and last.rstrip().endswith("COMMIT")
    assert "COMMIT" not in messages[:-1] and "COMMIT;" not in messages[:-1]
    assert await _stored_versions(pool, counter) == [1, 2]


async def test_a_command_that_fails_keeps_nothing_and_returns_a_clean_connection(
    recording_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    counter = Counter("fails")

    async def work(uow: UnitOfWork) -> None:
        await uow.conn.execute("CREATE TEMP TABLE IF NOT EXISTS uow_scratch (n int) ON COMMIT DELETE ROWS")
        await uow.conn.execute("INSERT INTO uow_scratch VALUES (1)")
        uow.add(counter)
        raise RuntimeError("the command refuses")

    with pytest.raises(RuntimeError):
        await runner_on(recording_pool).run(work)
    assert (await messages_of(recording_pool))[-1] == "ROLLBACK"
    assert await _stored_versions(pool, counter) == []


async def test_a_command_whose_append_conflicts_is_run_again_on_fresh_state(
    recording_pool: asyncpg.Pool, pool: asyncpg.Pool
) -> None:
    """The append fails inside the combined message; the transaction is rolled back and the command retried."""
    repository = Repository(PostgresEventStore(), create_mapper())
    counter = Counter("conflict")
    async with pool.acquire() as conn, conn.transaction():
        await repository.save(conn, counter.collect_events(), [counter])
    stale = await repository.get(pool, counter.id)
    attempts = 0

    async def work(uow: UnitOfWork) -> None:
        nonlocal attempts
        attempts += 1
        if attempts == 1:  # a rival already took version 2 of what this attempt loaded
            rival = await repository.get(pool, counter.id)
            rival.increment()
            async with pool.acquire() as conn, conn.transaction():
                await repository.save(conn, rival.collect_events(), [rival])
            stale.increment()
            uow.add(stale)
        else:
            fresh = await uow.get(counter.id)
            fresh.increment(10)
            uow.add(fresh)

    await runner_on(recording_pool).run(work)
    assert attempts == 2
    assert await _stored_versions(pool, counter) == [1, 2, 3]
    assert (await repository.get(pool, counter.id)).count == 11
