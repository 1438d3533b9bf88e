"""Path-scoped event subscriptions (spec reference/subscriptions, core-concepts/events-and-webhooks): what a
subscription asks for, its validation, and the Subscription aggregate. Pure: no I/O, no clock (time comes in as
``at``), and never a plaintext signing secret: push subscriptions' secrets arrive sealed (the command seals them,
``scaivault/crypto/signing_secrets.py``), and events carry only the ciphertext and its data key's id.

A subscription belongs to the identity that created it (``identity_id``). Which of the public events of its tenant
it receives: those whose type one of its ``events`` patterns names (``type_matches``), whose path one of its
``paths`` globs matches (an event without a path only for a subscription asking for ``**``), and that pass its
``filters`` (a webhook's: ``path_prefix``, ``secret_type``, ``tags``; scaivault/domain/webhooks.py). The url and
signing-secret rules are a webhook's too. docs/subscriptions.md has the decisions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

import scaivault.domain.event_catalog  # noqa: F401 - registers the public event types ``events`` may name
from scaivault.domain import webhooks
from scaivault.domain.errors import ValidationFailed
from scaivault.domain.globs import InvalidGlob, glob_matches, parse_glob
from scaivault.domain.labels import field_error
from scaivault.domain.notifications import type_matches, valid_type_pattern
from scaivault.egress import IPNetwork

WEBHOOK = "webhook"
POLLING = "polling"
DELIVERY_TYPES = (WEBHOOK, POLLING)
ACTIVE = "active"
EVERYTHING = "**"  # the one path glob that also takes events without a path (policy, identity events)

DEFAULT_BUFFER_SIZE = 1000
MAX_BUFFER_SIZE = 10_000
MAX_PATHS = 100
# The globs' characters together: each is matched against every event of the tenant in the fan-out, so what one
# subscription may ask to be matched is bounded as a whole, not only glob by glob (512 characters each).
MAX_PATHS_LENGTH = 4096
MAX_EVENT_PATTERNS = 100

_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/subscription")



def subscription_stream_id(subscription_id: str) -> UUID:
    return uuid5(_NAMESPACE, subscription_id)


_invalid = field_error


# ---- validation: raw values in, canonical values out ----------------------------------------------------------------


def check_name(name: object) -> str:
    return webhooks.check_name(name)


def check_paths(paths: object, *, bounded: bool = True) -> list[str]:
    """A non-empty list of path globs, as access policies write them (``invalid_glob`` names the bad one), of at most
    MAX_PATHS_LENGTH characters together (``bounded``; unbounded: paths a subscription kept from before that rule)."""
    if not isinstance(paths, list) or not paths or len(paths) > MAX_PATHS:
        raise _invalid("paths", f"paths is a list of 1-{MAX_PATHS} path globs")
    for index, pattern in enumerate(paths):
        if not isinstance(pattern, str):
            raise _invalid(f"paths.{index}", "a path glob is a string")
        try:
            parse_glob(pattern)
        except InvalidGlob:
            raise InvalidGlob(
                "A path glob is segments of a-z, 0-9, '-', '_' and the wildcards '*', '?' and '**' (a whole segment),"
                " separated by '/'", field=f"paths.{index}", pattern=pattern[:512],
            ) from None
    unique = list(dict.fromkeys(paths))
    if bounded and sum(len(pattern) for pattern in unique) > MAX_PATHS_LENGTH:
        raise _invalid("paths", f"the path globs hold at most {MAX_PATHS_LENGTH} characters together")
    return unique


def check_events(events: object) -> list[str]:
    """Known event types, a family's wildcard (``secret.*``) or ``*``."""
    if not isinstance(events, list) or not events or len(events) > MAX_EVENT_PATTERNS:
        raise _invalid("events", f"events is a list of 1-{MAX_EVENT_PATTERNS} event types")
    for index, pattern in enumerate(events):
        if not isinstance(pattern, str) or not valid_type_pattern(pattern):
            raise _invalid(f"events.{index}", "not a known event type, family wildcard (e.g. secret.*) or '*'")
    return list(dict.fromkeys(events))


def _in_delivery(error: ValidationFailed) -> ValidationFailed:
    """A webhook rule's error, naming the field as it is in a subscription's body (``delivery.url``)."""
    fields = [{**item, "field": f"delivery.{item['field']}"} for item in error.details.get("fields", [])]
    return ValidationFailed(fields=fields)


def check_url(url: object, egress_allow: Sequence[IPNetwork]) -> str:
    """As a webhook's: https, or http only to an IP address the operator allows (``SCAIVAULT_EGRESS_ALLOW``)."""
    try:
        return webhooks.check_url(url, egress_allow)
    except ValidationFailed as error:
        raise _in_delivery(error) from None


