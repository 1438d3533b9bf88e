"""Which roles a caller holds: the one place where mirrored roles meet token claims.

When the identity mirror knows the caller (a user of the token's tenant, by ``user:<email>`` or user id), the
mirror's roles replace the token's ``roles`` claim, so a role granted or taken away here (or in ScaiKey, then
synced) counts at once, without waiting for tokens to expire; a user not ACTIVE in the mirror has no roles. An
identity the mirror does not know keeps its token's roles (service accounts, partner-level tokens, deployments that
manage no identities).

Answers are cached per identity for ``max_age`` seconds (2 s); this process forgets its cache when its own commands
change roles, and other servers see a change within ``max_age``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import asyncpg

from projections.identity.queries import roles_of
from scaivault.auth.principal import Principal

MAX_AGE_SECONDS = 2.0


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
        self._entries: dict[tuple[str, str], tuple[frozenset[str] | None, float]] = {}

    async def effective(self, principal: Principal) -> Principal:
        """The principal with the roles it holds now."""
        if principal.tenant_id is None:
            return principal
        key = (principal.tenant_id, principal.identity_id.lower())
        now = self._clock()
        cached = self._entries.get(key)
        if cached is not None and cached[1] > now:
            roles = cached[0]
        else:
            found = await roles_of(self._pool, principal.tenant_id, principal.identity_id)
            roles = None if found is None else frozenset(found)
            if len(self._entries) >= self._max_entries:
                self._entries.clear()
            self._entries[key] = (roles, now + self._max_age)
        return principal if roles is None or roles == principal.roles else replace(principal, roles=roles)

    def forget(self, tenant_id: str | None = None) -> None:
        """Drop cached answers (of one tenant, or all)."""
        if tenant_id is None:
            self._entries.clear()
        else:
            for key in [key for key in self._entries if key[0] == tenant_id]:
                del self._entries[key]
