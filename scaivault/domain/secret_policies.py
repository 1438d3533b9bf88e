"""Secret policies (spec reference/secret-policies): recipes for generating secret values, owned by a tenant.

Not access policies: a secret policy says what a value looks like (its fields and their generators,
``scaivault.domain.generators``), never who may read it. Its recipe is stored with every default filled in, so what
a policy generates never changes under it when a default does. A recipe is configuration, not a secret: a
``static`` value is shown to anyone who may read the policy, and lives in its events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from scaivault.domain.errors import PolicyInUse
from scaivault.domain.generators import normalize_recipe
from scaivault.domain.labels import (
    check_description,
    check_is_active,
    check_name,
    field_error,
)

POLICY_TYPES = ("password", "api_key", "oauth_client", "ssh_key", "custom")
_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/secret-policy")


def secret_policy_stream_id(policy_id: str) -> UUID:
    return uuid5(_NAMESPACE, policy_id)


@dataclass(frozen=True)
class SecretPolicyUsers:
    """What still uses a secret policy when it is deleted: secrets linked to it, and the tenant's rotation policies
    that generate values with it."""

    secret_count: int = 0
    rotation_policy_ids: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.secret_count or self.rotation_policy_ids)


_invalid = field_error


def check_policy_type(policy_type: object) -> str:
    if not isinstance(policy_type, str) or policy_type not in POLICY_TYPES:
        raise _invalid("policy_type", f"must be one of {', '.join(POLICY_TYPES)}")
    return policy_type


class SecretPolicy(Aggregate):
    @staticmethod
    def create_id(policy_id: str) -> UUID:
        return secret_policy_stream_id(policy_id)

    @classmethod
    def create(
        cls, *, policy_id: str, owner: str, tenant_id: str | None, partner_id: str, name: object, policy_type: object,
        description: object, fields: object, is_active: object, at: datetime, actor: str, request_id: str | None,
    ) -> SecretPolicy:
        return cls(
            policy_id=policy_id, owner=owner, tenant_id=tenant_id, partner_id=partner_id, name=check_name(name),
            policy_type=check_policy_type(policy_type), description=check_description(description),
            fields=normalize_recipe(fields), is_active=check_is_active(is_active), at=at, actor=actor,
            request_id=request_id,
        )

    # Declared event classes keep their names, and so their stored topics
    # (``scaivault.domain.secret_policies:SecretPolicy.<Name>``), and a type checker sees them.
    class Created(Aggregate.Created):
        policy_id: str
        owner: str
        tenant_id: str | None
        partner_id: str
        name: str
        policy_type: str
        description: str | None
        fields: list[dict[str, Any]]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Created)
    def __init__(
        self, policy_id: str, owner: str, tenant_id: str | None, partner_id: str, name: str, policy_type: str,
        description: str | None, fields: list[dict[str, Any]], is_active: bool, at: datetime, actor: str,
        request_id: str | None,
    ) -> None:
        self.policy_id = policy_id
        self.owner = owner
        self.tenant_id = tenant_id
        self.partner_id = partner_id
        self.name = name
        self.policy_type = policy_type
        self.description = description
        self.fields = fields
        self.is_active = is_active
        self.created_at = at
        self.created_by = actor
        self.updated_at = at
        self.updated_by = actor
        self.deleted = False

    def update(
        self, *, name: object, policy_type: object, description: object, fields: object, is_active: object,
        at: datetime, actor: str, request_id: str | None,
    ) -> None:
        """Set every field to the given value (a PATCH passes the current value of what it leaves alone)."""
        self._updated(
            name=check_name(name), policy_type=check_policy_type(policy_type),
            description=check_description(description), fields=normalize_recipe(fields),
            is_active=check_is_active(is_active), at=at, actor=actor, request_id=request_id,
        )

    class Updated(Aggregate.Event):
        name: str
        policy_type: str
        description: str | None
        fields: list[dict[str, Any]]
        is_active: bool
        at: datetime
        actor: str
        request_id: str | None

    @event(Updated)
    def _updated(
        self, name: str, policy_type: str, description: str | None, fields: list[dict[str, Any]], is_active: bool,
        at: datetime, actor: str, request_id: str | None,
    ) -> None:
        self.name = name
        self.policy_type = policy_type
        self.description = description
        self.fields = fields
        self.is_active = is_active
        self.updated_at = at
        self.updated_by = actor

    def delete(
        self, *, users: SecretPolicyUsers, force: bool, at: datetime, actor: str, request_id: str | None
    ) -> None:
        """Delete; while anything uses it only with ``force``. Linked secrets then keep a dangling link, which no
        write is checked against; rotation policies keep a ``secret_policy_id`` whose auto-generated rotations
        fail (``rotation.failed``, ``secret_policy_not_found``) until they are pointed at another recipe."""
        if users and not force:
            raise PolicyInUse(
                "Secrets or rotation policies use this secret policy; relink them or use force=true",
                secret_policy_id=self.policy_id, secret_count=users.secret_count,
                rotation_policy_ids=list(users.rotation_policy_ids),
            )
        self._deleted(at=at, actor=actor, request_id=request_id)

    class Deleted(Aggregate.Event):
        at: datetime
        actor: str
        request_id: str | None

    @event(Deleted)
    def _deleted(self, at: datetime, actor: str, request_id: str | None) -> None:
        self.deleted = True
