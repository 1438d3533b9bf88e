"""The port every dynamic-secrets backend implements: one adapter per engine type (``database.postgresql``,
``database.mysql``, ``database.redis``, ``aws``, ``ssh``), built by ``scaivault/dynamic/factory.py``.

A backend talks to one target system with the engine's root credentials. It never sees an event, a lease record or
the event store: commands (``commands/dynamic.py``) decide, the backend only acts on the target. Everything a
backend raises is one of the two errors below, with a message that names no secret (no password, no key, no URL with
credentials in it): ``TargetRefused`` when the target answered and said no (bad credentials, bad statement, missing
permission), ``TargetUnavailable`` when it could not be reached or timed out (the caller may retry later).

Values substituted into statements (``username``, ``password``, ``expiration``) come from
``scaivault/domain/dynamic.py`` in character sets that cannot end a quoted identifier or literal (letters, digits,
``_``, and for the expiration ``-``, ``:``, ``+`` and a space); backends substitute them as text and additionally pass
them as parameters wherever the target's protocol allows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from scaivault.egress import IPNetwork


class TargetError(Exception):
    """A backend's failure. ``str(error)`` is safe to show to the engine's administrator and to log."""


class TargetRefused(TargetError):
    """The target answered and refused (wrong credentials, a failing statement, no permission)."""


class TargetUnavailable(TargetError):
    """The target could not be reached, or did not answer in time; worth retrying later."""


@dataclass(frozen=True)
class EngineTarget:
    """What a backend connects with. ``config``: the engine's checked config (``connection_url`` is the template with
    ``{{username}}``/``{{password}}`` placeholders; never holds a secret itself). ``root``: the root credentials as
    stored in the secret at ``root_credentials_path`` (``username``/``password`` for databases,
    ``access_key_id``/``secret_access_key`` for aws; empty for ssh). ``egress_allow``: the operator's
    SCAIVAULT_EGRESS_ALLOW; a backend connects only to addresses ``scaivault.egress.resolve_and_check`` accepts.
    ``private_key_pem``: the ssh engine's CA key (opened by the command; None for the others)."""

    engine_type: str
    config: Mapping[str, Any]
    root: Mapping[str, Any] = field(repr=False)
    egress_allow: tuple[IPNetwork, ...] = ()
    private_key_pem: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class RoleRecipe:
    """A role as a backend needs it. Statements are the role's, unrendered (``{{name}}``, ``{{username}}``,
    ``{{password}}``, ``{{expiration}}`` placeholders). ``settings``: the engine-type-specific role fields, checked by
    the domain (aws: ``credential_type``, ``policy_arns``, ``policy_document``, ``role_arn``; ssh: ``allowed_users``,
    ``default_user``, ``cert_type``, ``extensions``, ``critical_options``; redis: none, its ACL rules are the
    ``creation_statements``)."""

    name: str
    creation_statements: Sequence[str] = ()
    revocation_statements: Sequence[str] = ()
    renew_statements: Sequence[str] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewCredential:
    """One lease's credential to create. ``parameters``: what the caller sent with the request beyond ``ttl`` (ssh:
    ``public_key``, ``valid_principals``), checked by the domain."""

    lease_id: str
    username: str
    password: str
    issued_at: datetime
    expires_at: datetime
    parameters: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CreatedCredential:
    """What the caller receives in ``data`` (shown once, never stored), and what revoking it later needs (stored in
    the lease's events: names and ids only, never a secret: e.g. an ssh certificate's serial, an IAM user name)."""

    data: dict[str, Any]
    revocation: dict[str, Any] = field(default_factory=dict)
    renewable: bool = True


class CredentialBackend(Protocol):
    async def verify(self) -> None:
        """Connect with the root credentials and check they can do the engine's work; ``TargetRefused`` /
        ``TargetUnavailable`` otherwise."""

    async def create(self, role: RoleRecipe, credential: NewCredential) -> CreatedCredential:
        """Create the credential on the target: the role's creation statements in one transaction where the target
        has transactions. On failure nothing may be left behind that ``revoke`` would not remove."""

    async def renew(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any], expires_at: datetime) -> None:
        """Extend the credential on the target to ``expires_at`` (the role's renew statements; nothing if none)."""

    async def revoke(self, role: RoleRecipe, username: str, revocation: Mapping[str, Any]) -> None:
        """Remove the credential from the target. Idempotent: revoking what is already gone succeeds."""

    async def rotate_root(self, new_password: str) -> dict[str, Any]:
        """Give the root account a new secret on the target; return the root secret's new data (e.g.
        ``{"username": ..., "password": new_password}``; aws: a new access key, the old one deleted)."""

    async def close(self) -> None:
        """Release connections (the backend is not used again)."""
