"""The fan-out: a catch-up projection that turns the log into public events and hands them to webhooks and
subscriptions (an outbox).

For each batch of domain events, in log order and in the runner's tracking transaction: translate them
(``scaivault.domain.event_catalog``), keep the public events some receiver of their tenant asks for (or that
a rotation policy routes to its ``webhook_ids``: ``rotation_routes.py``) in ``scaivault_event_feed``, let every sink
record what they mean for its receivers (webhook deliveries, subscription queues), then NOTIFY ``scaivault_feed`` so
dispatchers and long polls wake at the commit. A crash anywhere replays the batch from the last committed position:
nothing is lost and, as outbox rows are keyed by (target, event id) and event ids are derived from the domain event,
nothing is queued twice.

The feed is not a read model to rebuild: a rebuild would deliver history again. It starts at the log's head when
it is first installed (events before it are history, not news) and is trimmed by housekeeping.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, ClassVar
from uuid import UUID

import asyncpg
from eventsourcing.persistence import Mapper, StoredEvent
from eventsourcing.utils import get_topic

from projections.fanout.rotation_routes import ROUTE_EVENTS, RotationRoutes, routed_policy
from projections.fanout.sinks import FanOutSink, FeedEntry
from projections.runner import Projection
from scaivault.audit.access_encoding import access_fields, touched_no_secret
from scaivault.domain.access import ACCESS_TOPIC, AccessRecorded
from scaivault.domain.event_catalog import secret_tags  # importing it registers the catalogue's translations
from scaivault.domain.notifications import (
    UNKNOWN_SUBJECT,
    PublicEvent,
    Subject,
    event_id,
    public_events,
    subject_named_by,
    translated_classes,
    type_matches,
)
from scaivault.domain.secrets import Secret
from scaivault.serialization import format_timestamp

FEED_CHANNEL = "scaivault_feed"
# Commit to receipt is what webhook receivers wait on: while events flow, take them in small batches, not the
# second other projections gather for (docs/adr/0004).
FANOUT_GATHER_SECONDS = 0.02
# An access record that read no secret and was not refused is no news to anyone: skipped without decoding.
_REFUSED = b'"status":403,'


def _topics() -> frozenset[str]:
    # Besides the translated events, what keeps a secret's facets (type, tags) current for filters, and the
    # rotation policies' webhook_ids (their rotation events' extra receivers).
    return frozenset(get_topic(cls) for cls in (*translated_classes(), Secret.MetadataUpdated, *ROUTE_EVENTS))


class FanOutProjection(Projection):
    name = "fanout"
    topics: ClassVar[frozenset[str]] = _topics()
    tables = ("scaivault_event_feed", "scaivault_fanout_streams", "scaivault_fanout_rotation_routes")
    gather_seconds: ClassVar[float | None] = FANOUT_GATHER_SECONDS

    def __init__(self, sinks: Sequence[FanOutSink] = ()) -> None:
        self.sinks = list(sinks)

    def decode(self, mapper: Mapper[Any], stored: StoredEvent) -> Any:
        """Access records (most of the log) by the audit log's fast decoder, and only those that can be news."""
        if stored.topic != ACCESS_TOPIC:
            return mapper.to_domain_event(stored)
        if touched_no_secret(stored.state) and _REFUSED not in stored.state:
            return None
        return AccessRecorded.of(**access_fields(stored.state))

    async def apply(self, conn: asyncpg.Connection, events: Sequence[tuple[int, Any]]) -> None:
        events = [(n, e) for n, e in events if e is not None]
        if not events:
            return
        wanted, webhooks = await _interests(conn)
        subjects = _Subjects(conn)
        routes = RotationRoutes(conn)
        await subjects.load({e.originator_id for _, e in events if not _own_subject(e) and not _routing(e)})
        pending: list[_Pending] = []
        for notification_id, domain_event in events:
            if _routing(domain_event):
                routes.apply(domain_event)
                continue
            subject = subjects.before(domain_event)
            for index, public in enumerate(public_events(domain_event, subject)):
                tenant_id = public.tenant_id or subject.tenant_id
                if tenant_id is None:
                    continue
                routed = await _routed_to(routes, webhooks.get(tenant_id, set()), tenant_id, public)
                if routed or type_matches(wanted.get(tenant_id, ()), public.event_type):
                    public_id = _event_id(domain_event, index, public)
                    pending.append((notification_id, public_id, public_with(public, subject), routed))
            subjects.after(domain_event, subject)
        await subjects.save()
        await routes.save()
        entries = await _append_to_feed(conn, pending)
        if entries:
            for sink in self.sinks:
                await sink.fan_out(conn, entries)
            await conn.execute(f"NOTIFY {FEED_CHANNEL}")


