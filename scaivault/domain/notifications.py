"""Public events: what webhooks and subscriptions deliver (spec reference/webhook-events), derived from domain events.

A domain event is the fact; a public event is how ScaiVault tells the outside world about it. One domain event
gives zero or more public events (``Secret.VersionWritten`` gives ``secret.created`` or ``secret.updated``). Each
area declares its translations beside its events (``scaivault/domain/event_catalog.py``) with ``@translates``; the
fan-out projection (``projections/fanout/``) calls ``public_events`` for every event it reads, in log order.

Translators are pure: the few facts an event does not carry itself (the tenant, partner and path of its stream)
come in as a ``Subject``, which the projection remembers from the stream's first event (declared with
``@names_subject``). Public event ids are derived from the domain event (stream, version, index), so a replay of
the log gives every public event the id it had: receivers de-duplicate on it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import UUID

from scaivault.ids import ulid_text

E = TypeVar("E")


@dataclass(frozen=True)
class Subject:
    """What a stream is about, as its first event said: whose it is and, for path-addressed resources, the path."""

    tenant_id: str | None
    partner_id: str | None
    path: str | None = None
    # For resources named by an id rather than a path (a policy, a user): that id.
    name: str | None = None
    # For secret streams, as of just before the event: the last version written, its type and tags (the
    # projection keeps them from the stream's events; deletions report ``version_count`` from it).
    version: int | None = None
    secret_type: str | None = None
    tags: tuple[str, ...] = ()


UNKNOWN_SUBJECT = Subject(None, None, None)


@dataclass(frozen=True)
class PublicEvent:
    """One event as the outside world sees it, before it gets its id and envelope (``envelope``).

    ``secret_type`` and ``tags`` are facets webhook filters match on (``filters.secret_type``, ``filters.tags``);
    they are not part of the envelope. ``tenant_id``/``partner_id``/``path`` default to the stream's subject."""

    event_type: str
    data: dict[str, Any]
    identity_id: str
    at: datetime
    request_id: str | None = None
    path: str | None = None
    tenant_id: str | None = None
    partner_id: str | None = None
    secret_type: str | None = None
    tags: tuple[str, ...] = field(default_factory=tuple)


Translator = Callable[[Any, Subject], Iterable[PublicEvent]]
SubjectOf = Callable[[Any], Subject]

_TRANSLATORS: dict[type, Translator] = {}
_SUBJECTS: dict[type, SubjectOf] = {}
# Every public event type the server can emit (``secret.created``, ...): what webhooks and subscriptions may ask
# for, by name or by family (``secret.*``). Areas add theirs with ``declare_event_types``.
_EVENT_TYPES: set[str] = set()


def declare_event_types(*names: str) -> None:
    _EVENT_TYPES.update(names)


def event_types() -> frozenset[str]:
    return frozenset(_EVENT_TYPES)


def translates(*classes: type) -> Callable[[Translator], Translator]:
    """Register the translator of these domain event classes (one translator per class)."""

    def register(translator: Translator) -> Translator:
        for cls in classes:
            if cls in _TRANSLATORS:
                raise ValueError(f"{cls.__qualname__} already has a translator")
            _TRANSLATORS[cls] = translator
        return translator

    return register


def names_subject(*classes: type) -> Callable[[SubjectOf], SubjectOf]:
    """Register how a stream's first event (an aggregate's ``Created``) names the stream's subject."""

    def register(subject_of: SubjectOf) -> SubjectOf:
        for cls in classes:
            _SUBJECTS[cls] = subject_of
        return subject_of

    return register


def subject_named_by(domain_event: Any) -> Subject | None:
    """The subject a stream's first event names, if it is one that does."""
    subject_of = _SUBJECTS.get(type(domain_event))
    return None if subject_of is None else subject_of(domain_event)


def translated_classes() -> frozenset[type]:
    """The domain event classes the fan-out reads: those with a translation, and those that name a subject."""
    return frozenset(_TRANSLATORS) | frozenset(_SUBJECTS)


def public_events(domain_event: Any, subject: Subject) -> list[PublicEvent]:
    translator = _TRANSLATORS.get(type(domain_event))
    return [] if translator is None else list(translator(domain_event, subject))


def event_id(stream_id: UUID, version: int, index: int, at: datetime) -> str:
    """``evt_`` + a ULID: the milliseconds of ``at``, then 80 bits fixed by (stream, version, index). The same
    domain event always gives the same ids, in time order."""
    digest = hashlib.sha256(f"{stream_id}:{version}:{index}".encode()).digest()
    millis = int(at.timestamp() * 1000) & (2**48 - 1)
    return "evt_" + ulid_text(millis << 80 | int.from_bytes(digest[:10], "big"))


def type_matches(patterns: Sequence[str], event_type: str) -> bool:
    """Whether a webhook's or subscription's ``events`` list asks for ``event_type``: exact names, a family
    wildcard (``secret.*``) or ``*``."""
    for pattern in patterns:
        if pattern == "*" or pattern == event_type:
            return True
        if pattern.endswith(".*") and event_type.startswith(pattern[:-1]):
            return True
    return False


def valid_type_pattern(pattern: str) -> bool:
    """A pattern a webhook or subscription may ask for: a known type, a known family's wildcard, or ``*``."""
    if pattern == "*" or pattern in _EVENT_TYPES:
        return True
    return pattern.endswith(".*") and any(name.startswith(pattern[:-1]) for name in _EVENT_TYPES)
