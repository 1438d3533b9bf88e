"""The identity mirror (spec reference/identity): partners, tenants, users and groups as ScaiKey reports them, or as
an operator manages them when there is no ScaiKey.

One stream per mirrored partner, tenant, user (per tenant) and group (per tenant, holding its memberships), and one
per sync run. Every change says where it came from: ``scaikey`` (a sync or a webhook delivery) or ``scaivault``
(the API or the CLI). A user's roles set in ScaiVault are ScaiVault's from then on: a sync no longer overwrites them
(``roles_set_locally``), so an administrator who takes a role away is not overruled by the next sync.

A user's record also carries its ``authority``: the rank (``ROLE_RANKS``) of the strongest actor that set its roles
or status. The record speaks for the token roles up to that rank and no further (``projections/identity/roles.py``),
and only an actor that reaches that far may remove it (``check_within_reach``).

Also here, pure: the role-change, reach and membership rules, the value rules for identities, and
``plan_tenant_sync``, which turns "what the mirror holds" and "what ScaiKey reports" into the changes to make. The
domain reads no clock and does no I/O: time comes in as ``at``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import AccessDenied, IdentityNotFound, InvalidRole, ScaiVaultError, ValidationFailed

SCAIKEY = "scaikey"
SCAIVAULT = "scaivault"

# Admin roles that can be assigned (GET /v1/identity/roles), strongest first.
ROLES: dict[str, str] = {
    "super_admin": "Administers every partner and tenant; the only role that can grant or revoke super_admin",
    "partner_admin": "Administers every tenant of its partner, and can change the roles of their users",
    "tenant_admin": "Administers its own tenant",
}
ROLE_CHANGERS = frozenset({"super_admin", "partner_admin"})
# How far an administrator reaches: the rank of its strongest role (no admin role: 0).
ROLE_RANKS: dict[str, int] = {"tenant_admin": 1, "partner_admin": 2, "super_admin": 3}
NO_AUTHORITY = 0
# ScaiKey (sync runs, webhook deliveries) and the operator (the CLI) act with the top authority.
TOP_AUTHORITY = 3
# User events stored before records carried an authority count as set by the top authority. That is what they meant
# then (a record replaced every token role), so the upgrade gives no one a role back; and only an actor of the top
# reach may remove or re-status a record whose author is unknown. A lower default would hand every token role above
# it back to users whom an administrator had demoted or suspended.
LEGACY_AUTHORITY = TOP_AUTHORITY
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


def _invalid(field_name: str, message: str) -> ScaiVaultError:
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


def role_rank(role: str) -> int:
    return ROLE_RANKS.get(role, NO_AUTHORITY)


def reach_of(roles: Iterable[str]) -> int:
    """The rank of the strongest admin role among ``roles`` (``NO_AUTHORITY`` for none)."""
    return max((role_rank(role) for role in roles), default=NO_AUTHORITY)


def identity_not_found(kind: str, reference: str) -> ScaiVaultError:
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


def check_within_reach(*, actor_reach: int, roles: Iterable[str], authority: int, whole_record: bool) -> None:
    """An actor changes only users within its reach: none whose mirrored roles rank above its own. Removing the
    record (or changing its status), ``whole_record``, also undoes what its author decided about the token's roles
    up to the record's ``authority``: only an actor that reaches that far may (so a tenant admin cannot undo a
    partner admin's suspension or demotion). Changing roles within reach keeps a higher authority on the record."""
    if reach_of(roles) > actor_reach:
        raise AccessDenied("The user holds a role above yours", reason="outside_reach")
    if whole_record and authority > actor_reach:
        raise AccessDenied("An administrator above you decided this user's record", reason="outside_reach")


def check_membership_change(*, adding: bool, changing_self: bool) -> None:
    """Groups carry policy bindings, so joining one is gaining rights: no one adds themselves (leaving is fine)."""
    if adding and changing_self:
        raise AccessDenied("No one may add themselves to a group", reason="self_elevation")


# --- aggregates ---------------------------------------------------------------------------------------------------


