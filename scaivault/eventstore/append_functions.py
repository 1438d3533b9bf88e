"""Calls of the SQL functions that append events (``migrations/0004``, ``0014``, ``0015``): every append goes
through one of them, in one round trip.

They repeat what eventsourcing's ``PostgresApplicationRecorder.insert_events`` does to a table of the same shape
(``SET LOCAL lock_timeout``, ``LOCK TABLE ... IN EXCLUSIVE MODE``, ``NOTIFY``, then one ``INSERT ... RETURNING
notification_id``), and must write the same rows: same stream, version, topic and state, in the same notification
order, so that eventsourcing reads our store as its own.

- ``append_events``: ``scaivault_append_events``, the append itself, inside the caller's transaction. It may leave
  out the NOTIFY (``wake=False``); for the event store's own table it runs statements planned once per connection.
- ``record_access``: ``scaivault_record_access``, the group commit of access records as one statement (hence one
  implicit transaction): the read-model swap lock (shared), the last-access times (``scaivault_touch_last_access``),
  then ``scaivault_append_events``.

``tests/integration/test_append_functions.py`` holds their rows equal to the reference insert's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any
from uuid import UUID

from eventsourcing.persistence import StoredEvent

if TYPE_CHECKING:
    from scaivault.database import Connection

_APPEND_EVENTS = "SELECT * FROM scaivault_append_events($1::regclass, $2, $3, $4, $5, $6, $7)"
_RECORD_ACCESS = "SELECT scaivault_record_access($1, $2, $3, $4::regclass, $5, $6, $7, $8, $9, $10)"


@dataclass(frozen=True, slots=True)
class EventsTable:
    """Where an event store appends, as the append function takes it."""

    name: str  # a quoted SQL identifier, cast to regclass by PostgreSQL
    channel: str  # NOTIFY'd on each append that wakes readers
    lock_timeout: str  # how long the append waits for the table lock (a PostgreSQL duration: "5000ms")

    def arguments(self, stored_events: Sequence[StoredEvent], *, wake: bool) -> tuple[Any, ...]:
        """``scaivault_append_events``'s arguments: the table, the channel (empty to leave out the NOTIFY), the lock
        timeout, then the events' columns."""
        return (
            self.name,
            self.channel if wake else "",
            self.lock_timeout,
            [e.originator_id for e in stored_events],
            [e.originator_version for e in stored_events],
            [e.topic for e in stored_events],
            [e.state for e in stored_events],
        )


async def append_events(
    conn: Connection, table: EventsTable, stored_events: Sequence[StoredEvent], *, wake: bool = True
) -> list[int]:
    """Append inside the caller's open transaction (the table lock is held until it ends); the events' notification
    ids, in order. A taken (stream, version) raises asyncpg's ``UniqueViolationError``."""
    return [row[0] for row in await conn.fetch(_APPEND_EVENTS, *table.arguments(stored_events, wake=wake))]


def _text_literal(value: str) -> str:
    """An escape-string literal: right whatever ``standard_conforming_strings`` says."""
    if "\x00" in value:
        raise ValueError("NUL cannot be stored in a text column")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _array(items: Sequence[str], element_type: str) -> str:
    return f"ARRAY[{', '.join(items)}]::{element_type}[]"


def append_and_commit_sql(table: EventsTable, stored_events: Sequence[StoredEvent], *, wake: bool = True) -> str:
    """The append and the ``COMMIT`` as one simple-protocol message: the table lock is then held for the append and
    the commit's flush only, not also for a round trip through the caller's (possibly busy) event loop.

    A simple-protocol message takes no parameters, so every value is a literal built here from typed values: UUIDs
    and integers as such, topics as escape strings, states as hex that ``decode`` turns back into bytes."""
    ids = _array([f"'{UUID(str(e.originator_id))}'" for e in stored_events], "uuid")
    versions = _array([str(int(e.originator_version)) for e in stored_events], "bigint")
    topics = _array([_text_literal(e.topic) for e in stored_events], "text")
    states = _array([f"decode('{bytes(e.state).hex()}', 'hex')" for e in stored_events], "bytea")
    channel = table.channel if wake else ""
    return (f"SELECT count(*) FROM scaivault_append_events({_text_literal(table.name)}::regclass, "
            f"{_text_literal(channel)}, {_text_literal(table.lock_timeout)}, {ids}, {versions}, {topics}, {states});"
            " COMMIT")


async def record_access(
    conn: Connection,
    swap_key: int,
    touched: tuple[list[UUID], list[datetime]],
    table: EventsTable,
    stored_events: Sequence[StoredEvent],
    *,
    wake: bool,
) -> None:
    """A group commit in one statement, outside any transaction: take ``swap_key`` shared, move the ``touched``
    secret streams' last-access times forward (streams and times, in a fixed order), append ``stored_events``."""
    await conn.execute(_RECORD_ACCESS, swap_key, *touched, *table.arguments(stored_events, wake=wake))
