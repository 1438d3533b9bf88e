"""Webhooks (spec reference/webhooks, advanced/webhook-signatures): where a tenant wants its public events POSTed.

A webhook is an aggregate with its own stream (``wh_`` id). Its signing secret never enters an event in plaintext:
the command seals it first (``scaivault/crypto/signing_secrets.py``) and the events carry the ciphertext and the
data key's id. A rotation keeps the replaced secret, sealed again in the ``previous`` slot, until
``previous_secret_expires_at``: receivers may accept either meanwhile (the server always signs with the current).

Rules (docs/webhooks.md): ``url`` is https; http only to an IP literal the operator allows in
``SCAIVAULT_EGRESS_ALLOW`` (for receivers on private networks and tests); a literal address the egress guard refuses
is refused here too, so the mistake shows at creation, not at the first delivery (host names are checked at every
connection). ``events``: known types, family wildcards (``secret.*``) or ``*``. ``filters``: ``path_prefix``
(one prefix or a list), ``secret_type`` (one or a list), ``tags`` (a list): within a filter any listed value
matches, across filters all must match; an event without the facet a filter names does not match it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid5

from eventsourcing.domain import Aggregate, event

import scaivault.domain.event_catalog  # noqa: F401 - registers the public event types webhooks may ask for
from scaivault.domain.labels import CONTROL_CHARACTERS, MAX_NAME_LENGTH, clean_name, field_error
from scaivault.domain.notifications import type_matches, valid_type_pattern
from scaivault.egress import EgressRefused, IPNetwork, check_address, client_host

_NAMESPACE = UUID("5b0e9a52-4f63-4f0c-9f36-7d3c2c0e8a11")
MAX_URL_LENGTH = 2048
MIN_SECRET_LENGTH = 16
MAX_SECRET_LENGTH = 512
MAX_EVENT_PATTERNS = 100
MAX_FILTER_VALUES = 50
MAX_FILTER_VALUE_LENGTH = 512
FILTER_KEYS = ("path_prefix", "secret_type", "tags")
_CONTROL = CONTROL_CHARACTERS


def webhook_stream_id(webhook_id: str) -> UUID:
    return uuid5(_NAMESPACE, webhook_id)


_invalid = field_error


def check_name(name: object) -> str:
    cleaned = clean_name(name)
    if cleaned is None:
        raise _invalid("name", f"a name is 1-{MAX_NAME_LENGTH} printable characters")
    return cleaned


def check_url(url: object, http_allowed: Sequence[IPNetwork] = ()) -> str:
    """An https URL (http only to an allowed IP literal), without credentials or fragment."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH or _CONTROL.search(url) or " " in url:
        raise _invalid("url", f"a URL of at most {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number in range
        host = client_host(url)  # the host as deliveries will connect to it (full-width digits folded)
    except ValueError:
        raise _invalid("url", "not a valid URL") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise _invalid("url", "must be an https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise _invalid("url", "may not carry credentials; authenticate deliveries by their signature")
    if parts.fragment:
        raise _invalid("url", "may not have a fragment")
    literal = _ip_literal(host)
    if parts.scheme == "http" and not (literal is not None and _covered(literal, http_allowed)):
        raise _invalid("url", "must use https (http only to an address the operator allows in SCAIVAULT_EGRESS_ALLOW)")
    if literal is not None:
        try:
            check_address(literal, http_allowed)
        except EgressRefused as refused:
            raise _invalid("url", f"the address is {refused.reason}, which deliveries may not reach") from None
    return url


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _covered(address: ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Iterable[IPNetwork]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def check_events(events: object) -> list[str]:
    if not isinstance(events, list) or not events:
        raise _invalid("events", "a non-empty list of event types (e.g. secret.rotated, secret.*)")
    if len(events) > MAX_EVENT_PATTERNS:
        raise _invalid("events", f"at most {MAX_EVENT_PATTERNS} event types")
    for index, pattern in enumerate(events):
        if not isinstance(pattern, str) or not valid_type_pattern(pattern):
            raise _invalid(f"events.{index}", "not a known event type, family wildcard (secret.*) or *")
    return list(dict.fromkeys(events))


def _values(filters: dict[str, Any], key: str, *, single_allowed: bool) -> list[str] | None:
    value = filters.get(key)
    if value is None:
        return None
    if isinstance(value, str) and single_allowed:
        value = [value]
    if (
        not isinstance(value, list) or not value or len(value) > MAX_FILTER_VALUES
        or any(not isinstance(v, str) or not v or len(v) > MAX_FILTER_VALUE_LENGTH for v in value)
    ):
        shape = "a string or a list of strings" if single_allowed else "a list of strings"
        raise _invalid(f"filters.{key}", f"{shape} (1-{MAX_FILTER_VALUES} non-empty values)")
    return list(dict.fromkeys(value))


def check_filters(filters: object) -> dict[str, list[str]]:
    """The filters in their stored form: each given filter as a list of values."""
    if filters is None:
        return {}
    if not isinstance(filters, dict):
        raise _invalid("filters", "an object with path_prefix, secret_type and/or tags")
    unknown = sorted(set(filters) - set(FILTER_KEYS))
    if unknown:
        raise _invalid(f"filters.{unknown[0]}", "unknown filter (known: path_prefix, secret_type, tags)")
    checked = {
        key: values for key in FILTER_KEYS
        if (values := _values(filters, key, single_allowed=key != "tags")) is not None
    }
    return checked


def check_secret(secret: object, field: str = "secret") -> str:
    """A signing secret: at least 16 characters (32 or more recommended), never echoed in an error."""
    if not isinstance(secret, str) or not MIN_SECRET_LENGTH <= len(secret) <= MAX_SECRET_LENGTH:
        raise _invalid(field, f"a signing secret of {MIN_SECRET_LENGTH}-{MAX_SECRET_LENGTH} characters "
                              "(32 or more recommended)")
    if _CONTROL.search(secret):
        raise _invalid(field, "may not contain control characters")
    return secret


@dataclass(frozen=True)
class Facets:
    """What webhook filters look at in a public event."""

    path: str | None
    secret_type: str | None
    tags: Sequence[str]


def filters_match(filters: dict[str, Any], facets: Facets) -> bool:
    prefixes = filters.get("path_prefix")
    if prefixes and (facets.path is None or not any(facets.path.startswith(p) for p in prefixes)):
        return False
    types = filters.get("secret_type")
    if types and facets.secret_type not in types:
        return False
    tags = filters.get("tags")
    return not tags or any(tag in facets.tags for tag in tags)


def wants(events: Sequence[str], filters: dict[str, Any], event_type: str, facets: Facets) -> bool:
    """Whether a webhook with these ``events`` and ``filters`` receives this public event."""
    return type_matches(events, event_type) and filters_match(filters, facets)


class Webhook(Aggregate):
    @staticmethod
    def create_id(webhook_id: str) -> UUID:
        return webhook_stream_id(webhook_id)

    @classmethod
    def create(
        cls, *, webhook_id: str, tenant_id: str, partner_id: str, name: object, url: object, events: object,
        filters: object, enabled: object, secret_ciphertext: bytes, secret_key_id: str, at: datetime, actor: str,
        request_id: str | None, http_allowed: Sequence[IPNetwork] = (),
    ) -> Webhook:
        """``secret_ciphertext``: the signing secret, checked (``check_secret``) and sealed by the command."""
        if not isinstance(enabled, bool):
            raise _invalid("enabled", "true or false")
        return cls(
            webhook_id=webhook_id, tenant_id=tenant_id, partner_id=partner_id, name=check_name(name),
            url=check_url(url, http_allowed), events=check_events(events), filters=check_filters(filters),
            enabled=enabled, secret_ciphertext=secret_ciphertext, secret_key_id=secret_key_id, at=at, actor=actor,
            request_id=request_id,
        )

    class Created(Aggregate.Created):
        webhook_id: str
        tenant_id: str
        partner_id: str
        name: str
        url: str
        events: list[str]
        filters: dict[str, list[str]]
        enabled: bool
        secret_ciphertext: bytes
        secret_key_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, webhook_id: str, tenant_id: str, partner_id: str, name: str, url: str, events: list[str],
        filters: dict[str, list[str]], enabled: bool, secret_ciphertext: bytes, secret_key_id: str, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.webhook_id = webhook_id
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.url = url
        self.events = events
        self.filters = filters
        self.enabled = enabled
        self.secret_ciphertext = secret_ciphertext
        self.secret_key_id = secret_key_id
        self.previous_secret_key_id: str | None = None
        self.previous_secret_expires_at: datetime | None = None
        self.deleted = False

    def update(
        self, *, name: object, url: object, events: object, filters: object, enabled: object, at: datetime,
        actor: str, request_id: str | None, http_allowed: Sequence[IPNetwork] = (),
    ) -> None:
        """Set every field to the given value (a PATCH passes the current value of what it leaves alone)."""
        if not isinstance(enabled, bool):
            raise _invalid("enabled", "true or false")
        self._updated(
            name=check_name(name), url=check_url(url, http_allowed), events=check_events(events),
            filters=check_filters(filters), enabled=enabled, at=at, actor=actor, request_id=request_id,
        )

    class Updated(Aggregate.Event):
        name: str
        url: str
        events: list[str]
        filters: dict[str, list[str]]
        enabled: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, name: str, url: str, events: list[str], filters: dict[str, list[str]], enabled: bool, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.name = name
        self.url = url
        self.events = events
        self.filters = filters
        self.enabled = enabled

    def rotate_secret(
        self, *, secret_ciphertext: bytes, secret_key_id: str, previous_secret_ciphertext: bytes | None,
        previous_secret_key_id: str | None, previous_secret_expires_at: datetime | None, at: datetime, actor: str,
        request_id: str | None,
    ) -> list[str]:
        """Sign with the new secret from now on; the previous one (sealed again in the ``previous`` slot) stays
        valid for receivers until ``previous_secret_expires_at``. Returns the data keys no longer used."""
        if (previous_secret_ciphertext is None) != (previous_secret_expires_at is None):
            raise ValueError("a previous secret goes with its expiry")
        if previous_secret_expires_at is not None and previous_secret_expires_at <= at:
            raise _invalid("previous_secret_ttl", "must end in the future")
        replaced = [k for k in (self.secret_key_id, self.previous_secret_key_id) if k is not None]
        self._secret_rotated(
            secret_ciphertext=secret_ciphertext, secret_key_id=secret_key_id,
            previous_secret_ciphertext=previous_secret_ciphertext, previous_secret_key_id=previous_secret_key_id,
            previous_secret_expires_at=previous_secret_expires_at, at=at, actor=actor, request_id=request_id,
        )
        return replaced

    class SecretRotated(Aggregate.Event):
        secret_ciphertext: bytes
        secret_key_id: str
        previous_secret_ciphertext: bytes | None
        previous_secret_key_id: str | None
        previous_secret_expires_at: datetime | None
        at: datetime
        actor: str
        request_id: str | None

    @event(SecretRotated)
    def _secret_rotated(
        self, secret_ciphertext: bytes, secret_key_id: str, previous_secret_ciphertext: bytes | None,
        previous_secret_key_id: str | None, previous_secret_expires_at: datetime | None, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.secret_ciphertext = secret_ciphertext
        self.secret_key_id = secret_key_id
        self.previous_secret_key_id = previous_secret_key_id
        self.previous_secret_expires_at = previous_secret_expires_at

    def forget_expired_previous_secret(self, *, at: datetime, actor: str) -> str | None:
        """Once the overlap of a rotation has ended, the previous signing secret is of no use to anyone (the server
        signs with the current one only and verifies nothing with it): forget it. Returns its data key (the command
        destroys it); None, changing nothing, while there is no previous secret or its overlap still runs."""
        expires_at = self.previous_secret_expires_at
        key = self.previous_secret_key_id
        if key is None or expires_at is None or expires_at > at:
            return None
        self._previous_secret_expired(data_key_id=key, expired_at=expires_at, at=at, actor=actor, request_id=None)
        return key

    class PreviousSecretExpired(Aggregate.Event):
        data_key_id: str
        expired_at: datetime
        at: datetime
        actor: str
        request_id: str | None

    @event(PreviousSecretExpired)
    def _previous_secret_expired(
        self, data_key_id: str, expired_at: datetime, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.previous_secret_key_id = None
        self.previous_secret_expires_at = None

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> list[str]:
        """Delete; returns the data keys of its secrets (the command destroys them)."""
        keys = [k for k in (self.secret_key_id, self.previous_secret_key_id) if k is not None]
        self._deleted(at=at, actor=actor, request_id=request_id)
        return keys

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True
