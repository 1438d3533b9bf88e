"""``scaivault events list|show``: read the event log as an operator. Read-only, and nothing is decrypted: a
ciphertext is shown as ``"<ciphertext: N bytes>"``, never its bytes, and no key material is ever printed.

``list`` reads the event index (``projections/event_index.py``, a catch-up projection run by the servers) joined
with the log; when the index is behind the log it says so on stderr. ``show`` reads the log itself.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, NoReturn, TypeVar
from uuid import UUID

import click
import orjson

from projections import event_index
from scaivault.domain.timestamps import parse_timestamp
from scaivault.eventstore.mapper import create_mapper
from scaivault.serialization import format_timestamp

T = TypeVar("T")
Runner = Callable[[Callable[[Any], Awaitable[Any]]], Any]

_TRANSCODER = create_mapper().transcoder
# Field names whose values are credentials or key material, should an event ever carry one: never printed.
_REDACTED_FIELDS = frozenset({"token", "token_hash", "hash", "password", "private_key", "key", "wrapped", "secret"})


def _usage_error(message: str) -> NoReturn:
    click.echo(f"error: invalid_request: {message}", err=True)
    sys.exit(5)


def _timestamp(raw: str | None, option: str) -> datetime | None:
    if raw is None:
        return None
    try:
        return parse_timestamp(raw.strip())
    except ValueError:
        _usage_error(f"{option} must be an ISO 8601 timestamp")


def safe_state(value: Any, name: str = "") -> Any:
    """The decoded event state, printable: bytes shown by length only, datetimes and UUIDs as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<ciphertext: {len(value)} bytes>"
    if name.lower() in _REDACTED_FIELDS and value is not None:
        return "<redacted>"
    if isinstance(value, Mapping):
        return {str(key): safe_state(item, str(key)) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_state(item, name) for item in value]
    if isinstance(value, datetime):
        return format_timestamp(value)
    if isinstance(value, UUID):
        return str(value)
    return value


def short_type(topic: str) -> str:
    """``scaivault.domain.secrets:Secret.VersionWritten`` -> ``Secret.VersionWritten``."""
    return topic.rpartition(":")[2] or topic


def event_document(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "notification_id": row["notification_id"],
        "occurred_at": format_timestamp(row["occurred_at"]) if row["occurred_at"] else None,
        "type": short_type(row["topic"]),
        "topic": row["topic"],
        "stream_id": str(row["stream_id"]),
        "stream_version": row["originator_version"],
        "tenant_id": row["tenant_id"],
        "partner_id": row["partner_id"],
        "actor": row["actor"],
        "request_id": row["request_id"],
        "state": safe_state(_TRANSCODER.decode(bytes(row["state"]))),
    }


def event_line(document: Mapping[str, Any]) -> str:
    return "  ".join(
        str(document[name] if document[name] is not None else "-")
        for name in ("notification_id", "occurred_at", "type", "stream_id", "tenant_id", "actor", "request_id")
    )


def events_group(run: Runner) -> click.Group:
    """The ``events`` command group; ``run`` is the CLI's container runner (``scaivault.cli.main._run``)."""

    @click.group("events")
    def events() -> None:
        """The event log, read-only (nothing is decrypted)."""

    @events.command("list")
    @click.option("--stream", "stream", default=None, help="One stream (UUID).")
    @click.option("--tenant", "tenant_id", default=None, help="Events of one tenant, tnt_...")
    @click.option("--partner", "partner_id", default=None, help="Events of one partner, ptn_...")
    @click.option("--type", "event_type", default=None, help="A topic, or its end: VersionWritten, Secret.Deleted.")
    @click.option("--since", default=None, help="Events at or after this ISO 8601 time.")
    @click.option("--until", default=None, help="Events at or before this ISO 8601 time.")
    @click.option("--after", type=click.IntRange(min=0), default=0, help="Events after this notification id.")
    @click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
    @click.option("--json", "as_json", is_flag=True, help="One JSON object per line, with the decoded state.")
    def events_list(
        stream: str | None,
        tenant_id: str | None,
        partner_id: str | None,
        event_type: str | None,
        since: str | None,
        until: str | None,
        after: int,
        limit: int,
        as_json: bool,
    ) -> None:
        """List events in log order: id, time, type, stream, tenant, actor, request id."""
        stream_id = None
        if stream is not None:
            try:
                stream_id = UUID(stream.strip())
            except ValueError:
                _usage_error("--stream must be a UUID")
        where = event_index.EventFilter(
            stream_id=stream_id,
            tenant_id=tenant_id,
            partner_id=partner_id,
            since=_timestamp(since, "--since"),
            until=_timestamp(until, "--until"),
            after=after,
            limit=limit,
        )

        async def query(container: Any) -> tuple[list[Any], int, int, bool]:
            pool = container.pool
            filter_ = where
            unknown_type = False
            if event_type is not None:
                topics = event_index.matching_topics(event_type, await event_index.known_topics(pool))
                unknown_type = not topics
                filter_ = replace(where, topics=topics)
            rows = [] if unknown_type else await event_index.list_events(pool, filter_)
            head, position = await event_index.index_lag(pool)
            return rows, head, position, unknown_type

        rows, head, position, unknown_type = run(query)
        for row in rows:
            document = event_document(row)
            click.echo(orjson.dumps(document).decode() if as_json else event_line(document))
        if unknown_type:
            click.echo(f"note: no indexed event has a type matching {event_type!r}", err=True)
        if position < head:
            click.echo(
                f"note: the event index is behind the log: head {head}, index at {position} "
                f"({head - position} events not listed yet; a running server indexes them)",
                err=True,
            )

    @events.command("show")
    @click.argument("notification_id", type=click.IntRange(min=1))
    @click.option("--json", "as_json", is_flag=True, help="One JSON object.")
    def events_show(notification_id: int, as_json: bool) -> None:
        """One event with its decoded state (ciphertext shown by length only)."""

        async def query(container: Any) -> Any:
            return await event_index.event_by_id(container.pool, notification_id)

        row = run(query)
        if row is None:
            click.echo(f"error: not_found: no event {notification_id}", err=True)
            sys.exit(4)
        document = event_document(row)
        if not row["indexed"]:
            document["occurred_at"] = _state_time(document["state"])
        if as_json:
            click.echo(orjson.dumps(document).decode())
            return
        click.echo(event_line(document))
        click.echo(f"  topic: {document['topic']}")
        click.echo(f"  stream_version: {document['stream_version']}")
        click.echo(f"  partner_id: {document['partner_id'] or '-'}")
        for name, value in document["state"].items():
            click.echo(f"  {name}: {orjson.dumps(value).decode()}")

    return events


def _state_time(state: Mapping[str, Any]) -> str | None:
    value = state.get("at") or state.get("timestamp")
    return value if isinstance(value, str) else None
