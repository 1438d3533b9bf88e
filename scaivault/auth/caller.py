"""Who is asking, for which tenant, from where: what every service that decides on a caller's behalf takes.

Built by the HTTP edge for a request (``scaivault/http/context.py``), or from what a background job recorded of the
request that started it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from scaivault.auth.principal import Principal
from scaivault.domain.errors import AccessDenied, InsufficientScope, InvalidRequest
from scaivault.domain.policies import IPAddress, RequestContext


@dataclass(frozen=True)
class Caller:
    principal: Principal
    tenant_id: str | None
    partner_id: str | None
    source_ip: IPAddress | None = None

    @property
    def identity_id(self) -> str:
        return self.principal.identity_id

    def require_scope(self, scope: str) -> None:
        if not self.principal.has_scope(scope):
            raise InsufficientScope(f"This request needs the scope {scope}", required_scope=scope)

    def require_any_scope(self, *scopes: str) -> None:
        if not any(self.principal.has_scope(scope) for scope in scopes):
            raise InsufficientScope(f"This request needs one of the scopes {', '.join(scopes)}",
                                    required_scope=scopes[0], accepted_scopes=list(scopes))

    def require_tenant(self) -> str:
        if self.tenant_id is None:
            raise InvalidRequest("No tenant: use /v1/t/{tenant_id}/... or the X-Tenant-ID header")
        return self.tenant_id

    def require_partner(self) -> str:
        if self.partner_id is None:
            raise AccessDenied("The token belongs to no partner")
        return self.partner_id

    def context(self, at: datetime | None = None) -> RequestContext:
        """What policy conditions see of this caller, now (or at ``at``)."""
        return RequestContext(
            at=at or datetime.now(UTC),
            source_ip=self.source_ip,
            mfa_verified_at=self.principal.mfa_verified_at,
        )
