"""Who is calling, and for which tenant: authentication and tenant resolution for one request.

Tenant resolution (spec core-concepts/multi-tenancy): the ``/v1/t/{tenant_id}/`` prefix, else ``X-Tenant-ID``,
else the token's ``tenant_id`` claim. The first two name a tenant other than the token's own only for partner
admins, and only tenants of their own partner (any partner for ``super_admin``). A tenant outside the caller's
partner gets ``tenant_access_denied`` whether or not it exists, so no answer reveals another partner's tenants.
"""

from __future__ import annotations

from aiohttp import web

from commands.actor import Actor
from projections.tenancy.directory import TenantDirectory
from scaivault.auth.caller import Caller
from scaivault.auth.effective_principals import EffectivePrincipals
from scaivault.auth.principal import Principal
from scaivault.domain.errors import ScaiVaultError, TenantAccessDenied, TenantNotFound
from scaivault.domain.policies import parse_ip
from scaivault.domain.tenancy import parse_tenant_id
from scaivault.http.keys import ACCESS, CALLER, CLIENT_IP, PRINCIPAL, REQUEST_ID
from scaivault.metrics import Metrics
from scaivault.ratelimit.http import RequestCharges


class Callers:
    """Authenticates a request once, and resolves the tenant it acts in."""

    def __init__(
        self, principals: EffectivePrincipals, tenants: TenantDirectory, charges: RequestCharges, metrics: Metrics
    ) -> None:
        self._principals = principals
        self._tenants = tenants
        self._charges = charges
        self._metrics = metrics

    async def principal(self, request: web.Request) -> Principal:
        """Authenticate the request (once) and charge it to the caller's rate-limit bucket (RateLimited when
        empty); endpoints that act in no tenant need no more."""
        known = request.get(PRINCIPAL)
        if known is not None:
            return known
        try:
            # The identity mirror's roles win over the token's where it knows the caller.
            with self._metrics.stage["authenticate"]:
                principal = await self._principals.authenticate(request.headers.get("Authorization"))
        except ScaiVaultError as exc:
            await self._charges.charge_failed_authentication(request, exc)
            raise
        access = request.get(ACCESS)
        if access is not None:
            access.identity_id = principal.identity_id
            access.identity_type = principal.identity_type
            access.partner_id = principal.partner_id
            access.tenant_id = principal.tenant_id
        request[PRINCIPAL] = principal  # before charging: a refused charge must not authenticate twice
        await self._charges.charge_request(request, principal)
        return principal

    async def caller(self, request: web.Request) -> Caller:
        """Authenticate the request and resolve its tenant (once per request)."""
        known = request.get(CALLER)
        if known is not None:
            return known
        principal = await self.principal(request)
        requested = request.match_info.get("tenant_id") or request.headers.get("X-Tenant-ID") or None
        tenant_id, partner_id = await self._resolve_tenant(principal, requested)
        resolved = Caller(principal, tenant_id, partner_id, parse_ip(request[CLIENT_IP]))
        request[CALLER] = resolved
        access = request.get(ACCESS)
        if access is not None:
            access.tenant_id, access.partner_id = tenant_id, partner_id
        return resolved

    async def with_scope(self, request: web.Request, scope: str) -> Caller:
        """The caller, who must hold the token scope ``scope``."""
        who = await self.caller(request)
        who.require_scope(scope)
        return who

    async def with_any_scope(self, request: web.Request, *scopes: str) -> Caller:
        """The caller, who must hold one of ``scopes``."""
        who = await self.caller(request)
        who.require_any_scope(*scopes)
        return who

    async def in_tenant(self, request: web.Request, scope: str) -> tuple[Caller, str]:
        """The caller, holding ``scope``, and the tenant it acts in (a request that resolves to none is refused)."""
        who = await self.with_scope(request, scope)
        return who, who.require_tenant()

    async def _resolve_tenant(self, principal: Principal, requested: str | None) -> tuple[str | None, str | None]:
        directory = self._tenants
        if requested is None or requested == principal.tenant_id:
            if principal.tenant_id is None:  # a partner-level token: its partner must be one we know
                if principal.partner_id is None or not await directory.partner_exists(principal.partner_id):
                    raise TenantNotFound("The token's partner is not registered", partner_id=principal.partner_id)
                return None, principal.partner_id
            partner = await directory.partner_of(principal.tenant_id)
            if partner is None:
                raise TenantNotFound(tenant_id=principal.tenant_id)
            if principal.partner_id is not None and partner != principal.partner_id:
                raise TenantAccessDenied("The token's tenant does not belong to the token's partner")
            return principal.tenant_id, partner
        tenant_id = parse_tenant_id(requested)
        if not principal.is_partner_admin:
            raise TenantAccessDenied("Only partner admins may act in another tenant", tenant_id=tenant_id)
        partner = await directory.partner_of(tenant_id)
        if "super_admin" in principal.roles:
            if partner is None:
                raise TenantNotFound(tenant_id=tenant_id)
            return tenant_id, partner
        if partner is None or partner != principal.partner_id:
            raise TenantAccessDenied("The tenant is not one of your partner's tenants", tenant_id=tenant_id)
        return tenant_id, partner


def actor_of(request: web.Request, who: Caller) -> Actor:
    """The actor a command acts for: the caller, under the request's id."""
    return Actor.of(who, request[REQUEST_ID])
