"""Who holds a token, with the roles they hold now: the one place where a token's verdict meets the identity mirror.

The authenticator says whose token it is and what it claims; the identity mirror's roles then replace the token's
where the mirror knows the identity (``projections/identity/roles.py: MirroredRoles.effective``). Requests
(``scaivault/http/context.py``), token introspection (``scaivault/http/auth.py``) and work done later for a caller (an
audit export's job: ``scaivault/audit/exports/credentials.py``) all go through here, so each sees the same roles.
"""

from __future__ import annotations

from typing import Protocol

from scaivault.auth.authenticator import TokenAuthenticator
from scaivault.auth.principal import Principal


class HeldRoles(Protocol):
    async def effective(self, principal: Principal) -> Principal:
        """The principal with the roles it holds now, derived from its token's own roles."""


class EffectivePrincipals:
    def __init__(self, authenticator: TokenAuthenticator, roles: HeldRoles) -> None:
        self._authenticator = authenticator
        self._roles = roles

    async def authenticate(self, authorization: str | None) -> Principal:
        """The holder of the bearer token in ``authorization`` (an ``Authorization`` header's value), with the roles
        it holds now; the authenticator's error for a token it refuses."""
        return await self._roles.effective(await self._authenticator.authenticate(authorization))

    async def recheck(self, principal: Principal) -> Principal:
        """A principal recorded earlier, as it stands now: its token must still be accepted (not expired, not
        revoked: ``TokenAuthenticator.recheck``), and its roles are derived again from its token's own roles."""
        await self._authenticator.recheck(principal)
        return await self._roles.effective(principal)
