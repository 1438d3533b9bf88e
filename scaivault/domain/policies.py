"""Access policies (spec core-concepts/policies-and-permissions, reference/policies): the model, its validation,
the Policy aggregate, and the evaluation engine. Pure: no I/O, and no clock (every time comes in as an argument).

Evaluation, as the spec states it:
- every *active* policy bound to the caller is evaluated: bound directly (a ``user`` or ``service_account`` binding
  naming the caller's identity) or through one of the caller's groups (a ``group`` binding); a binding stops counting
  at its ``expires_at``;
- the request is allowed if any rule of those policies matches: its ``path_pattern`` matches the (canonical) path,
  its ``permissions`` hold the requested permission or ``admin``, and **all** its conditions hold;
- otherwise it is denied: ``access_denied`` when no rule matched path and permission, else the code of the failed
  condition (``ip_not_allowed``, ``time_window_violation``, ``mfa_required``) of the first rule that matched.

"First" is a fixed order: policies by id, rules by position, conditions in the order ip_ranges, time_windows,
require_mfa. The decision names the policy and rule that allowed (or whose condition failed).

Paths reach the engine in their one canonical form (``scaivault.domain.paths.parse_path``: a valid path admits no
variant spelling); patterns are checked once, when a policy is written (``scaivault.domain.globs``). Identity ids are
compared in lower case on both sides, so ``user:Alice@x`` can never dodge (or borrow) a binding of ``user:alice@x``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from functools import lru_cache
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import Aggregate, event

from scaivault.domain.durations import parse_duration
from scaivault.domain.errors import (
    AccessDenied,
    BindingExists,
    BindingNotFound,
    InvalidDuration,
    InvalidPolicy,
    IpNotAllowed,
    MfaRequired,
    PolicyInUse,
    ScaiVaultError,
    TimeWindowViolation,
)
from scaivault.domain.globs import InvalidGlob, glob_matches, glob_prefix, parse_glob
from scaivault.domain.labels import MAX_DESCRIPTION_LENGTH, MAX_NAME_LENGTH, clean_name, is_description
from scaivault.domain.paths import parse_path

PERMISSIONS = ("read", "write", "delete", "list", "rotate", "admin")
ADMIN = "admin"
SCOPES = ("tenant", "partner")
IDENTITY_TYPES = ("user", "service_account", "group")
# Which identity id prefixes each binding type accepts (spec: `user:<email>`, `sa:<name>`, `group:<name>`; the
# dynamic-secrets guide binds engines as `dynamic:<engine>`, the tutorials name `system:` identities).
IDENTITY_PREFIXES = {"user": ("user:",), "service_account": ("sa:", "dynamic:", "system:"), "group": ("group:",)}
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

MAX_RULES = 100
MAX_IP_RANGES = 100
MAX_TIME_WINDOWS = 20
MAX_BINDINGS = 1000
MAX_IDENTITY_LENGTH = 320
# How recent an MFA a `require_mfa` rule accepts unless it names its own `mfa_max_age`.
DEFAULT_MFA_MAX_AGE = timedelta(hours=12)

_IDENTITY_ID = re.compile(r"[a-z_]+:[^\s\x00-\x1f\x7f]{1,300}")
_CLOCK = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])|24:00")
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/policy")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def policy_stream_id(policy_id: str) -> UUID:
    return uuid5(_NAMESPACE, policy_id)


def canonical_identity(identity_id: str) -> str:
    return identity_id.strip().lower()


# ---- validation: raw documents in, canonical documents out ----------------------------------------------------------


def _invalid(message: str, field: str) -> InvalidPolicy:
    return InvalidPolicy(message, field=field)


def check_name(name: object, field: str = "name") -> str:
    cleaned = clean_name(name)
    if cleaned is None:
        raise _invalid(f"A policy name is 1-{MAX_NAME_LENGTH} printable characters", field)
    return cleaned


def check_description(description: object, field: str = "description") -> str | None:
    if not is_description(description):
        raise _invalid(f"A description is at most {MAX_DESCRIPTION_LENGTH} characters", field)
    return description


def check_pattern(pattern: object, field: str) -> str:
    if not isinstance(pattern, str):
        raise InvalidGlob("path_pattern must be a string", field=field)
    try:
        parse_glob(pattern)
    except InvalidGlob:
        raise InvalidGlob(
            "A path pattern is segments of a-z, 0-9, '-', '_' and the wildcards '*', '?' and '**' (a whole segment),"
            " separated by '/', with no leading or trailing '/' (secret paths contain nothing else, so a pattern"
            " with other characters could never match)",
            field=field,
            pattern=pattern[:512],
        ) from None
    return pattern


def _check_permissions(permissions: object, field: str) -> list[str]:
    if not isinstance(permissions, list) or not permissions:
        raise _invalid(f"permissions is a non-empty list of {', '.join(PERMISSIONS)}", field)
    unknown = [p for p in permissions if p not in PERMISSIONS]
    if unknown:
        raise _invalid(f"Unknown permission {str(unknown[0])[:32]!r}; expected {', '.join(PERMISSIONS)}", field)
    return [p for p in PERMISSIONS if p in permissions]  # one canonical order, duplicates gone


def _check_ip_ranges(ranges: object, field: str) -> list[str]:
    if not isinstance(ranges, list) or not ranges or len(ranges) > MAX_IP_RANGES:
        raise _invalid(f"ip_ranges is a list of 1-{MAX_IP_RANGES} CIDR ranges", field)
    canonical = []
    for index, item in enumerate(ranges):
        try:
            canonical.append(str(ipaddress.ip_network(item, strict=False)))
        except (TypeError, ValueError):
            raise _invalid("Not an IP range in CIDR form (e.g. 10.0.0.0/8)", f"{field}[{index}]") from None
    return canonical


def _check_clock(value: object, field: str) -> str:
    if not isinstance(value, str) or not _CLOCK.fullmatch(value):
        raise _invalid("A time of day is HH:MM, 00:00 to 24:00", field)
    return value


def _check_time_window(window: object, field: str) -> dict[str, Any]:
    if not isinstance(window, Mapping):
        raise _invalid("A time window is an object with start, end, and optional days and timezone", field)
    unknown = sorted(set(window) - {"days", "start", "end", "timezone"})
    if unknown:
        raise _invalid(f"Unknown time window field {str(unknown[0])[:32]!r}", f"{field}.{str(unknown[0])[:32]}")
    start = _check_clock(window.get("start"), f"{field}.start")
    end = _check_clock(window.get("end"), f"{field}.end")
    if start == "24:00" or start == end:
        raise _invalid("start must be before 24:00 and differ from end (an end before start wraps midnight)", field)
    days = window.get("days", list(DAYS))
    if not isinstance(days, list) or not days or any(day not in DAYS for day in days):
        raise _invalid(f"days is a non-empty list of {', '.join(DAYS)}", f"{field}.days")
    zone = window.get("timezone", "UTC")
    try:
        if not isinstance(zone, str) or not zone:
            raise ValueError
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        raise _invalid("timezone must be an IANA time zone name, e.g. Europe/Amsterdam", f"{field}.timezone") from None
    return {"days": [day for day in DAYS if day in days], "start": start, "end": end, "timezone": zone}


def _check_conditions(conditions: object, field: str) -> dict[str, Any]:
    if conditions is None:
        return {}
    if not isinstance(conditions, Mapping):
        raise _invalid("conditions is an object", field)
    known = {"ip_ranges", "require_mfa", "mfa_max_age", "time_windows"}
    unknown = sorted(set(conditions) - known)
    if unknown:
        raise _invalid(
            f"Unknown condition {str(unknown[0])[:32]!r}; expected {', '.join(sorted(known))}",
            f"{field}.{str(unknown[0])[:32]}",
        )
    canonical: dict[str, Any] = {}
    if conditions.get("ip_ranges") is not None:
        canonical["ip_ranges"] = _check_ip_ranges(conditions["ip_ranges"], f"{field}.ip_ranges")
    require_mfa = conditions.get("require_mfa", False)
    if not isinstance(require_mfa, bool):
        raise _invalid("require_mfa is true or false", f"{field}.require_mfa")
    if require_mfa:
        canonical["require_mfa"] = True
    if conditions.get("mfa_max_age") is not None:
        if not require_mfa:
            raise _invalid("mfa_max_age applies only with require_mfa: true", f"{field}.mfa_max_age")
        try:
            parse_duration(conditions["mfa_max_age"])
        except InvalidDuration:
            raise _invalid("mfa_max_age is a duration such as 15m or 8h", f"{field}.mfa_max_age") from None
        canonical["mfa_max_age"] = conditions["mfa_max_age"].strip()
    if conditions.get("time_windows") is not None:
        windows = conditions["time_windows"]
        if not isinstance(windows, list) or not windows or len(windows) > MAX_TIME_WINDOWS:
            raise _invalid(f"time_windows is a list of 1-{MAX_TIME_WINDOWS} windows", f"{field}.time_windows")
        canonical["time_windows"] = [
            _check_time_window(window, f"{field}.time_windows[{index}]") for index, window in enumerate(windows)
        ]
    return canonical


def check_rules(rules: object, field: str = "rules") -> list[dict[str, Any]]:
    """Validate rules and return them in canonical form (the form events store and the API returns)."""
    if not isinstance(rules, list) or not rules or len(rules) > MAX_RULES:
        raise _invalid(f"rules is a list of 1-{MAX_RULES} rules", field)
    canonical = []
    for index, rule in enumerate(rules):
        where = f"{field}[{index}]"
        if not isinstance(rule, Mapping):
            raise _invalid("A rule is an object with path_pattern, permissions and optional conditions", where)
        unknown = sorted(set(rule) - {"path_pattern", "permissions", "conditions"})
        if unknown:
            raise _invalid(f"Unknown rule field {str(unknown[0])[:32]!r}", f"{where}.{str(unknown[0])[:32]}")
        document: dict[str, Any] = {
            "path_pattern": check_pattern(rule.get("path_pattern"), f"{where}.path_pattern"),
            "permissions": _check_permissions(rule.get("permissions"), f"{where}.permissions"),
        }
        conditions = _check_conditions(rule.get("conditions"), f"{where}.conditions")
        if conditions:
            document["conditions"] = conditions
        canonical.append(document)
    return canonical


def check_identity(identity_type: object, identity_id: object) -> tuple[str, str]:
    if identity_type not in IDENTITY_TYPES:
        raise _invalid(f"identity_type is one of {', '.join(IDENTITY_TYPES)}", "identity_type")
    if not isinstance(identity_id, str) or len(identity_id) > MAX_IDENTITY_LENGTH:
        raise _invalid("identity_id is a ScaiKey identity id such as sa:reporting-service", "identity_id")
    canonical = canonical_identity(identity_id)
    if not _IDENTITY_ID.fullmatch(canonical):
        raise _invalid("identity_id is a ScaiKey identity id such as sa:reporting-service", "identity_id")
    prefixes = IDENTITY_PREFIXES[identity_type]
    if not canonical.startswith(prefixes):
        raise _invalid(
            f"A {identity_type} identity id starts with {' or '.join(prefixes)}", "identity_id"
        )
    return identity_type, canonical


# ---- the compiled model the engine evaluates ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeWindow:
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time | None  # None: the end of the day (24:00)
    zone: ZoneInfo

    def contains(self, at: datetime) -> bool:
        """[start, end) in local time on one of ``days``; a window whose end is before its start runs past midnight
        into the next day (the day named is the day it starts)."""
        local = at.astimezone(self.zone)
        now, today = local.time().replace(tzinfo=None), local.weekday()
        if self.end is None or self.start < self.end:
            return today in self.days and self.start <= now and (self.end is None or now < self.end)
        return (today in self.days and now >= self.start) or ((today - 1) % 7 in self.days and now < self.end)


@dataclass(frozen=True, slots=True)
class Conditions:
    ip_ranges: tuple[IPNetwork, ...] | None = None
    require_mfa: bool = False
    mfa_max_age: timedelta = DEFAULT_MFA_MAX_AGE
    time_windows: tuple[TimeWindow, ...] | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    path_pattern: str
    permissions: frozenset[str]
    conditions: Conditions
    literal_prefix: str  # every path the pattern matches starts with it

    def grants(self, permission: str) -> bool:
        return permission in self.permissions or ADMIN in self.permissions

    def matches(self, path: str) -> bool:
        return path.startswith(self.literal_prefix) and glob_matches(self.path_pattern, path)


@dataclass(frozen=True, slots=True)
class Binding:
    binding_id: str
    identity_type: str
    identity_id: str  # canonical
    expires_at: datetime | None

    def in_force(self, at: datetime) -> bool:
        return self.expires_at is None or at < self.expires_at

    def names(self, subject: Subject) -> bool:
        if self.identity_type == "group":
            return self.identity_id in subject.groups
        return self.identity_id == subject.identity_id


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    policy_id: str
    name: str
    is_active: bool
    rules: tuple[Rule, ...]
    bindings: tuple[Binding, ...] = ()


@dataclass(frozen=True, slots=True)
class Subject:
    """Who is asking: an identity and its groups, both canonical."""

    identity_id: str
    groups: frozenset[str]

    @classmethod
    def of(cls, identity_id: str, groups: Iterable[str] = ()) -> Subject:
        return cls(canonical_identity(identity_id), frozenset(canonical_identity(g) for g in groups))


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What conditions look at: when, from where, and how recently the caller did MFA."""

    at: datetime
    source_ip: IPAddress | None
    mfa_verified_at: datetime | None


