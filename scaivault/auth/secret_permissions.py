"""What a caller may do to a secret, for commands (``commands.ports.SecretPermissions``): those that change secrets,
and an audit export's request, whose requester must be able to read its credentials secret. The same authorizer,
and so the same decisions, as reads."""

from __future__ import annotations

from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.domain.secrets import SecretAddress


class AuthorizedSecretPermissions:
    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer

    async def require(self, caller: Caller, address: SecretAddress, permission: str) -> None:
        await self._authorizer.require_on_secret(caller, address, permission)

    async def allows(self, caller: Caller, address: SecretAddress, permission: str) -> bool:
        """The scope ``secrets:<permission>`` and the policy permission; for a partner secret, a partner admin."""
        if address.partner_owned:
            return caller.principal.is_partner_admin
        if not caller.principal.has_scope(f"secrets:{permission}"):
            return False
        decision = await self._authorizer.decide(
            caller.principal, caller.tenant_id, caller.partner_id, address.path, permission, caller.context()
        )
        return decision.allowed
