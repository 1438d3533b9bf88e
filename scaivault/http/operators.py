"""Endpoints for the people who run the server, whose answers span every partner (metrics, detailed health)."""

from __future__ import annotations

from scaivault.auth.principal import Principal
from scaivault.domain.errors import AccessDenied, InsufficientScope


def require_operator(principal: Principal, what: str) -> None:
    """The ``admin`` scope and the ``super_admin`` role: one partner's admin must not see the others'."""
    if not principal.has_scope("admin"):
        raise InsufficientScope("This request needs the scope admin", required_scope="admin")
    if not principal.has_role("super_admin"):
        raise AccessDenied(f"{what} spans every partner: it needs the super_admin role")
