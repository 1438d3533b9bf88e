"""What commands need to know that is not in their own aggregates: small lookups over read models, read in the
command's transaction, and the authorization decisions on secrets. Commands depend on these protocols only; the
adapters live beside what they read (``projections/<area>/lookup.py: Postgres<Area>Lookup``,
``scaivault/auth/secret_permissions.py``) and the composition root (``scaivault/bootstrap.py``) hands them in."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from scaivault.auth.caller import Caller
from scaivault.database import Queryable
from scaivault.domain.identities import MirrorState
from scaivault.domain.rotation import RotationTerms
from scaivault.domain.secrets import SecretAddress


class TenancyLookup(Protocol):
    async def partner_of(self, conn: asyncpg.Connection, tenant_id: str) -> str | None:
        """The partner a registered tenant belongs to; None for a tenant never registered."""

    async def partner_exists(self, conn: asyncpg.Connection, partner_id: str) -> bool: ...


class SecretLookup(Protocol):
    async def deletions_past_retention(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        """Streams of soft-deleted secrets whose retention ended by ``at``, the longest-expired first."""


class IdentityLookup(Protocol):
    """The identity mirror's read model, as the identity commands ask it (in their transaction)."""

    async def email_taken(self, conn: asyncpg.Connection, tenant_id: str, email: str) -> bool: ...

    async def group_name_taken(self, conn: asyncpg.Connection, tenant_id: str, name: str) -> bool: ...

    async def user_group_ids(self, conn: asyncpg.Connection, tenant_id: str, user_id: str) -> list[str]:
        """The groups the user is a member of."""

    async def scaikey_state(self, conn: asyncpg.Connection, tenant_id: str) -> MirrorState:
        """The tenant's users and groups that came from ScaiKey, and the memberships in those groups."""


class AuditExportLookup(Protocol):
    """The read models an export request consults, in its transaction."""

    async def live_secret_exists(self, conn: asyncpg.Connection, address: SecretAddress) -> bool: ...

    async def matching_entries(
        self, conn: asyncpg.Connection, tenant_id: str, filters: dict[str, Any], since: datetime, until: datetime
    ) -> int:
        """How many audit-log entries of the tenant the export's filters and range match now."""


class SecretPermissions(Protocol):
    """What a caller may do to a secret: its scopes and policies, decided by the authorizer a read of the secret
    goes through (``scaivault/auth/secret_permissions.py``), so commands get the decisions reads get."""

    async def require(self, caller: Caller, address: SecretAddress, permission: str) -> None:
        """Raise the decision's error unless ``permission`` is allowed on the secret."""

    async def allows(self, caller: Caller, address: SecretAddress, permission: str) -> bool: ...


class SecretPolicyLookup(Protocol):
    """The secret policies' read model, as secret writes (and auto-generated rotations) ask it."""

    async def active_recipe(
        self, conn: asyncpg.Connection, owner: str, secret_policy_id: str
    ) -> list[dict[str, Any]] | None:
        """The fields (``name``, ``generator``, ``config``) of the owner's active secret policy; None when the owner
        has no active policy with that id."""

    async def linked_secrets(self, conn: asyncpg.Connection, owner: str, secret_policy_id: str) -> int:
        """How many of the owner's secrets (live or soft-deleted) are linked to the secret policy."""

    async def rotation_policies_using(self, conn: asyncpg.Connection, owner: str, secret_policy_id: str) -> list[str]:
        """The ids of the owner's rotation policies that generate values with the secret policy, in id order."""