# (notification id, public event id, the public event, webhooks its rotation policy routes it to)
_Pending = tuple[int, str, PublicEvent, tuple[str, ...]]


def _routing(domain_event: Any) -> bool:
    """A rotation policy's event: it says where rotation events go, and is no public event itself."""
    return isinstance(domain_event, ROUTE_EVENTS)


async def _routed_to(
    routes: RotationRoutes, enabled: set[str], tenant_id: str, public: PublicEvent
) -> tuple[str, ...]:
    """The enabled webhooks of the tenant that the governing rotation policy names for this event (docs/rotation.md,
    "Webhooks of a policy"): they receive it whatever their own ``events`` and ``filters`` say."""
    if not enabled:
        return ()
    policy_id = routed_policy(public.event_type, public.data)
    if policy_id is None:
        return ()
    return tuple(w for w in await routes.webhook_ids(tenant_id, policy_id) if w in enabled)


def _own_subject(domain_event: Any) -> bool:
    """Events that say whose they are themselves (an access record names its tenant; a stream's first event names
    its subject): no lookup."""
    return isinstance(domain_event, AccessRecorded) or subject_named_by(domain_event) is not None


def _event_id(domain_event: Any, index: int, public: PublicEvent) -> str:
    return event_id(domain_event.originator_id, domain_event.originator_version, index, public.at)


def public_with(public: PublicEvent, subject: Subject) -> PublicEvent:
    """The public event with the stream's subject filled in where the translation left it open."""
    return replace(
        public,
        tenant_id=public.tenant_id or subject.tenant_id,
        partner_id=public.partner_id or subject.partner_id,
        path=public.path or subject.path,
    )


def envelope(event_id_: str, public: PublicEvent) -> dict[str, Any]:
    """The envelope every receiver gets (spec reference/webhook-events): ``path`` only for path-addressed
    resources."""
    body: dict[str, Any] = {
        "event_id": event_id_,
        "event_type": public.event_type,
        "timestamp": format_timestamp(public.at),
        "tenant_id": public.tenant_id,
        "partner_id": public.partner_id,
        "identity_id": public.identity_id,
    }
    if public.path is not None:
        body["path"] = public.path
    body["data"] = public.data
    body["request_id"] = public.request_id
    return body


async def _interests(conn: asyncpg.Connection) -> tuple[dict[str, list[str]], dict[str, set[str]]]:
    """Per tenant, the event types its enabled webhooks and active subscriptions ask for, and its enabled webhooks'
    ids (a small table each)."""
    rows = await conn.fetch(
        """SELECT tenant_id, events, webhook_id FROM scaivault_webhooks WHERE enabled
           UNION ALL
           SELECT tenant_id, events, NULL FROM scaivault_subscriptions WHERE status = 'active'"""
    )
    wanted: dict[str, list[str]] = {}
    webhooks: dict[str, set[str]] = {}
    for row in rows:
        wanted.setdefault(row["tenant_id"], []).extend(row["events"])
        if row["webhook_id"] is not None:
            webhooks.setdefault(row["tenant_id"], set()).add(row["webhook_id"])
    return wanted, webhooks


async def _append_to_feed(conn: asyncpg.Connection, pending: Sequence[_Pending]) -> list[FeedEntry]:
    if not pending:
        return []
    envelopes = [envelope(eid, public) for _, eid, public, _ in pending]
    rows = await conn.fetch(
        """INSERT INTO scaivault_event_feed (event_id, notification_id, tenant_id, partner_id, event_type, path,
               secret_type, tags, envelope, recorded_at)
           SELECT event_id, notification_id, tenant_id, partner_id, event_type, path, secret_type, tags::text[],
                  envelope, recorded_at
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                       $8::text[], $9::jsonb[], $10::timestamptz[])
                WITH ORDINALITY AS t(event_id, notification_id, tenant_id, partner_id, event_type, path,
                     secret_type, tags, envelope, recorded_at, ord)
           ORDER BY ord
           ON CONFLICT (event_id) DO NOTHING
           RETURNING position, event_id""",
        [eid for _, eid, _, _ in pending],
        [n for n, _, _, _ in pending],
        [p.tenant_id for _, _, p, _ in pending],
        [p.partner_id for _, _, p, _ in pending],
        [p.event_type for _, _, p, _ in pending],
        [p.path for _, _, p, _ in pending],
        [p.secret_type for _, _, p, _ in pending],
        [_tags_text(p.tags) for _, _, p, _ in pending],
        envelopes,
        [p.at for _, _, p, _ in pending],
    )
    positions = {row["event_id"]: row["position"] for row in rows}
    return [
        FeedEntry(
            position=positions[eid], event_id=eid, event_type=p.event_type, tenant_id=p.tenant_id,
            partner_id=p.partner_id, path=p.path, secret_type=p.secret_type, tags=p.tags, envelope=body,
            recorded_at=p.at, routed_to=routed, notification_id=n,
        )
        for (n, eid, p, routed), body in zip(pending, envelopes, strict=True)
        if eid in positions
    ]


