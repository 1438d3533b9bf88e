"""Which roles a caller holds: the one place where mirrored roles meet token claims.

When the identity mirror knows the caller (a user of the token's tenant, by ``user:<email>`` or user id), its record
speaks for the token's roles up to the record's authority (the rank of the strongest actor that set the record's
roles or status, ``scaivault/domain/identities.py``): those token roles are replaced by the record's roles (none
when the user is not ACTIVE), and token roles ranked above the authority are kept, because the record's author had
no power over them. So a role granted or taken away here (or in ScaiKey, then synced) counts at once, without
waiting for tokens to expire, and a tenant admin who creates a record for a partner admin's address takes nothing
from it. An identity the mirror does not know keeps its token's roles (service accounts, partner-level tokens,
deployments that manage no identities). Roles are always derived from the token's own roles
(``Principal.token_roles``), never from roles derived before, so work done later for a caller (an audit export's
job) loses a role whose record is removed meanwhile.

The same records decide whether the identity is cut off altogether (``cut_off``: known, and no record ACTIVE), which
the authorizer asks before any policy.

Records are cached per identity for ``max_age`` seconds (2 s); this process forgets its cache when its own identity
commands change anything that counts for authorization, and when the authorizer learns of such a change made by
another process (the NOTIFY naming the tenant, milliseconds after the commit, or its generation); should that be
missed, other processes see a change within ``max_age`` at worst.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import asyncpg

from projections.identity.queries import role_records
from scaivault.auth.principal import Principal
from scaivault.domain.identities import RoleRecord, role_rank

MAX_AGE_SECONDS = 2.0


def effective_roles(token_roles: frozenset[str], records: Sequence[RoleRecord]) -> frozenset[str]:
    """The roles a token's holder has, given what the mirror holds of it (``records``: none for an identity it does
    not know). Should ScaiKey report two users with one address, only the roles both records leave count."""
    if not records:
        return token_roles
    return frozenset.intersection(*(_through(token_roles, record) for record in records))


def _through(token_roles: frozenset[str], record: RoleRecord) -> frozenset[str]:
    beyond_authority = {role for role in token_roles if role_rank(role) > record.authority}
    return frozenset(beyond_authority) | (record.roles if record.active else frozenset())


def cut_off(records: Sequence[RoleRecord]) -> bool:
    """The mirror holds the identity and none of its records is ACTIVE: suspended (or otherwise not active) users
    get nothing, neither roles nor anything policies grant (``scaivault/auth/authorization.py``)."""
    return bool(records) and not any(record.active for record in records)


class MirroredRoles:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_age: float = MAX_AGE_SECONDS,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._max_age = max_age
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[tuple[RoleRecord, ...], float]] = {}
        self._epochs: dict[str | None, int] = {}  # raised by every ``forget``: a read that straddles one is not kept

    async def effective(self, principal: Principal) -> Principal:
        """The principal with the roles it holds now (``effective_roles`` of the token's own roles)."""
        if principal.tenant_id is None:
            return principal
        roles = effective_roles(principal.claimed_roles, await self.records(principal.tenant_id, principal.identity_id))
        return principal if roles == principal.roles else replace(principal, roles=roles)

    async def suspended(self, tenant_id: str | None, identity_id: str) -> bool:
        """Is the identity cut off in the tenant (``cut_off``)?"""
        return tenant_id is not None and cut_off(await self.records(tenant_id, identity_id))

    async def records(self, tenant_id: str, identity_id: str) -> tuple[RoleRecord, ...]:
        """What the mirror holds of the identity in the tenant (``role_records``), cached for ``max_age``."""
        key = (tenant_id, identity_id.lower())
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[1] > now:
            return cached[0]
        epochs = self._epochs.get(None, 0), self._epochs.get(tenant_id, 0)
        records = tuple(await role_records(self._pool, tenant_id, identity_id))
        if (self._epochs.get(None, 0), self._epochs.get(tenant_id, 0)) == epochs:
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (records, now + self._max_age)
        return records

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop cached answers (of one tenant, or all)."""
        self._epochs[tenant_id] = self._epochs.get(tenant_id, 0) + 1
        if tenant_id is None:
            self._entries.clear()
        else:
            for key in [key for key in self._entries if key[0] == tenant_id]:
                del self._entries[key]