class RotationLookup(Protocol):
    """The rotation read models (``projections/rotation/``), as rotation commands and secret writes ask them."""

    async def policy_terms(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> RotationTerms | None: ...

    async def policy_exists(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> bool: ...

    async def name_taken(self, conn: asyncpg.Connection, owner: str, name: str) -> bool: ...

    async def attached_paths(self, conn: asyncpg.Connection, owner: str, policy_id: str) -> list[str]:
        """The paths of the owner's secrets (soft-deleted ones too) attached to the rotation policy, in order."""

    async def due_schedules(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        """Streams of secrets whose rotation or expiry schedule may need a step by ``at``, the longest-due first."""

    async def current_ciphertext(self, conn: asyncpg.Connection, stream_id: UUID, version: int) -> bytes | None:
        """The sealed value of a kept version (None once destroyed)."""


class QuotaLookup(Protocol):
    """How many of what a quota bounds exist now (``scaivault/domain/quotas.py``), read from the inline read models in
    the creating command's transaction, after it took the quota's lock. Deleted ones are gone from the read models,
    so they do not count."""

    async def webhooks(self, conn: asyncpg.Connection, tenant_id: str) -> int: ...

    async def subscriptions(self, conn: asyncpg.Connection, tenant_id: str, identity_id: str) -> tuple[int, int]:
        """The tenant's subscriptions, and those of them the identity owns (identity ids compare as
        ``same_identity`` does: trimmed, case-insensitive)."""


class WebhookLookup(Protocol):
    """The webhooks read model, as housekeeping asks it."""

    async def previous_secrets_expired(self, conn: asyncpg.Connection, at: datetime, limit: int) -> list[UUID]:
        """Streams of webhooks still keeping a previous signing secret whose overlap ended by ``at``, the
        longest-expired first."""


class DnsProviderLookup(Protocol):
    """The DNS providers' read model, as their commands ask it (under the tenant's lock, in their transaction)."""

    async def name_taken(
        self, conn: asyncpg.Connection, tenant_id: str, name: str, *, other_than: str | None = None
    ) -> bool: ...

    async def active_zones(
        self, conn: asyncpg.Connection, tenant_id: str, *, other_than: str | None = None
    ) -> dict[str, list[str]]:
        """The managed zones of each active provider of the tenant (``other_than`` left out)."""


class PkiLookup(Protocol):
    """What PKI commands read from the PKI read models (``projections/pki/lookup.py``)."""

    async def ca(self, conn: Queryable, owner: str, ca_id: str) -> Mapping[str, Any] | None: ...

    async def ca_name_taken(self, conn: Queryable, owner: str, name: str) -> bool: ...

    async def role(self, conn: Queryable, owner: str, name: str) -> Mapping[str, Any] | None:
        """The role's row (``role_id``, ``ca_id``, ``settings``, ``updated_at``), None if there is none."""

    async def certificate_stream(self, conn: Queryable, owner: str, certificate_id: str) -> UUID | None: ...

    async def revoked_entries(
        self, conn: Queryable, ca_id: str, partition: str | None, at: datetime
    ) -> list[tuple[str, datetime, str]]:
        """(serial, revoked_at, reason) of the CA's revoked certificates not yet expired at ``at``: all of them,
        or one CRL partition's."""

    async def published_partitions(self, conn: Queryable, ca_id: str) -> list[str]: ...

    async def child_cas(self, conn: Queryable, ca_id: str) -> list[str]: ...

    async def live_certificates(self, conn: Queryable, ca_id: str) -> int:
        """How many certificates the CA signed are not revoked (what its revocation revokes)."""

    async def due(self, conn: Queryable, at: datetime, limit: int) -> list[tuple[str, UUID]]:
        """Scheduled PKI work due at ``at``: ``("crl", ca stream)`` for CRLs to re-sign before their next update,
        ``("renew", certificate stream)`` and ``("warn", certificate stream)``."""


class PkiRequestLookup(Protocol):
    """What the CSR workflow and trust-anchor commands read (``projections/pki_requests/lookup.py``)."""

    async def role_id(self, conn: Queryable, owner: str, role_name: str) -> str | None:
        """The id of the owner's role of that name now (a role deleted and created again has a new id)."""

    async def trust_anchor_stream(self, conn: Queryable, owner: str, anchor_id: str) -> UUID | None: ...

    async def trust_anchor_taken(self, conn: Queryable, owner: str, name: str, fingerprint_sha256: str) -> str | None:
        """``"name"`` or ``"certificate"`` when one of the owner's anchors has that name or that certificate."""


class DynamicLookup(Protocol):
    """What dynamic-secrets commands read from their read models (``projections/dynamic/lookup.py``)."""

    async def engine_id(self, conn: Queryable, tenant_id: str, name: str) -> str | None: ...

    async def open_leases(self, conn: Queryable, tenant_id: str, engine_id: str, role_name: str) -> tuple[int, int]:
        """Leases not yet revoked: of the role, and of the tenant."""

    async def open_leases_of_engine(self, conn: Queryable, engine_id: str, role_name: str | None = None) -> int: ...

    async def role_exists(self, conn: Queryable, engine_id: str, role_name: str) -> bool: ...

    async def lease_state(self, conn: Queryable, tenant_id: str, lease_id: str) -> str | None:
        """The lease's state, after any transaction changing it has ended (``FOR SHARE``)."""

    async def lock_lease(self, conn: asyncpg.Connection, tenant_id: str, lease_id: str) -> UUID | None:
        """Lock the lease's row until the transaction ends; its stream id, or None when the tenant has no such
        lease."""

    async def claim_due(self, conn: asyncpg.Connection, now: datetime, limit: int) -> list[UUID]:
        """Lock leases due for revocation that no one else holds (``SKIP LOCKED``); their stream ids."""

    async def claim_prefix(
        self, conn: asyncpg.Connection, tenant_id: str, engine: str, role: str | None, limit: int
    ) -> list[UUID]: ...

    async def next_due(self, conn: Queryable) -> datetime | None: ...

    async def engines_due_root_rotation(self, conn: Queryable, now: datetime, limit: int) -> list[tuple[str, str]]: ...


class RootCredentials(Protocol):
    """An engine's root credentials, read as the engine's own identity (``dynamic:<engine name>``) through the
    policies bound to it, as the spec's tutorial sets up (``scaivault/dynamic/root_credentials.py``)."""

    async def read(self, tenant_id: str, partner_id: str, engine_name: str, path: str) -> tuple[dict[str, Any], int]:
        """The secret's data and version; ``InvalidConfig`` saying why when the engine may not read it or it is
        missing."""

    async def may_rotate(self, tenant_id: str, partner_id: str, engine_name: str, path: str) -> None:
        """Raise ``InvalidConfig`` unless the engine's identity holds ``rotate`` on the root secret."""