def _tags_text(tags: Iterable[str]) -> str:
    """A text[] literal for unnest (arrays of arrays cannot be passed as one parameter)."""
    return "{" + ",".join('"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"' for t in tags) + "}"


class _Subjects:
    """The subjects of the streams a batch touches: remembered from their first events, else looked up once."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn
        self._known: dict[UUID, Subject] = {}
        self._changed: set[UUID] = set()

    async def load(self, stream_ids: set[UUID]) -> None:
        if not stream_ids:
            return
        rows = await self._conn.fetch(
            """SELECT stream_id, tenant_id, partner_id, path, name, version, secret_type, tags
               FROM scaivault_fanout_streams WHERE stream_id = ANY($1::uuid[])""",
            list(stream_ids),
        )
        for row in rows:
            self._known[row["stream_id"]] = Subject(
                row["tenant_id"], row["partner_id"], row["path"], row["name"], row["version"], row["secret_type"],
                tuple(row["tags"]),
            )
        missing = [s for s in stream_ids if s not in self._known]
        if missing:
            await self._look_up_older_streams(missing)

    async def _look_up_older_streams(self, stream_ids: list[UUID]) -> None:
        """Streams that began before the fan-out did: their subject from the read models that know it."""
        rows = await self._conn.fetch(
            """SELECT s.stream_id, s.tenant_id, s.partner_id, s.path, NULL AS name, r.current_version AS version,
                      r.secret_type, r.metadata -> 'tags' AS tags
               FROM scaivault_secret_streams s LEFT JOIN scaivault_secrets r ON r.stream_id = s.stream_id
               WHERE s.stream_id = ANY($1::uuid[])
               UNION ALL
               SELECT stream_id, tenant_id, partner_id, NULL, policy_id, NULL, NULL, NULL
               FROM scaivault_policies WHERE stream_id = ANY($1::uuid[])
               UNION ALL
               SELECT DISTINCT ON (stream_id) stream_id, tenant_id, partner_id, NULL, NULL, NULL, NULL, NULL
               FROM scaivault_event_index WHERE stream_id = ANY($1::uuid[])
               ORDER BY 1""",
            stream_ids,
        )
        for row in rows:
            if row["stream_id"] in self._known:
                continue
            tags = row["tags"]
            self._known[row["stream_id"]] = Subject(
                row["tenant_id"], row["partner_id"], row["path"], row["name"], row["version"], row["secret_type"],
                tuple(t for t in (tags if isinstance(tags, list) else []) if isinstance(t, str)),
            )
            self._changed.add(row["stream_id"])

    def before(self, domain_event: Any) -> Subject:
        """The stream's subject as of just before this event."""
        named = subject_named_by(domain_event)
        if named is not None:
            self._known[domain_event.originator_id] = named
            self._changed.add(domain_event.originator_id)
            return named
        if isinstance(domain_event, AccessRecorded):
            return UNKNOWN_SUBJECT
        return self._known.get(domain_event.originator_id, UNKNOWN_SUBJECT)

    def after(self, domain_event: Any, subject: Subject) -> None:
        """What the event changes of its stream's subject (a secret's last version, type and tags)."""
        if isinstance(domain_event, Secret.VersionWritten):
            updated = replace(
                subject, version=domain_event.version, secret_type=domain_event.secret_type,
                tags=secret_tags(domain_event.metadata),
            )
        elif isinstance(domain_event, Secret.MetadataUpdated):
            updated = replace(
                subject, secret_type=domain_event.secret_type, tags=secret_tags(domain_event.metadata)
            )
        else:
            return
        self._known[domain_event.originator_id] = updated
        self._changed.add(domain_event.originator_id)

    async def save(self) -> None:
        if not self._changed:
            return
        rows = [(s, self._known[s]) for s in self._changed]
        await self._conn.execute(
            """INSERT INTO scaivault_fanout_streams (stream_id, tenant_id, partner_id, path, name, version,
                   secret_type, tags)
               SELECT s, t, p, pa, n, v, st, tg::text[] FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                   $5::text[], $6::int[], $7::text[], $8::text[]) AS u(s, t, p, pa, n, v, st, tg)
               ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version,
                   secret_type = excluded.secret_type, tags = excluded.tags""",
            [s for s, _ in rows],
            [x.tenant_id for _, x in rows],
            [x.partner_id for _, x in rows],
            [x.path for _, x in rows],
            [x.name for _, x in rows],
            [x.version for _, x in rows],
            [x.secret_type for _, x in rows],
            [_tags_text(x.tags) for _, x in rows],
        )
        self._changed.clear()
