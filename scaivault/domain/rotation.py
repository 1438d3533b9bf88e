"""Rotation policies (spec core-concepts/rotation, reference/rotation) and the schedule arithmetic that rotation and
expiry share. Pure: no I/O, no clock (time comes in as ``at``).

A rotation policy is a schedule plus behaviour (interval, grace period, warn-before thresholds, auto-generate). It is
attached to secrets by the *Secret* stream's own events (``rotation_policy_id``), so each secret runs its own cycle,
counted from its own last rotation (or, before its first, from when the policy was attached). What a scheduler step
must do is decided by the Secret aggregate (``scaivault/domain/secrets.py``) from its own state with the functions
below; the schedule read model computes the next moment a step may be needed with the very same functions.

Thresholds (``warn_before`` of a policy, ``notify_before`` of a secret) fire at most once each per cycle. When the
scheduler was down across several thresholds, only the nearest reached one is sent, on behalf of the others
(``covers``); once the due moment itself has passed, no warning is sent at all: the due event speaks for them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import InvalidDuration, InvalidRequest
from scaivault.domain.labels import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, clean_name, is_description

DEFAULT_GRACE_PERIOD = "48h"
DEFAULT_NOTIFY_BEFORE = ("30d", "7d", "1d")
SCHEDULER_IDENTITY = "system:rotation-scheduler"
MAX_THRESHOLDS = 10
MAX_WEBHOOKS = 20
_ID_BODY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SECRET_POLICY_ID = re.compile(r"^sp_[A-Za-z0-9_-]{1,64}$")
_WEBHOOK_ID = re.compile(r"^wh_[A-Za-z0-9_-]{1,64}$")
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/rotation-policy")

Threshold = tuple[str, timedelta]


def rotation_policy_stream_id(owner: str, policy_id: str) -> UUID:
    """Ids are unique per tenant, so the stream is named by both."""
    return uuid5(_NAMESPACE, f"{owner}\x00{policy_id}")


def id_from_name(name: str) -> str | None:
    """The spec's example id is ``rot_`` + the name (``rot_quarterly``): a name that makes a valid id gives it."""
    return "rot_" + name if _ID_BODY.match(name) else None


# ---- thresholds and the schedule ---------------------------------------------------------------------------------


def parse_thresholds(raw: object, field: str, *, below: timedelta | None = None) -> list[Threshold]:
    """``"7d,1d"`` or ``["7d", "1d"]`` -> ``[("7d", 7 days), ("1d", 1 day)]``, longest first, without duplicates;
    each must be shorter than ``below`` (a warning at or before the cycle start would never make sense)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        items: list[object] = [part.strip() for part in raw.split(",") if part.strip()]
    elif isinstance(raw, list):
        items = list(raw)
    else:
        raise InvalidRequest(f"{field} is a comma-separated string of durations or a list of them", field=field)
    if len(items) > MAX_THRESHOLDS:
        raise InvalidRequest(f"{field} holds at most {MAX_THRESHOLDS} durations", field=field)
    found: dict[timedelta, str] = {}
    for item in items:
        try:
            duration = parse_duration(item)
        except InvalidDuration:
            raise InvalidDuration(str(item), field=field) from None
        if below is not None and duration >= below:
            raise InvalidRequest(f"each {field} duration must be shorter than the interval", field=field,
                                 value=str(item)[:64])
        found.setdefault(duration, str(item).strip())
    return sorted(((label, duration) for duration, label in found.items()), key=lambda t: t[1], reverse=True)


def notify_thresholds(metadata: dict[str, Any]) -> list[Threshold]:
    """A secret's expiry thresholds: ``metadata.notify_before`` when it is a valid list (or comma string) of
    durations, else the spec's default 30d, 7d, 1d."""
    try:
        thresholds = parse_thresholds(metadata.get("notify_before"), "metadata.notify_before")
    except (InvalidDuration, InvalidRequest):
        thresholds = []
    return thresholds or parse_thresholds(list(DEFAULT_NOTIFY_BEFORE), "notify_before")


def reached_thresholds(thresholds: Sequence[Threshold], moment: datetime, at: datetime,
                       warned: Sequence[str]) -> list[str]:
    """Labels of the thresholds before ``moment`` that ``at`` has reached and that were not warned yet, longest
    first (the last is the one to send; the others are covered by it)."""
    return [label for label, before in thresholds if label not in warned and moment - before <= at]


def next_threshold_at(thresholds: Sequence[Threshold], moment: datetime, warned: Sequence[str]) -> datetime:
    """When the next step is needed: the earliest unwarned threshold, else ``moment`` itself."""
    pending = [moment - before for label, before in thresholds if label not in warned]
    return min([*pending, moment])