@lru_cache(maxsize=4096)
def parse_ip(raw: str | None) -> IPAddress | None:
    """An address as conditions compare it (an IPv4-mapped IPv6 address is its IPv4 address); None if unusable."""
    if not raw:
        return None
    try:
        address = ipaddress.ip_address(raw.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _clock(text: str) -> time | None:
    return None if text == "24:00" else time.fromisoformat(text)


def compile_conditions(document: Mapping[str, Any]) -> Conditions:
    windows = document.get("time_windows")
    return Conditions(
        ip_ranges=(
            tuple(ipaddress.ip_network(r, strict=False) for r in document["ip_ranges"])
            if document.get("ip_ranges") is not None
            else None
        ),
        require_mfa=bool(document.get("require_mfa", False)),
        mfa_max_age=parse_duration(document["mfa_max_age"]) if document.get("mfa_max_age") else DEFAULT_MFA_MAX_AGE,
        time_windows=(
            tuple(
                TimeWindow(
                    days=frozenset(DAYS.index(day) for day in w.get("days", DAYS)),
                    start=time.fromisoformat(w["start"]),
                    end=_clock(w["end"]),
                    zone=ZoneInfo(w.get("timezone", "UTC")),
                )
                for w in windows
            )
            if windows is not None
            else None
        ),
    )


def compile_rules(documents: Sequence[Mapping[str, Any]]) -> tuple[Rule, ...]:
    return tuple(
        Rule(
            path_pattern=d["path_pattern"],
            permissions=frozenset(d["permissions"]),
            conditions=compile_conditions(d.get("conditions") or {}),
            literal_prefix=glob_prefix(d["path_pattern"]),
        )
        for d in documents
    )


# ---- evaluation -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """A rule that matches a path and grants a permission; whether it applies depends on its conditions."""

    policy_id: str
    policy_name: str
    rule_index: int
    rule: Rule


CONDITION_ERRORS: dict[str, type[ScaiVaultError]] = {
    "ip_ranges": IpNotAllowed,
    "time_windows": TimeWindowViolation,
    "require_mfa": MfaRequired,
}


def failed_condition(conditions: Conditions, context: RequestContext) -> str | None:
    """The first condition (ip_ranges, time_windows, require_mfa) that does not hold, or None when all hold."""
    if conditions.ip_ranges is not None:
        ip = context.source_ip
        if ip is None or not any(ip.version == net.version and ip in net for net in conditions.ip_ranges):
            return "ip_ranges"
    if conditions.time_windows is not None and not any(w.contains(context.at) for w in conditions.time_windows):
        return "time_windows"
    if conditions.require_mfa:
        verified = context.mfa_verified_at
        # An MFA time slightly ahead of our clock (the issuer's clock runs fast) counts as just now.
        if verified is None or context.at - verified > conditions.mfa_max_age:
            return "require_mfa"
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    path: str
    permission: str
    code: str | None = None  # None when allowed
    policy_id: str | None = None  # the policy whose rule allowed, or whose rule's condition failed
    policy_name: str | None = None
    rule_index: int | None = None
    failed_condition: str | None = None
    decided_by: str | None = None  # "policy", or "role:<name>" when a role allowed without a policy

    @property
    def reason(self) -> str:
        if self.allowed:
            if self.decided_by and self.decided_by.startswith("role:"):
                return f"The {self.decided_by[5:]} role holds every permission in its scope"
            return f"Rule {self.rule_index} of policy {self.policy_id} permits {self.permission} on this path"
        if self.failed_condition is None:
            return f"No policy permits {self.permission} on this path"
        return (
            f"Rule {self.rule_index} of policy {self.policy_id} permits {self.permission} on this path, but its "
            f"{self.failed_condition} condition does not hold"
        )

    def error(self) -> ScaiVaultError:
        details = {"path": self.path, "permission": self.permission}
        if self.failed_condition is None:
            return AccessDenied(self.reason, **details)
        return CONDITION_ERRORS[self.failed_condition](
            self.reason, **details, policy_id=self.policy_id, condition=self.failed_condition
        )

    def document(self) -> dict[str, Any]:
        """The dry-run answer (POST /v1/policies/test)."""
        return {
            "allowed": self.allowed,
            "path": self.path,
            "permission": self.permission,
            "decided_by": self.decided_by,
            "policy_id": self.policy_id,
            "policy_name": self.policy_name,
            "rule_index": self.rule_index,
            "code": self.code,
            "failed_condition": self.failed_condition,
            "reason": self.reason,
        }


def bound_policies(policies: Iterable[CompiledPolicy], subject: Subject, at: datetime) -> list[CompiledPolicy]:
    """Active policies with a binding in force at ``at`` naming the subject or one of its groups, by policy id."""
    return sorted(
        (p for p in policies if p.is_active and any(b.in_force(at) and b.names(subject) for b in p.bindings)),
        key=lambda p: p.policy_id,
    )


def candidates(policies: Sequence[CompiledPolicy], path: str, permission: str) -> tuple[Candidate, ...]:
    """Rules of ``policies`` (in the given order) that grant ``permission`` and match ``path``."""
    return tuple(
        Candidate(policy.policy_id, policy.name, index, rule)
        for policy in policies
        for index, rule in enumerate(policy.rules)
        if rule.grants(permission) and rule.matches(path)
    )


def decide(found: Sequence[Candidate], path: str, permission: str, context: RequestContext) -> Decision:
    first_failure: tuple[Candidate, str] | None = None
    for candidate in found:
        failed = failed_condition(candidate.rule.conditions, context)
        if failed is None:
            return Decision(
                True, path, permission, policy_id=candidate.policy_id, policy_name=candidate.policy_name,
                rule_index=candidate.rule_index, decided_by="policy",
            )
        if first_failure is None:
            first_failure = (candidate, failed)
    if first_failure is None:
        return Decision(False, path, permission, code=AccessDenied.code)
    candidate, failed = first_failure
    return Decision(
        False, path, permission, code=CONDITION_ERRORS[failed].code, policy_id=candidate.policy_id,
        policy_name=candidate.policy_name, rule_index=candidate.rule_index, failed_condition=failed,
    )


def check_permission(permission: str) -> str:
    if permission not in PERMISSIONS:
        raise _invalid(f"permission is one of {', '.join(PERMISSIONS)}", "permission")
    return permission


def evaluate(
    policies: Iterable[CompiledPolicy], subject: Subject, path: str, permission: str, context: RequestContext
) -> Decision:
    """The whole evaluation of one access (no roles: those are the caller's business, see docs/policies.md)."""
    path = parse_path(path)  # the engine works on the canonical form only
    check_permission(permission)
    bound = bound_policies(policies, subject, context.at)
    return decide(candidates(bound, path, permission), path, permission, context)


# ---- the aggregate: one stream per policy, bindings included --------------------------------------------------------


class Policy(Aggregate):
    """A policy and its bindings. Holding the bindings in the policy's own stream makes "delete only when unbound"
    (``policy_in_use``) a check on one consistent state."""

    @staticmethod
    def create_id(policy_id: str) -> UUID:
        return policy_stream_id(policy_id)

    @classmethod
    def create(
        cls, *, policy_id: str, scope: str, owner: str, tenant_id: str | None, partner_id: str, name: object,
        description: object, rules: object, is_active: bool, at: datetime, actor: str, request_id: str | None,
    ) -> Policy:
        if scope not in SCOPES:
            raise _invalid("scope is tenant or partner", "scope")
        return cls(
            policy_id=policy_id, scope=scope, owner=owner, tenant_id=tenant_id, partner_id=partner_id,
            name=check_name(name), description=check_description(description), rules=check_rules(rules),
            is_active=bool(is_active), at=at, actor=actor, request_id=request_id,
        )

    # Event classes are declared, not made by ``@event("Name")``, so that a type checker sees them; each keeps the
    # name, and so the stored topic (``scaivault.domain.policies:Policy.<Name>``), and the fields it was stored with.
    class Created(Aggregate.Created):
        policy_id: str
        scope: str
        owner: str
        tenant_id: str | None
        partner_id: str
        name: str
        description: str | None
        rules: list[dict[str, Any]]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, policy_id: str, scope: str, owner: str, tenant_id: str | None, partner_id: str, name: str,
        description: str | None, rules: list[dict[str, Any]], is_active: bool, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.policy_id = policy_id
        self.scope = scope
        self.owner = owner
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.description = description
        self.rules = rules
        self.is_active = is_active
        self.created_at = at
        self.created_by = actor
        self.updated_at = at
        self.updated_by = actor
        self.bindings: dict[str, dict[str, Any]] = {}
        self.deleted = False

    def active_bindings(self, at: datetime) -> list[dict[str, Any]]:
        return [b for b in self.bindings.values() if b["expires_at"] is None or at < b["expires_at"]]

    def update(
        self, *, name: object, description: object, rules: object, is_active: object, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        """Set every field to the given value (a PATCH passes the current value of what it leaves alone)."""
        if not isinstance(is_active, bool):
            raise _invalid("is_active is true or false", "is_active")
        self._updated(
            name=check_name(name), description=check_description(description), rules=check_rules(rules),
            is_active=is_active, at=at, actor=actor, request_id=request_id,
        )

    class Updated(Aggregate.Event):
        name: str
        description: str | None
        rules: list[dict[str, Any]]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, name: str, description: str | None, rules: list[dict[str, Any]], is_active: bool, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.name = name
        self.description = description
        self.rules = rules
        self.is_active = is_active
        self.updated_at = at
        self.updated_by = actor

    def bind(
        self, *, binding_id: str, identity_type: object, identity_id: object, expires_at: datetime | None,
        at: datetime, actor: str, request_id: str | None,
    ) -> dict[str, Any]:
        identity_type, identity_id = check_identity(identity_type, identity_id)
        if expires_at is not None and expires_at <= at:
            raise _invalid("expires_at must be in the future", "expires_at")
        active = self.active_bindings(at)
        for binding in active:
            if (binding["identity_type"], binding["identity_id"]) == (identity_type, identity_id):
                raise BindingExists(binding_id=binding["binding_id"], identity_id=identity_id)
        if len(self.bindings) >= MAX_BINDINGS:
            raise _invalid(f"A policy has at most {MAX_BINDINGS} bindings; bind a group instead", "bindings")
        self._binding_created(
            binding_id=binding_id, identity_type=identity_type, identity_id=identity_id, expires_at=expires_at,
            at=at, actor=actor, request_id=request_id,
        )
        return self.bindings[binding_id]

    class BindingCreated(Aggregate.Event):
        binding_id: str
        identity_type: str
        identity_id: str
        expires_at: datetime | None
        at: datetime
        actor: str
        request_id: str | None

    @event(BindingCreated)
    def _binding_created(
        self, binding_id: str, identity_type: str, identity_id: str, expires_at: datetime | None, at: datetime,
        actor: str, request_id: str | None,
    ) -> None:
        self.bindings[binding_id] = {
            "binding_id": binding_id, "identity_type": identity_type, "identity_id": identity_id,
            "expires_at": expires_at, "created_at": at, "created_by": actor,
        }

    def unbind(self, *, binding_id: str, at: datetime, actor: str, request_id: str | None) -> None:
        if binding_id not in self.bindings:
            raise BindingNotFound(binding_id=binding_id[:64])
        self._binding_deleted(binding_id=binding_id, at=at, actor=actor, request_id=request_id)

    class BindingDeleted(Aggregate.Event):
        binding_id: str
        at: datetime
        actor: str
        request_id: str | None

    @event(BindingDeleted)
    def _binding_deleted(self, binding_id: str, at: datetime, actor: str, request_id: str | None) -> None:
        del self.bindings[binding_id]

    def delete(self, *, force: bool, at: datetime, actor: str, request_id: str | None) -> list[str]:
        """Delete; with bindings in force only when ``force`` (each binding's removal is an event of its own).
        Returns the ids of the bindings removed."""
        in_force = self.active_bindings(at)
        if in_force and not force:
            raise PolicyInUse(policy_id=self.policy_id, binding_count=len(in_force))
        removed = list(self.bindings)
        for binding_id in removed:
            self._binding_deleted(binding_id=binding_id, at=at, actor=actor, request_id=request_id)
        self._deleted(at=at, actor=actor, request_id=request_id)
        return removed

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True


def compile_binding(document: Mapping[str, Any]) -> Binding:
    return Binding(document["binding_id"], document["identity_type"], document["identity_id"], document["expires_at"])


def compile_policy(
    policy_id: str, name: str, is_active: bool, rules: Sequence[Mapping[str, Any]],
    bindings: Iterable[Mapping[str, Any]] = (),
) -> CompiledPolicy:
    return CompiledPolicy(policy_id, name, is_active, compile_rules(rules), tuple(compile_binding(b) for b in bindings))


# ---- listing: which paths under a prefix may be listed ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListingPlan:
    """How to list under a prefix for one request: scan only ``ranges`` (disjoint path prefixes, in path order) and
    show a path only if one of ``rules`` (rules granting list whose conditions hold now) matches it."""

    ranges: tuple[str, ...]
    rules: tuple[Rule, ...]

    def visible(self, path: str) -> bool:
        return any(rule.matches(path) for rule in self.rules)


def _overlaps(literal_prefix: str, prefix: str) -> bool:
    return literal_prefix.startswith(prefix) or prefix.startswith(literal_prefix)


def plan_listing(policies: Sequence[CompiledPolicy], prefix: str, context: RequestContext) -> ListingPlan | Decision:
    """The plan for listing ``prefix`` with ``policies`` (the caller's bound policies). When no rule granting list
    could match anything under the prefix: ``access_denied``; when some could but none has its conditions holding
    now: the first failed condition's decision (so a caller lacking MFA hears ``mfa_required``, not silence)."""
    overlapping = [
        Candidate(policy.policy_id, policy.name, index, rule)
        for policy in policies
        for index, rule in enumerate(policy.rules)
        if rule.grants("list") and _overlaps(rule.literal_prefix, prefix)
    ]
    holding = [c for c in overlapping if failed_condition(c.rule.conditions, context) is None]
    if not holding:
        return decide(overlapping, prefix, "list", context)
    starts = sorted({max(c.rule.literal_prefix, prefix, key=len) for c in holding})
    ranges: list[str] = []
    for start in starts:  # sorted, so a range inside a kept one comes right after it
        if not ranges or not start.startswith(ranges[-1]):
            ranges.append(start)
    return ListingPlan(tuple(ranges), tuple(c.rule for c in holding))