# What the aggregates below share lives in plain mixins (commands), in base classes of their events' fields and in
# factories of event methods, called in each aggregate's own body. Not in a shared Aggregate base class: eventsourcing
# names an event after the class that declares it (topic ``scaivault.domain.identities:<Class>.<Event>``), so events
# declared on a base class would get new topics and the events already stored would no longer decode. Each event
# class is declared in its aggregate's body, so its topic stays; tests/unit/test_identity_events.py pins them.


class _DirectoryChanged(Aggregate.Event):
    """ScaiKey's new profile of a partner or tenant."""

    profile: dict[str, Any]
    at: datetime
    actor: str


class _DirectorySynced(Aggregate.Event):
    """A sync confirmed a partner's or tenant's data at ``at`` (its ``last_synced_at``)."""

    sync_id: str
    at: datetime


class _Stamped(Aggregate.Event):
    """A user's or group's change: who made it, and from where (``scaikey`` or ``scaivault``)."""

    source: str
    at: datetime
    actor: str
    request_id: str | None


def _changed_event(event_class: type[_DirectoryChanged]) -> Any:
    """The ``_changed`` method of MirroredPartner and MirroredTenant, emitting their own ``Changed``."""

    @event(event_class)
    def _changed(self: Any, *, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.profile = profile

    return _changed


def _synced_event(event_class: type[_DirectorySynced]) -> Any:
    """The ``synced`` method of MirroredPartner and MirroredTenant, emitting their own ``Synced``."""

    @event(event_class)
    def synced(self: Any, *, sync_id: str, at: datetime) -> None:
        """A sync confirmed the data (for a tenant: every user and group of it) at ``at``."""

    return synced


class _MirroredDirectoryEntry:
    """``update`` of MirroredPartner and MirroredTenant; each has ``profile`` and ``_changed = _changed_event(...)``."""

    profile: dict[str, Any]
    _changed: Any

    def update(self, *, profile: dict[str, Any], at: datetime, actor: str) -> bool:
        if profile == self.profile:
            return False
        self._changed(profile=profile, at=at, actor=actor)
        return True


class _TenantIdentity:
    """``update`` and ``remove`` of User and Group. Each has ``profile``, ``removed``, ``_ids()`` (what its
    ``Reinstated`` event carries besides the profile), and its own ``_profile_changed``, ``_reinstated`` and
    ``_removed`` events. ``stamp``: what every event of the aggregate carries besides its own fields (``source``,
    ``at``, ``actor``, ``request_id``; a user's also ``authority``)."""

    profile: dict[str, Any]
    removed: bool
    _profile_changed: Any
    _reinstated: Any
    _removed: Any

    def _ids(self) -> dict[str, str]:
        raise NotImplementedError

    def update(self, *, profile: dict[str, Any], **stamp: Any) -> bool:
        """Set the profile (bringing a removed one back); False when nothing changes."""
        if self.removed:
            self._reinstated(**self._ids(), profile=profile, **stamp)
            return True
        if profile == self.profile:
            return False
        self._profile_changed(profile=profile, **stamp)
        return True

    def remove(self, **stamp: Any) -> bool:
        if self.removed:
            return False
        self._removed(**stamp)
        return True


class MirroredPartner(_MirroredDirectoryEntry, Aggregate):
    """ScaiKey's view of a partner (name, slug, region, status); ScaiVault's own registry is domain/tenancy.py."""

    @staticmethod
    def create_id(partner_id: str) -> UUID:
        return partner_stream_id(partner_id)

    class Mirrored(Aggregate.Created):
        partner_id: str
        profile: dict[str, Any]
        at: datetime
        actor: str

    @event(Mirrored)
    def __init__(self, partner_id: str, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.partner_id = partner_id
        self.profile = profile

    class Changed(_DirectoryChanged):
        """ScaiKey's new profile of the partner."""

    class Synced(_DirectorySynced):
        """A sync confirmed the partner."""

    _changed = _changed_event(Changed)
    synced = _synced_event(Synced)


class MirroredTenant(_MirroredDirectoryEntry, Aggregate):
    @staticmethod
    def create_id(tenant_id: str) -> UUID:
        return tenant_stream_id(tenant_id)

    class Mirrored(Aggregate.Created):
        tenant_id: str
        partner_id: str
        profile: dict[str, Any]
        at: datetime
        actor: str

    @event(Mirrored)
    def __init__(self, tenant_id: str, partner_id: str, profile: dict[str, Any], at: datetime, actor: str) -> None:
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.profile = profile

    class Changed(_DirectoryChanged):
        """ScaiKey's new profile of the tenant."""

    class Synced(_DirectorySynced):
        """A sync confirmed every user and group of the tenant."""

    _changed = _changed_event(Changed)
    synced = _synced_event(Synced)


def _legacy_authority(state: dict[str, Any]) -> None:
    """Upcasts a user's event or snapshot stored before records carried an authority (see ``LEGACY_AUTHORITY``)."""
    state["authority"] = LEGACY_AUTHORITY


class _UserEvent(_Stamped):
    """A user's change: also with what authority (the actor's rank)."""

    class_version = 2
    authority: int
    upcast_v1_v2 = staticmethod(_legacy_authority)


class User(_TenantIdentity, Aggregate):
    """A user of one tenant. ``profile``: email (lower-case), display_name, status, mfa_enabled. ``authority``: the
    highest rank that set its roles or status (``check_within_reach``, and effective roles in
    projections/identity/roles.py)."""

    class_version = 2  # snapshots: version 1 had no authority
    upcast_v1_v2 = staticmethod(_legacy_authority)

    @staticmethod
    def create_id(tenant_id: str, user_id: str) -> UUID:
        return user_stream_id(tenant_id, user_id)

    class Created(Aggregate.Created):
        class_version = 2
        tenant_id: str
        user_id: str
        profile: dict[str, Any]
        source: str
        at: datetime
        actor: str
        request_id: str | None
        authority: int
        upcast_v1_v2 = staticmethod(_legacy_authority)

    @event(Created)
    def __init__(
        self,
        tenant_id: str,
        user_id: str,
        profile: dict[str, Any],
        source: str,
        at: datetime,
        actor: str,
        request_id: str | None,
        authority: int,
    ) -> None:
        self.tenant_id = tenant_id
        self.user_id = user_id
        self.profile = profile
        self.roles: list[str] = []
        self.roles_set_locally = False
        self.removed = False
        self.authority = authority

    @property
    def email(self) -> str:
        return str(self.profile["email"])

    def _ids(self) -> dict[str, str]:
        return {"tenant_id": self.tenant_id, "user_id": self.user_id}

    class ProfileChanged(_UserEvent):
        profile: dict[str, Any]

    @event(ProfileChanged)
    def _profile_changed(
        self, *, profile: dict[str, Any], source: str, at: datetime, actor: str, request_id: str | None, authority: int
    ) -> None:
        self.profile = profile
        self.authority = max(self.authority, authority)

    class Reinstated(_UserEvent):
        tenant_id: str
        user_id: str
        profile: dict[str, Any]

    @event(Reinstated)
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
        authority: int,
    ) -> None:
        """Carries the ids again: the read model forgot the user when it was removed. A new record: the authority
        is its author's."""
        self.profile = profile
        self.removed = False
        self.authority = authority

    def set_roles(
        self, *, roles: list[str], source: str, at: datetime, actor: str, request_id: str | None, authority: int
    ) -> bool:
        """Replace the roles. ScaiKey's word counts only until ScaiVault has set them itself. Setting the same roles
        again still counts when it makes them ScaiVault's, or puts them under a higher authority (a partner admin
        confirming a tenant admin's record takes it out of the tenant admin's reach)."""
        if source == SCAIKEY and self.roles_set_locally:
            return False
        settled = source == SCAIKEY or self.roles_set_locally
        if roles == self.roles and settled and authority <= self.authority:
            return False
        self._roles_changed(
            roles=roles, source=source, at=at, actor=actor, request_id=request_id, authority=authority
        )
        return True

    class RolesChanged(_UserEvent):
        roles: list[str]

    @event(RolesChanged)
    def _roles_changed(
        self, *, roles: list[str], source: str, at: datetime, actor: str, request_id: str | None, authority: int
    ) -> None:
        """A lower actor changing roles within its reach leaves a higher authority in place: what that authority
        decided about the token roles above the lower actor's reach still holds."""
        self.roles = roles
        self.authority = max(self.authority, authority)
        if source == SCAIVAULT:
            self.roles_set_locally = True

    class Removed(_UserEvent):
        """The user is gone (its memberships are removed in the same transaction)."""

    @event(Removed)
    def _removed(self, *, source: str, at: datetime, actor: str, request_id: str | None, authority: int) -> None:
        """A removed user keeps nothing: no roles, and (removed by the same command) no memberships."""
        self.removed = True
        self.roles = []
        self.roles_set_locally = False


class Group(_TenantIdentity, Aggregate):
    """A group of one tenant and its members (user ids). ``profile``: name (lower-case), description, status."""

    @staticmethod
    def create_id(tenant_id: str, group_id: str) -> UUID:
        return group_stream_id(tenant_id, group_id)

    class Created(Aggregate.Created):
        tenant_id: str
        group_id: str
        profile: dict[str, Any]
        source: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
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

    class ProfileChanged(_Stamped):
        profile: dict[str, Any]

    @event(ProfileChanged)
    def _profile_changed(
        self, *, profile: dict[str, Any], source: str, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.profile = profile

    class Reinstated(_Stamped):
        tenant_id: str
        group_id: str
        profile: dict[str, Any]

    @event(Reinstated)
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

    class MemberAdded(_Stamped):
        user_id: str
        membership_type: str

    @event(MemberAdded)
    def _member_added(
        self, *, user_id: str, membership_type: str, source: str, at: datetime, actor: str, request_id: str | None
    ) -> None:
        self.members[user_id] = membership_type

    def remove_member(self, *, user_id: str, source: str, at: datetime, actor: str, request_id: str | None) -> bool:
        if user_id not in self.members:
            return False
        self._member_removed(user_id=user_id, source=source, at=at, actor=actor, request_id=request_id)
        return True

    class MemberRemoved(_Stamped):
        user_id: str

    @event(MemberRemoved)
    def _member_removed(self, *, user_id: str, source: str, at: datetime, actor: str, request_id: str | None) -> None:
        del self.members[user_id]

    class Removed(_Stamped):
        """The group is gone, with every membership in it."""

    @event(Removed)
    def _removed(self, *, source: str, at: datetime, actor: str, request_id: str | None) -> None:
        """Removing a group ends every membership in it (the event says so; no MemberRemoved per member)."""
        self.removed = True
        self.members = {}


MAX_SYNC_ERROR = 1000


class IdentitySync(Aggregate):
    """One sync run from ScaiKey: its scope (every partner, one partner, or one tenant), outcome and counts."""

    @staticmethod
    def create_id(sync_id: str) -> UUID:
        return sync_stream_id(sync_id)

    class Started(Aggregate.Created):
        sync_id: str
        partner_id: str | None
        tenant_id: str | None
        trigger: str
        at: datetime
        actor: str
        request_id: str | None

    @event(Started)
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

    class Completed(Aggregate.Event):
        stats: dict[str, Any]
        at: datetime

    @event(Completed)
    def _completed(self, *, stats: dict[str, Any], at: datetime) -> None:
        self.status = "completed"

    def fail(self, *, error: str, stats: dict[str, Any], at: datetime) -> bool:
        if self.status != "running":
            return False
        self._failed(error=error[:MAX_SYNC_ERROR], stats=stats, at=at)
        return True

    class Failed(Aggregate.Event):
        error: str
        stats: dict[str, Any]
        at: datetime

    @event(Failed)
    def _failed(self, *, error: str, stats: dict[str, Any], at: datetime) -> None:
        self.status = "failed"


# --- reconciling with ScaiKey -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RoleRecord:
    """What the mirror holds of a user for authorization (projections/identity/roles.py)."""

    roles: frozenset[str]
    active: bool
    authority: int


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
        scaikey_decides_roles = known is None or not known.roles_set_locally
        held = list(known.roles) if known is not None else []
        if user.roles is not None and scaikey_decides_roles and held != list(user.roles):
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
