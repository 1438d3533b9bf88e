"""Who is calling: the identity a verified token stands for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from scaivault.domain.errors import TokenInvalid

_TYPE_PREFIXES = (("user:", "user"), ("sa:", "service_account"), ("group:", "group"))
PARTNER_ADMIN_ROLES = frozenset({"partner_admin", "super_admin"})


def identity_type_of(identity_id: str) -> str:
    """``user:`` -> user, ``sa:`` -> service_account, ``group:`` -> group; anything else -> unknown."""
    for prefix, kind in _TYPE_PREFIXES:
        if identity_id.startswith(prefix):
            return kind
    return "unknown"


@dataclass(frozen=True, slots=True)
class Principal:
    identity_id: str
    identity_type: str
    display_name: str | None
    tenant_id: str | None
    partner_id: str | None
    scopes: frozenset[str]
    roles: frozenset[str]
    groups: tuple[str, ...]
    mfa_verified_at: datetime | None
    expires_at: datetime | None
    issued_at: datetime | None
    token_kind: str  # "jwt" | "pat"
    token_id: str  # the JWT's jti, or the PAT's id
    # The roles the token itself claims (``roles`` are those the caller holds, which the identity mirror may change:
    # projections/identity/roles.py); ``replace(principal, roles=...)`` keeps them. Default: ``roles``.
    token_roles: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.token_roles is None:
            object.__setattr__(self, "token_roles", self.roles)

    @property
    def claimed_roles(self) -> frozenset[str]:
        """The token's own roles, whatever the mirror made of them."""
        return self.roles if self.token_roles is None else self.token_roles

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def has_role(self, role: str) -> bool:
        return role in self.roles

    @property
    def is_partner_admin(self) -> bool:
        return not self.roles.isdisjoint(PARTNER_ADMIN_ROLES)

    @property
    def is_tenant_admin(self) -> bool:
        """tenant_admin, or a partner admin (who administers the partner's tenants)."""
        return "tenant_admin" in self.roles or self.is_partner_admin

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any], *, token_kind: str = "jwt") -> Principal:
        """Build from verified JWT claims. Malformed claim types raise TokenInvalid (no claim values echoed)."""
        identity_id = claims.get("sub")
        if not isinstance(identity_id, str) or not identity_id or not _storable(identity_id):
            raise TokenInvalid("The token has no usable subject")
        identity_type = claims.get("identity_type")
        if identity_type is None:
            identity_type = identity_type_of(identity_id)
        scopes_claim = claims.get("scopes")
        scopes = _strings(scopes_claim, "scopes") if scopes_claim is not None else _scope_string(claims.get("scope"))
        jti = claims.get("jti")
        return cls(
            identity_id=identity_id,
            identity_type=_string(identity_type, "identity_type"),
            display_name=_optional_string(claims.get("display_name", claims.get("name")), "display_name"),
            tenant_id=_optional_string(claims.get("tenant_id"), "tenant_id"),
            partner_id=_optional_string(claims.get("partner_id"), "partner_id"),
            scopes=frozenset(scopes),
            roles=frozenset(_strings(claims.get("roles", ()), "roles")),
            groups=tuple(_strings(claims.get("groups", ()), "groups")),
            mfa_verified_at=_time(claims.get("mfa_verified_at"), "mfa_verified_at"),
            expires_at=_time(claims.get("exp"), "exp"),
            issued_at=_time(claims.get("iat"), "iat"),
            token_kind=token_kind,
            token_id=_string(jti, "jti"),
        )


def _storable(text: str) -> bool:
    """JSON lets a claim carry a NUL or a lone surrogate (``\\ud800``); no answer, query or record can hold one."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _string(value: Any, claim: str) -> str:
    if not isinstance(value, str) or not value or not _storable(value):
        raise TokenInvalid(f"The token's {claim} claim is malformed")
    return value


def _optional_string(value: Any, claim: str) -> str | None:
    return None if value is None else _string(value, claim)


def _strings(value: Any, claim: str) -> list[str]:
    if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
        raise TokenInvalid(f"The token's {claim} claim is malformed")
    items = list(value)
    if not all(isinstance(item, str) and _storable(item) for item in items):
        raise TokenInvalid(f"The token's {claim} claim is malformed")
    return items


def _scope_string(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, str) or not _storable(value):
        raise TokenInvalid("The token's scope claim is malformed")
    return value.split()


def _time(value: Any, claim: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif isinstance(value, str):  # tolerate RFC 3339 from other issuers
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        except ValueError:
            pass
    raise TokenInvalid(f"The token's {claim} claim is malformed")
