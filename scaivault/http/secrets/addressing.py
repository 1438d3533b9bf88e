"""Where a secrets request points: a tenant's secret (``/v1/secrets``, ``/v1/t/{tenant_id}/secrets``) or one of the
caller's partner's (``/v1/partner/secrets``)."""

from __future__ import annotations

from aiohttp import web

from projections.secrets.reader import Owner
from scaivault.auth.caller import Caller
from scaivault.domain.paths import parse_path
from scaivault.domain.secrets import SecretAddress

PARTNER_BASE = "/v1/partner/secrets"


def partner_scoped(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    return resource is not None and resource.canonical.startswith(PARTNER_BASE)


def owner_of(request: web.Request, who: Caller) -> Owner:
    if partner_scoped(request):
        partner_id = who.require_partner()
        return Owner(owner=partner_id, partner_id=partner_id, tenant_id=None)
    tenant_id = who.require_tenant()
    return Owner(owner=tenant_id, partner_id=who.partner_id or "", tenant_id=tenant_id)


def address_of(request: web.Request, who: Caller) -> SecretAddress:
    """The secret the request's path names (checked once, here: a valid path is already canonical)."""
    path = parse_path(request.match_info["path"])
    return owner_of(request, who).address(path)

