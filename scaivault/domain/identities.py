"""The identity mirror (spec reference/identity): partners, tenants, users and groups as ScaiKey reports them, or as
an operator manages them when there is no ScaiKey.

One stream per mirrored partner, tenant, user (per tenant) and group (per tenant, holding its memberships), and one
per sync run. Every change says where it came from: ``scaikey`` (a sync or a webhook delivery) or ``scaivault``
(the API or the CLI). A user's roles set in ScaiVault are ScaiVault's from then on: a sync no longer overwrites them
(``roles_set_locally``), so an administrator who takes a role away is not overruled by the next sync.

Also here, pure: the role-change and membership rules, the value rules for identities, and ``plan_tenant_sync``,
which turns "what the mirror holds" and "what ScaiKey reports" into the changes to make. The domain reads no clock
and does no I/O: time comes in as ``at``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import AccessDenied, IdentityNotFound, InvalidRole, ValidationFailed

SCAIKEY = "scaikey"
SCAIVAULT = "scaivault"
SOURCES = frozenset({SCAIKEY, SCAIVAULT})

# Admin roles that can be assigned (GET /v1/identity/roles), strongest first.
ROLES: dict[str, str] = {
    "super_admin": "Administers every partner and tenant; the only role that can grant or revoke super_admin",
    "partner_admin": "Administers every tenant of its partner, and can change the roles of their users",
    "tenant_admin": "Administers its own tenant",
}
ROLE_CHANGERS = frozenset({"super_admin", "partner_admin"})
DIRECT = "DIRECT"
ACTIVE = "ACTIVE"

_USER_ID = re.compile(r"usr_[A-Za-z0-9_-]{1,64}")
_GROUP_ID = re.compile(r"grp_[A-Za-z0-9_-]{1,64}")
_SYNC_ID = re.compile(r"syn_[0-9a-z]{26}")
_STATUS = re.compile(r"[A-Z][A-Z_]{0,31}")
_GROUP_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]{1,190}")
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_NAME = 256
MAX_DESCRIPTION = 1024
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/identity")


def _invalid(field_name: str, message: str) -> ValidationFailed:
    return ValidationFailed(fields=[{"field": field_name, "message": message}])


def is_user_id(raw: object) -> bool:
    return isinstance(raw, str) and _USER_ID.fullmatch(raw) is not None


def is_group_id(raw: object) -> bool:
    return isinstance(raw, str) and _GROUP_ID.fullmatch(raw) is not None


def is_sync_id(raw: object) -> bool:
    return isinstance(raw, str) and _SYNC_ID.fullmatch(raw) is not None


def parse_user_id(raw: object, field_name: str = "id") -> str:
    if not is_user_id(raw):
        raise _invalid(field_name, "a user id is 'usr_' followed by 1-64 of A-Z, a-z, 0-9, '_', '-'")
    return str(raw)


def parse_group_id(raw: object, field_name: str = "id") -> str:
    if not is_group_id(raw):
        raise _invalid(field_name, "a group id is 'grp_' followed by 1-64 of A-Z, a-z, 0-9, '_', '-'")
    return str(raw)


def parse_email(raw: object, field_name: str = "email") -> str:
    """Lower-cased: identities are compared in one canonical form (two spellings must never be two identities)."""
    if not isinstance(raw, str) or len(raw) > 254 or not _EMAIL.fullmatch(raw) or _CONTROL.search(raw):
        raise _invalid(field_name, "an e-mail address: local@domain, at most 254 characters, no spaces")
    return raw.lower()


def parse_group_name(raw: object, field_name: str = "name") -> str:
    """Lower-cased; a group is referred to as ``group:<name>`` (tokens' ``groups`` claim, policy bindings)."""
    name = raw.lower() if isinstance(raw, str) else raw
    if not isinstance(name, str) or not _GROUP_NAME.fullmatch(name):
        raise _invalid(field_name, "a group name is 1-128 of a-z, 0-9, '_', '.', '-' (starting with a letter or digit)")
    return name


def parse_status(raw: object, field_name: str = "status") -> str:
    status = raw.upper() if isinstance(raw, str) else raw
    if not isinstance(status, str) or not _STATUS.fullmatch(status):
        raise _invalid(field_name, "a status is an upper-case word such as ACTIVE or SUSPENDED")
    return status


def parse_text(raw: object, field_name: str, *, max_length: int = MAX_NAME, required: bool = True) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not raw.strip() or len(raw) > max_length or _CONTROL.search(raw):
        raise _invalid(field_name, f"1-{max_length} characters, no control characters")
    return raw


def parse_optional_code(raw: object, pattern: re.Pattern[str], field_name: str) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not pattern.fullmatch(raw.lower()):
        raise _invalid(field_name, "lower-case letters, digits and '-'")
    return raw.lower()


def parse_roles(raw: Iterable[object]) -> list[str]:
    """The assignable roles named, sorted and without repeats; any other name is ``invalid_role``."""
    roles = list(raw)
    unknown = [role for role in roles if not isinstance(role, str) or role not in ROLES]
    if unknown:
        raise InvalidRole(
            f"Unknown role; assignable roles are {', '.join(ROLES)}", role=str(unknown[0])[:64]
        )
    return sorted(set(roles))  # type: ignore[arg-type]


def identity_not_found(kind: str, reference: str) -> IdentityNotFound:
    """No such ``user`` or ``group`` in the tenant; another tenant's answers exactly the same."""
    return IdentityNotFound(f"No such {kind} in this tenant", identity_type=kind, identity_id=reference[:80])


def principal_ref(email: str) -> str:
    """The identity id a token carries for this user (``user:<email>``; spec reference/authentication)."""
    return "user:" + email.lower()


def group_ref(name: str) -> str:
    """How tokens and policy bindings name a group (``group:<name>``)."""
    return "group:" + name


def user_stream_id(tenant_id: str, user_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"user\x00{tenant_id}\x00{user_id}")


def group_stream_id(tenant_id: str, group_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"group\x00{tenant_id}\x00{group_id}")


def partner_stream_id(partner_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"partner\x00{partner_id}")


def tenant_stream_id(tenant_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"tenant\x00{tenant_id}")


def sync_stream_id(sync_id: str) -> UUID:
    return uuid5(_NAMESPACE, f"sync\x00{sync_id}")


# --- rules --------------------------------------------------------------------------------------------------------


def check_role_change(
    *, changer_roles: frozenset[str], changing_self: bool, current: Iterable[str], requested: Iterable[str]
) -> None:
    """The spec's rules (reference/identity, PUT .../roles): only a super_admin or a partner_admin changes roles;
    only a super_admin grants super_admin (or takes it away: demoting the strongest role is as sensitive as granting
    it); no one raises their own privileges (changing one's own roles may only remove some)."""
    current_roles, requested_roles = frozenset(current), frozenset(requested)
    if changer_roles.isdisjoint(ROLE_CHANGERS):
        raise AccessDenied("Only a super_admin or a partner_admin may change roles", reason="role_changer_required")
    if "super_admin" in current_roles ^ requested_roles and "super_admin" not in changer_roles:
        raise AccessDenied("Only a super_admin may grant or revoke super_admin", reason="super_admin_required")
    if changing_self and not requested_roles <= current_roles:
        raise AccessDenied("No one may raise their own privileges", reason="self_elevation")


def check_membership_change(*, adding: bool, changing_self: bool) -> None:
    """Groups carry policy bindings, so joining one is gaining rights: no one adds themselves (leaving is fine)."""
    if adding and changing_self:
        raise AccessDenied("No one may add themselves to a group", reason="self_elevation")


# --- aggregates ---------------------------------------------------------------------------------------------------


# What the aggregates below share lives in plain mixins (commands) and in factories of event methods, called in each
# aggregate's own body. Not in a shared Aggregate base class: eventsourcing names an event after the class that
# declares it (topic ``scaivault.domain.identities:<Class>.<Event>``), so events declared on a base class would get
# new topics and the events already stored would no longer decode. tests/unit/test_identity_events.py pins them.


def _changed_event() -> Any:
    """``Changed`` (MirroredPartner, MirroredTenant): ScaiKey's new profile."""

    @event("Changed")
    def _changed(self: Any, *, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.profile = profile

    return _changed


def _profile_changed_event() -> Any:
    """``ProfileChanged`` (User, Group)."""

    @event("ProfileChanged")
    def _profile_changed(
        self: Any, *, profile: dict[str, Any], source: str, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.profile = profile

    return _profile_changed


class _MirroredDirectoryEntry:
    """``update`` of MirroredPartner and MirroredTenant; each has ``profile`` and ``_changed = _changed_event()``."""

    def update(self, *, profile: dict[str, Any], at: datetime, actor: str) -> bool:
        if profile == self.profile:
            return False
        self._changed(profile=profile, at=at, actor=actor)
        return True


class _TenantIdentity:
    """``update`` and ``remove`` of User and Group. Each has ``profile``, ``removed``, ``_ids()`` (what its
    ``Reinstated`` event carries besides the profile), ``_profile_changed = _profile_changed_event()``, and its own
    ``_reinstated`` and ``_removed`` events."""

    def update(self, *, profile: dict[str, Any], source: str, at: datetime, actor: str, request_id: str | None) -> bool:
        """Set the profile (bringing a removed one back); False when nothing changes."""
        stamp = {"source": source, "at": at, "actor": actor, "request_id": request_id}
        if self.removed:
            self._reinstated(**self._ids(), profile=profile, **stamp)
            return True
        if profile == self.profile:
            return False
        self._profile_changed(profile=profile, **stamp)
        return True

    def remove(self, *, source: str, at: datetime, actor: str, request_id: str | None) -> bool:
        if self.removed:
            return False
        self._removed(source=source, at=at, actor=actor, request_id=request_id)
        return True


class MirroredPartner(_MirroredDirectoryEntry, Aggregate):
    """ScaiKey's view of a partner (name, slug, region, status); ScaiVault's own registry is domain/tenancy.py."""

    @staticmethod
    def create_id(partner_id: str) -> UUID:  # type: ignore[override]
        return partner_stream_id(partner_id)

    @event("Mirrored")
    def __init__(self, partner_id: str, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.partner_id = partner_id
        self.profile = profile

    _changed = _changed_event()

    @event("Synced")
    def synced(self, *, sync_id: str, at: datetime) -> None:
        """A sync confirmed this partner's data at ``at`` (its ``last_synced_at``)."""


class MirroredTenant(_MirroredDirectoryEntry, Aggregate):
    @staticmethod
    def create_id(tenant_id: str) -> UUID:  # type: ignore[override]
        return tenant_stream_id(tenant_id)

    @event("Mirrored")
    def __init__(self, tenant_id: str, partner_id: str, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.profile = profile

    _changed = _changed_event()

    @event("Synced")
    def synced(self, *, sync_id: str, at: datetime) -> None:
        """A sync confirmed every user and group of this tenant at ``at``."""


class User(_TenantIdentity, Aggregate):
    """A user of one tenant. ``profile``: email (lower-case), display_name, status, mfa_enabled."""

    @staticmethod
    def create_id(tenant_id: str, user_id: str) -> UUID:  # type: ignore[override]
        return user_stream_id(tenant_id, user_id)

    @event("Created")
    def __init__(
        self,
        tenant_id: str,
        user_id: str,
        profile: dict[str, Any],
        source: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.profile = profile
        self.roles: list[str] = []
        self.roles_set_locally = False
        self.removed = False

    @property
    def email(self) -> str:
        return str(self.profile["email"])

    def _ids(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "user_id": self.user_id}

    _profile_changed = _profile_changed_event()

    @event("Reinstated")
    def _reinstated(
        self,
        *,
        tenant_id: str,
        user_id: str,
        profile: dict[str, Any],
        source: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        """Carries the ids again: the read model forgot the user when it was removed."""
        self.profile = profile
        self.removed = False

    def set_roles(
        self, *, roles: list[str], source: str, at: datetime, actor: str, request_id: str | None
    ) -> bool:
        """Replace the roles. ScaiKey's word counts only until ScaiVault has set them itself."""
        if source == SCAIKEY and self.roles_set_locally:
            return False
        if roles == self.roles and (source == SCAIKEY or self.roles_set_locally):
            return False
        self._roles_changed(roles=roles, source=source, at=at, actor=actor, request_id=request_id)
        return True

    @event("RolesChanged")
    def _roles_changed(
        self, *, roles: list[str], source: str, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.roles = roles
        if source == SCAIVAULT:
            self.roles_set_locally = True

    @event("Removed")
    def _removed(self, *, source: str, at: datetime, actor: str, request_id: str | None) -> None:
        """A removed user keeps nothing: no roles, and (removed by the same command) no memberships."""
        self.removed = True
        self.roles = []
        self.roles_set_locally = False


class Group(_TenantIdentity, Aggregate):
    """A group of one tenant and its members (user ids). ``profile``: name (lower-case), description, status."""

    @staticmethod
    def create_id(tenant_id: str, group_id: str) -> UUID:  # type: ignore[override]
        return group_stream_id(tenant_id, group_id)

    @event("Created")
    def __init__(
        self,
        tenant_id: str,
        group_id: str,
        profile: dict[str, Any],
        source: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        self.tenant_id = tenant_id
        self.group_id = group_id
        self.profile = profile
        self.members: dict[str, str] = {}  # user id -> membership type
        self.removed = False

    def _ids(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "group_id": self.group_id}

    _profile_changed = _profile_changed_event()

    @event("Reinstated")
    def _reinstated(
        self,
        *,
        tenant_id: str,
        group_id: str,
        profile: dict[str, Any],
        source: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        self.profile = profile
        self.removed = False

    def add_member(self, *, user_id: str, source: str, at: datetime, actor: str, request_id: str | None) -> bool:
        if user_id in self.members:
            return False
        self._member_added(
            user_id=user_id, membership_type=DIRECT, source=source, at=at, actor=actor, request_id=request_id
        )
        return True

    @event("MemberAdded")
    def _member_added(
        self, *, user_id: str, membership_type: str, source: str, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.members[user_id] = membership_type

    def remove_member(self, *, user_id: str, source: str, at: datetime, actor: str, request_id: str | None) -> bool:
        if user_id not in self.members:
            return False
        self._member_removed(user_id=user_id, source=source, at=at, actor=actor, request_id=request_id)
        return True

    @event("MemberRemoved")
    def _member_removed(self, *, user_id: str, source: str, at: datetime, actor: str, request_id: str | None) -> None:
        del self.members[user_id]

    @event("Removed")
    def _removed(self, *, source: str, at: datetime, actor: str, request_id: str | None) -> None:
        """Removing a group ends every membership in it (the event says so; no MemberRemoved per member)."""
        self.removed = True
        self.members = {}


SYNC_STATUSES = ("running", "completed", "failed")
MAX_SYNC_ERROR = 1000


class IdentitySync(Aggregate):
    """One sync run from ScaiKey: its scope (every partner, one partner, or one tenant), outcome and counts."""

    @staticmethod
    def create_id(sync_id: str) -> UUID:  # type: ignore[override]
        return sync_stream_id(sync_id)

    @event("Started")
    def __init__(
        self,
        sync_id: str,
        partner_id: str | None,
        tenant_id: str | None,
        trigger: str,
        at: datetime,
        actor: str,
        request_id: str | None,
    ) -> None:
        self.sync_id = sync_id
        self.partner_id = partner_id
        self.tenant_id = tenant_id
        self.status = "running"
        self.started_at = at

    def complete(self, *, stats: dict[str, Any], at: datetime) -> bool:
        if self.status != "running":
            return False
        self._completed(stats=stats, at=at)
        return True

    @event("Completed")
    def _completed(self, *, stats: dict[str, Any], at: datetime) -> None:
        self.status = "completed"

    def fail(self, *, error: str, stats: dict[str, Any], at: datetime) -> bool:
        if self.status != "running":
            return False
        self._failed(error=error[:MAX_SYNC_ERROR], stats=stats, at=at)
        return True

    @event("Failed")
    def _failed(self, *, error: str, stats: dict[str, Any], at: datetime) -> None:
        self.status = "failed"


# --- reconciling with ScaiKey -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MirroredUser:
    profile: dict[str, Any]
    roles: tuple[str, ...] = ()
    roles_set_locally: bool = False


@dataclass(frozen=True)
class ReportedUser:
    """A user as ScaiKey reports it; ``roles``/``groups`` None when the report does not say."""

    profile: dict[str, Any]
    roles: tuple[str, ...] | None = None
    groups: tuple[str, ...] | None = None


@dataclass
class MirrorState:
    """What the mirror holds of one tenant that came from ScaiKey."""

    users: dict[str, MirroredUser] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # group id -> profile
    memberships: set[tuple[str, str]] = field(default_factory=set)  # (group id, user id)


@dataclass
class ReportedState:
    users: dict[str, ReportedUser] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class SyncPlan:
    """Changes to bring the mirror to what ScaiKey reports. Removals happen only for a complete report."""

    users_to_write: dict[str, dict[str, Any]] = field(default_factory=dict)  # new, changed or reinstated profiles
    roles_to_write: dict[str, list[str]] = field(default_factory=dict)
    users_to_remove: list[str] = field(default_factory=list)
    groups_to_write: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups_to_remove: list[str] = field(default_factory=list)
    members_to_add: list[tuple[str, str]] = field(default_factory=list)
    members_to_remove: list[tuple[str, str]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not any(
            (self.users_to_write, self.roles_to_write, self.users_to_remove, self.groups_to_write,
             self.groups_to_remove, self.members_to_add, self.members_to_remove)
        )


def plan_tenant_sync(mirror: MirrorState, reported: ReportedState, *, complete: bool) -> SyncPlan:
    """The changes that make ``mirror`` equal ``reported``.

    ``complete``: the report is the tenant's whole directory (a sync), so what it lacks is removed; otherwise (a
    webhook delivery about some users or groups) only what it names changes. Memberships follow each reported
    user's ``groups``; a membership in a group that is neither reported nor mirrored is ignored, and the memberships
    of removed users and groups go with them (the commands remove those)."""
    plan = SyncPlan()
    for user_id, user in reported.users.items():
        known = mirror.users.get(user_id)
        if known is None or known.profile != user.profile:
            plan.users_to_write[user_id] = user.profile
        if user.roles is not None and not (known is not None and known.roles_set_locally):
            if list(known.roles if known is not None else ()) != list(user.roles):
                plan.roles_to_write[user_id] = list(user.roles)
    for group_id, profile in reported.groups.items():
        if mirror.groups.get(group_id) != profile:
            plan.groups_to_write[group_id] = profile
    if complete:
        plan.users_to_remove = sorted(set(mirror.users) - set(reported.users))
        plan.groups_to_remove = sorted(set(mirror.groups) - set(reported.groups))
    removed_users, removed_groups = set(plan.users_to_remove), set(plan.groups_to_remove)
    groups = (set(mirror.groups) | set(reported.groups)) - removed_groups
    wanted: set[tuple[str, str]] = set()
    decided_users: set[str] = set()
    for user_id, user in reported.users.items():
        if user.groups is None and not complete:
            continue
        decided_users.add(user_id)
        wanted |= {(group_id, user_id) for group_id in user.groups or () if group_id in groups}
    current = {
        (group_id, user_id)
        for group_id, user_id in mirror.memberships
        if user_id in decided_users and group_id not in removed_groups and user_id not in removed_users
    }
    plan.members_to_add = sorted(wanted - mirror.memberships)
    plan.members_to_remove = sorted(current - wanted)
    return plan


def profile_of_user(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "email": parse_email(raw.get("email")),
        "display_name": parse_text(raw.get("display_name") or raw.get("email"), "display_name"),
        "status": parse_status(raw.get("status", ACTIVE)),
        "mfa_enabled": bool(raw.get("mfa_enabled", False)),
    }


def profile_of_group(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": parse_group_name(raw.get("name")),
        "description": parse_text(raw.get("description"), "description", max_length=MAX_DESCRIPTION, required=False),
        "status": parse_status(raw.get("status", ACTIVE)),
    }


def profile_of_partner(raw: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "name": parse_text(raw.get("name") or raw.get("id"), "name"),
        "slug": parse_optional_code(raw.get("slug"), _SLUG, "slug"),
        "region": parse_optional_code(raw.get("region"), _REGION, "region"),
        "status": parse_status(raw.get("status", ACTIVE)),
    }


profile_of_tenant = profile_of_partner
