"""The secrets read model as a projection: the inline projector, plus last-access times from AccessRecorded
events, as a rebuild replays them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple
from uuid import UUID

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from projections.runner import Projection
from projections.secrets.projector import SECRET_EVENTS, project_secret_event, project_secret_events
from scaivault.audit.access_encoding import ACCESS_FIELDS_AS_STORED, access_fields, touched_no_secret
from scaivault.audit.access_records import touch_last_access
from scaivault.domain.access import ACCESS_TOPIC, AccessRecorded
from scaivault.domain.secrets import Secret


class SecretsProjection(Projection):
    name = "secrets"
    topics = frozenset({get_topic(cls) for cls in SECRET_EVENTS} | {ACCESS_TOPIC})
    tables = (
        "scaivault_secret_streams", "scaivault_secrets", "scaivault_secret_versions", "scaivault_secret_last_access"
    )
    # Unique keys that a concurrent writer of the same secret can hit before the event store's own key does: the
    # same conflict, which the command runner retries.
    concurrent_write_keys = frozenset(
        {"scaivault_secret_versions_pkey", "scaivault_secrets_pkey", "scaivault_secrets_stream_id_key"}
    )

    def decode(self, mapper: Mapper[Any], stored: StoredEvent) -> Any:
        """Of an access record, only what last-access times need, as a (time, secret streams read) pair: a
        rebuild replays nine access records for each secret event."""
        if stored.topic != ACCESS_TOPIC or not ACCESS_FIELDS_AS_STORED:
            return mapper.to_domain_event(stored)
        if touched_no_secret(stored.state):
            return NO_SECRET_READ
        fields = access_fields(stored.state)
        return LastAccess(fields["timestamp"], fields["accessed_streams"])

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        """Secret events pipelined (``project_secret_events``) and last-access times written once per batch, except
        that a purge first applies what came before it: it deletes the secret's rows and last access, as it did
        live, and what follows may re-create the secret."""
        accesses: list[tuple[datetime, Sequence[UUID]]] = []
        secret_events: list[Any] = []
        for _, event in events:
            if isinstance(event, LastAccess):
                if event.at is not None and event.accessed_streams:
                    accesses.append((event.at, event.accessed_streams))
            elif isinstance(event, AccessRecorded):
                accesses.append((event.timestamp, event.accessed_streams))
            elif isinstance(event, Secret.Purged):
                await project_secret_events(conn, secret_events)
                await touch_last_access(conn, accesses)
                accesses, secret_events = [], []
                await project_secret_event(conn, event)
            else:
                secret_events.append(event)
        await project_secret_events(conn, secret_events)
        await touch_last_access(conn, accesses)


class LastAccess(NamedTuple):
    at: datetime | None
    accessed_streams: Sequence[UUID]


NO_SECRET_READ = LastAccess(None, ())
