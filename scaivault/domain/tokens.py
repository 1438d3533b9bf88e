"""Token lifecycle as events: personal access tokens issued and revoked, JWTs revoked.

The credential itself never enters an event: a PAT's hash lives in its own table (credential storage, like keys),
and the events say who got which rights, until when, and who took them away.
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

_NAMESPACE = uuid5(NAMESPACE_URL, "https://scaivault.dev/streams/tokens")


# Event classes are declared, not made by ``@event("Name")``, so that a type checker sees them; each keeps the name,
# and so the stored topic (``scaivault.domain.tokens:<Aggregate>.<Name>``), and the fields it was stored with.


class PersonalAccessToken(Aggregate):
    @staticmethod
    def create_id(pat_id: str) -> UUID:
        return uuid5(_NAMESPACE, pat_id)

    class Issued(Aggregate.Created):
        pat_id: str
        identity_id: str
        tenant_id: str | None
        partner_id: str
        scopes: list[str]
        roles: list[str]
        groups: list[str]
        expires_at: datetime
        at: datetime
        actor: str

    @event(Issued)
    def __init__(
        self,
        pat_id: str,
        identity_id: str,
        tenant_id: str | None,
        partner_id: str,
        scopes: list[str],
        roles: list[str],
        groups: list[str],
        expires_at: datetime,
        at: datetime,
        actor: str,
    ) -> None:
        self.pat_id = pat_id
        self.identity_id = identity_id
        self.expires_at = expires_at
        self.revoked_at: datetime | None = None

    def revoke(self, *, at: datetime, actor: str) -> bool:
        """Idempotent: revoking a revoked token records nothing new."""
        if self.revoked_at is not None:
            return False
        self._revoked(at=at, actor=actor)
        return True

    class Revoked(Aggregate.Event):
        at: datetime
        actor: str

    @event(Revoked)
    def _revoked(self, *, at: datetime, actor: str) -> None:
        self.revoked_at = at


class JwtRevocation(Aggregate):
    """One stream per revoked JWT id (``jti``)."""

    @staticmethod
    def create_id(jti: str) -> UUID:
        return uuid5(_NAMESPACE, "jti:" + jti)

    class Recorded(Aggregate.Created):
        jti: str
        expires_at: datetime | None
        at: datetime
        actor: str

    @event(Recorded)
    def __init__(self, jti: str, expires_at: datetime | None, at: datetime, actor: str) -> None:
        self.jti = jti
        self.expires_at = expires_at