def days_remaining(until: datetime, at: datetime) -> int:
    """Whole days left, rounding up, so a warning sent a little late for the 7d threshold still says 7."""
    seconds = (until - at).total_seconds()
    return max(0, -int(-seconds // 86400))


@dataclass(frozen=True)
class RotationTerms:
    """What a secret's rotation needs to know of its policy."""

    policy_id: str
    name: str
    interval: timedelta
    grace_period: timedelta
    warn_before: tuple[Threshold, ...]
    auto_generate: bool
    secret_policy_id: str | None
    is_active: bool

    def due_at(self, cycle_start: datetime) -> datetime:
        return cycle_start + self.interval


def next_rotation_step_at(
    terms: RotationTerms | None, *, cycle_start: datetime | None, warned: Sequence[str],
    pending_due_at: datetime | None, overdue: bool,
) -> datetime | None:
    """When a scheduler step may next be needed for a secret's rotation (None: nothing is scheduled). A rotation
    waiting for the owner's value (``pending_due_at``: when it was asked for) next needs a step when it turns
    overdue."""
    if terms is None or not terms.is_active or cycle_start is None or overdue:
        return None
    if pending_due_at is not None:
        return pending_due_at + terms.grace_period
    return next_threshold_at(terms.warn_before, terms.due_at(cycle_start), warned)


def next_expiry_step_at(
    expires_at: datetime | None, thresholds: Sequence[Threshold], *, warned: Sequence[str], expired_notified: bool
) -> datetime | None:
    if expires_at is None or expired_notified:
        return None
    return next_threshold_at(thresholds, expires_at, warned)


def history_id(stream_id: UUID, version: int, at: datetime) -> str:
    """A rotation history entry's id: time-ordered, and derived from the event that began the entry, so a rebuild
    of the read model gives each entry the id it had."""
    return f"rh_{at:%Y%m%d%H%M%S%f}{uuid5(stream_id, str(version)).hex[:10]}"


HISTORY_FIELDS = (
    "id", "rotation_policy_id", "secret_path", "status", "old_version", "new_version", "auto_generated", "error",
    "due_at", "grace_period_ends", "started_at", "completed_at", "triggered_by",
)


# ---- the RotationPolicy aggregate --------------------------------------------------------------------------------


def _check_name(name: object) -> str:
    cleaned = clean_name(name)
    if cleaned is None:
        raise InvalidRequest(f"A rotation policy name is 1-{MAX_NAME_LENGTH} printable characters", field="name")
    return cleaned


def _check_description(description: object) -> str | None:
    if not is_description(description):
        raise InvalidRequest(f"A description is at most {MAX_DESCRIPTION_LENGTH} characters", field="description")
    return description


def _check_duration(value: object, field: str) -> str:
    """The duration as the client wrote it (``48h`` stays ``48h``), once it parses."""
    try:
        parse_duration(value)
        return str(value).strip()
    except InvalidDuration:
        raise InvalidDuration(str(value), field=field) from None


def _check_secret_policy_id(value: object) -> str | None:
    if value is not None and (not isinstance(value, str) or not _SECRET_POLICY_ID.match(value)):
        raise InvalidRequest("secret_policy_id is a secret policy id (sp_...)", field="secret_policy_id")
    return value


def _check_webhook_ids(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or len(value) > MAX_WEBHOOKS or not all(
        isinstance(item, str) and _WEBHOOK_ID.match(item) for item in value
    ):
        raise InvalidRequest(f"webhook_ids is a list of at most {MAX_WEBHOOKS} webhook ids (wh_...)",
                             field="webhook_ids")
    return list(dict.fromkeys(value))


# What a new policy has where its creator said nothing (spec reference/rotation).
POLICY_DEFAULTS: dict[str, Any] = {
    "name": None, "interval": None, "description": None, "grace_period": DEFAULT_GRACE_PERIOD, "warn_before": None,
    "auto_generate": False, "secret_policy_id": None, "webhook_ids": None, "is_active": True,
}


@dataclass(frozen=True)
class PolicySettings:
    """A rotation policy's settings, validated (durations kept as written; thresholds longest first)."""

    name: str
    description: str | None
    interval: str
    grace_period: str
    warn_before: list[str]
    auto_generate: bool
    secret_policy_id: str | None
    webhook_ids: list[str]
    is_active: bool

    @classmethod
    def check(
        cls, *, name: object, description: object, interval: object, grace_period: object, warn_before: object,
        auto_generate: object, secret_policy_id: object, webhook_ids: object, is_active: object,
    ) -> PolicySettings:
        checked_interval = _check_duration(interval, "interval")
        if not isinstance(auto_generate, bool):
            raise InvalidRequest("auto_generate is true or false", field="auto_generate")
        if not isinstance(is_active, bool):
            raise InvalidRequest("is_active is true or false", field="is_active")
        thresholds = parse_thresholds(warn_before, "warn_before", below=parse_duration(checked_interval))
        return cls(
            name=_check_name(name), description=_check_description(description), interval=checked_interval,
            grace_period=_check_duration(grace_period, "grace_period"),
            warn_before=[label for label, _ in thresholds], auto_generate=auto_generate,
            secret_policy_id=_check_secret_policy_id(secret_policy_id), webhook_ids=_check_webhook_ids(webhook_ids),
            is_active=is_active,
        )

    def fields(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "interval": self.interval,
            "grace_period": self.grace_period, "warn_before": self.warn_before, "auto_generate": self.auto_generate,
            "secret_policy_id": self.secret_policy_id, "webhook_ids": self.webhook_ids, "is_active": self.is_active,
        }


def terms_of(policy_id: str, fields: dict[str, Any]) -> RotationTerms:
    """The terms of a policy from its stored fields (the aggregate's, or the read model's row)."""
    return RotationTerms(
        policy_id=policy_id, name=fields["name"], interval=parse_duration(fields["interval"]),
        grace_period=parse_duration(fields["grace_period"]),
        warn_before=tuple(parse_thresholds(list(fields["warn_before"]), "warn_before")),
        auto_generate=fields["auto_generate"], secret_policy_id=fields["secret_policy_id"],
        is_active=fields["is_active"],
    )


class RotationPolicy(Aggregate):
    @staticmethod
    def create_id(owner: str, policy_id: str) -> UUID:
        return rotation_policy_stream_id(owner, policy_id)

    class Created(Aggregate.Created):
        policy_id: str
        owner: str
        tenant_id: str
        partner_id: str
        name: str
        description: str | None
        interval: str
        grace_period: str
        warn_before: list[str]
        auto_generate: bool
        secret_policy_id: str | None
        webhook_ids: list[str]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, policy_id: str, owner: str, tenant_id: str, partner_id: str, name: str, description: str | None,
        interval: str, grace_period: str, warn_before: list[str], auto_generate: bool, secret_policy_id: str | None,
        webhook_ids: list[str], is_active: bool, at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.policy_id = policy_id
        self.owner = owner
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self._set_settings(name=name, description=description, interval=interval, grace_period=grace_period,
                           warn_before=warn_before, auto_generate=auto_generate, secret_policy_id=secret_policy_id,
                           webhook_ids=webhook_ids, is_active=is_active)
        self.created_at = at
        self.updated_at = at
        self.deleted = False

    @classmethod
    def create(
        cls, *, policy_id: str, owner: str, tenant_id: str, partner_id: str, settings: PolicySettings, at: datetime,
        actor: str, request_id: str | None,
    ) -> RotationPolicy:
        return cls(policy_id=policy_id, owner=owner, tenant_id=tenant_id, partner_id=partner_id,
                   **settings.fields(), at=at, actor=actor, request_id=request_id)

    def _set_settings(
        self, *, name: str, description: str | None, interval: str, grace_period: str, warn_before: list[str],
        auto_generate: bool, secret_policy_id: str | None, webhook_ids: list[str], is_active: bool,
    ) -> None:
        self.name = name
        self.description = description
        self.interval = interval
        self.grace_period = grace_period
        self.warn_before = warn_before
        self.auto_generate = auto_generate
        self.secret_policy_id = secret_policy_id
        self.webhook_ids = webhook_ids
        self.is_active = is_active

    def settings(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in (
            "name", "description", "interval", "grace_period", "warn_before", "auto_generate", "secret_policy_id",
            "webhook_ids", "is_active",
        )}

    def terms(self) -> RotationTerms:
        return terms_of(self.policy_id, self.settings())

    def update(self, settings: PolicySettings, *, at: datetime, actor: str, request_id: str | None) -> None:
        if settings.fields() != self.settings():
            self._updated(**settings.fields(), at=at, actor=actor, request_id=request_id)

    class Updated(Aggregate.Event):
        name: str
        description: str | None
        interval: str
        grace_period: str
        warn_before: list[str]
        auto_generate: bool
        secret_policy_id: str | None
        webhook_ids: list[str]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, name: str, description: str | None, interval: str, grace_period: str, warn_before: list[str],
        auto_generate: bool, secret_policy_id: str | None, webhook_ids: list[str], is_active: bool, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self._set_settings(name=name, description=description, interval=interval, grace_period=grace_period,
                           warn_before=warn_before, auto_generate=auto_generate, secret_policy_id=secret_policy_id,
                           webhook_ids=webhook_ids, is_active=is_active)
        self.updated_at = at

    def delete(self, *, at: datetime, actor: str, request_id: str | None) -> None:
        self._deleted(at=at, actor=actor, request_id=request_id)

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True
        self.updated_at = at