def check_filters(filters: object) -> dict[str, list[str]]:
    """As a webhook's (``path_prefix``, ``secret_type``, ``tags``), narrowing what the paths and events select."""
    return webhooks.check_filters(filters)


def check_buffer_size(buffer_size: object) -> int:
    if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or not 1 <= buffer_size <= MAX_BUFFER_SIZE:
        raise _invalid("delivery.buffer_size", f"a whole number from 1 to {MAX_BUFFER_SIZE}")
    return buffer_size


@dataclass(frozen=True)
class DeliveryRequest:
    """A delivery as asked for, checked; the plaintext ``secret`` (push only) is sealed by the command and never
    stored as such. ``secret`` None on a push delivery: keep the current one (a PATCH that changes only the url)."""

    type: str
    url: str | None
    secret: str | None
    buffer_size: int

    def __repr__(self) -> str:  # a signing secret must never reach a log line through a repr
        return f"DeliveryRequest(type={self.type!r}, url={self.url!r}, buffer_size={self.buffer_size})"


def check_delivery(
    delivery: object, egress_allow: Sequence[IPNetwork], current: Subscription | None = None
) -> DeliveryRequest:
    """The delivery of a new subscription, or a PATCH's over ``current``: fields not given keep their current value
    while the type stays; a new type starts from its defaults (a push delivery then needs url and secret)."""
    if not isinstance(delivery, Mapping):
        raise _invalid("delivery", "delivery is an object")
    kind = delivery.get("type", current.delivery_type if current is not None else None)
    if kind not in DELIVERY_TYPES:
        raise _invalid("delivery.type", "webhook or polling")
    keeps = current is not None and current.delivery_type == kind
    if kind == POLLING:
        unexpected = [name for name in ("url", "secret") if delivery.get(name) is not None]
        if unexpected:
            raise _invalid(f"delivery.{unexpected[0]}", "only a webhook delivery has a url and a secret")
        fallback = current.buffer_size if keeps and current is not None else DEFAULT_BUFFER_SIZE
        return DeliveryRequest(POLLING, None, None, check_buffer_size(delivery.get("buffer_size", fallback)))
    if delivery.get("buffer_size") is not None:
        raise _invalid("delivery.buffer_size", "only a polling delivery has a buffer")
    url = delivery.get("url", current.url if keeps and current is not None else None)
    secret = delivery.get("secret")
    if url is None:
        raise _invalid("delivery.url", "a webhook delivery needs a url")
    if secret is None and not keeps:
        raise _invalid("delivery.secret", "a webhook delivery needs a signing secret")
    return DeliveryRequest(
        WEBHOOK, check_url(url, egress_allow),
        None if secret is None else webhooks.check_secret(secret, "delivery.secret"), DEFAULT_BUFFER_SIZE,
    )


@dataclass(frozen=True)
class SealedSecret:
    """A push subscription's signing secret as events and the read model hold it."""

    ciphertext: bytes
    data_key_id: str


# ---- matching: which subscriptions want a public event --------------------------------------------------------------


@dataclass(frozen=True)
class Interest:
    """What a subscription asks for, as the fan-out matches it."""

    paths: tuple[str, ...]
    events: tuple[str, ...]
    filters: Mapping[str, Sequence[str]]

    def wants(self, event_type: str, path: str | None, secret_type: str | None, tags: Iterable[str]) -> bool:
        if not type_matches(self.events, event_type):
            return False
        if path is None:
            if EVERYTHING not in self.paths:
                return False
        elif not any(glob_matches(pattern, path) for pattern in self.paths):
            return False
        return webhooks.filters_match(dict(self.filters), webhooks.Facets(path, secret_type, tuple(tags)))


# ---- the aggregate --------------------------------------------------------------------------------------------------


class Subscription(Aggregate):
    @staticmethod
    def create_id(subscription_id: str) -> UUID:
        return subscription_stream_id(subscription_id)

    @classmethod
    def create(
        cls, *, subscription_id: str, tenant_id: str, partner_id: str, identity_id: str, name: object,
        paths: object, events: object, filters: object, delivery: DeliveryRequest, sealed: SealedSecret | None,
        at: datetime, actor: str, request_id: str | None,
    ) -> Subscription:
        if (delivery.type == WEBHOOK) != (sealed is not None):
            raise ValueError("a webhook delivery has a sealed secret, a polling one none")
        return cls(
            subscription_id=subscription_id, tenant_id=tenant_id, partner_id=partner_id, identity_id=identity_id,
            name=check_name(name), paths=check_paths(paths), events=check_events(events),
            filters=check_filters(filters), delivery_type=delivery.type, url=delivery.url,
            secret_ciphertext=sealed.ciphertext if sealed else None,
            secret_key_id=sealed.data_key_id if sealed else None, buffer_size=delivery.buffer_size,
            at=at, actor=actor, request_id=request_id,
        )

    # Declared event classes (a type checker sees them); each name is a stored topic:
    # ``scaivault.domain.subscriptions:Subscription.<Name>``.
    class Created(Aggregate.Created):
        subscription_id: str
        tenant_id: str
        partner_id: str
        identity_id: str
        name: str
        paths: list[str]
        events: list[str]
        filters: dict[str, list[str]]
        delivery_type: str
        url: str | None
        secret_ciphertext: bytes | None
        secret_key_id: str | None
        buffer_size: int
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, subscription_id: str, tenant_id: str, partner_id: str, identity_id: str, name: str, paths: list[str],
        events: list[str], filters: dict[str, list[str]], delivery_type: str, url: str | None,
        secret_ciphertext: bytes | None, secret_key_id: str | None, buffer_size: int, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.subscription_id = subscription_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.identity_id = identity_id
        self.name = name
        self.paths = paths
        self.events = events
        self.filters = filters
        self.delivery_type = delivery_type
        self.url = url
        self.secret_ciphertext = secret_ciphertext
        self.secret_key_id = secret_key_id
        self.buffer_size = buffer_size
        self.status = ACTIVE
        self.created_at = at
        self.updated_at = at
        self.deleted = False

    @property
    def sealed_secret(self) -> SealedSecret | None:
        if self.secret_ciphertext is None or self.secret_key_id is None:
            return None
        return SealedSecret(self.secret_ciphertext, self.secret_key_id)

    def update(
        self, *, paths: object, events: object, delivery: DeliveryRequest, sealed: SealedSecret | None, at: datetime,
        actor: str, request_id: str | None,
    ) -> str | None:
        """Set paths, events and delivery (a PATCH passes the current value of what it leaves alone; ``sealed``: the
        new secret if one was given, else the current one is kept for a push delivery). Returns the data key of a
        signing secret no longer used (for the command to destroy), if any."""
        kept = sealed if sealed is not None else (self.sealed_secret if delivery.type == WEBHOOK else None)
        if (delivery.type == WEBHOOK) != (kept is not None):
            raise ValueError("a webhook delivery has a sealed secret, a polling one none")
        old = self.secret_key_id
        replaced = old if old is not None and (kept is None or kept.data_key_id != old) else None
        # Paths kept as they are pass as they are (a subscription may predate MAX_PATHS_LENGTH).
        self._updated(
            paths=check_paths(paths, bounded=paths != self.paths), events=check_events(events),
            delivery_type=delivery.type, url=delivery.url,
            secret_ciphertext=kept.ciphertext if kept else None, secret_key_id=kept.data_key_id if kept else None,
            buffer_size=delivery.buffer_size, at=at, actor=actor, request_id=request_id,
        )
        return replaced

    class Updated(Aggregate.Event):
        paths: list[str]
        events: list[str]
        delivery_type: str
        url: str | None
        secret_ciphertext: bytes | None
        secret_key_id: str | None
        buffer_size: int
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, paths: list[str], events: list[str], delivery_type: str, url: str | None,
        secret_ciphertext: bytes | None, secret_key_id: str | None, buffer_size: int, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.paths = paths
        self.events = events
        self.delivery_type = delivery_type
        self.url = url
        self.secret_ciphertext = secret_ciphertext
        self.secret_key_id = secret_key_id
        self.buffer_size = buffer_size
        self.updated_at = at

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> str | None:
        """Returns the data key of its signing secret (for the command to destroy), if it had one."""
        key = self.secret_key_id
        self._deleted(at=at, actor=actor, request_id=request_id)
        return key

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True
        self.updated_at = at


def interest_of(row: Mapping[str, Any]) -> Interest:
    """The interest of a read-model row (``paths``, ``events``, ``filters``)."""
    return Interest(tuple(row["paths"]), tuple(row["events"]), row["filters"] or {})


# ---- who may see whose subscriptions ---------------------------------------------------------------------------------

ADMIN_ROLES = frozenset({"super_admin", "partner_admin"})


def administers(roles: frozenset[str], own_tenant_id: str | None, tenant_id: str | None) -> bool:
    """Whether roles make their holder an administrator of ``tenant_id`` (as for policies: ``tenant_admin`` of its own
    tenant, partner and super admins of any tenant they act in), who sees and manages every subscription there."""
    if tenant_id is None:
        return False
    return not roles.isdisjoint(ADMIN_ROLES) or ("tenant_admin" in roles and own_tenant_id == tenant_id)


def same_identity(a: str, b: str) -> bool:
    """Identity ids compare case-insensitively (as policy bindings do)."""
    return a.strip().lower() == b.strip().lower()
