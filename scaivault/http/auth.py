"""/v1/auth: who am I, and token introspection (spec reference/authentication)."""

from __future__ import annotations

from aiohttp import web

from scaivault.domain.errors import InsufficientScope, ScaiVaultError
from scaivault.http.context import authenticated_principal, caller
from scaivault.http.keys import CONTAINER
from scaivault.http.responses import json_response, read_json_object
from scaivault.http.schemas import IntrospectIn, parse_body


async def whoami(request: web.Request) -> web.Response:
    principal = (await caller(request)).principal
    return json_response(
        {
            "identity_id": principal.identity_id,
            "identity_type": principal.identity_type,
            "display_name": principal.display_name or principal.identity_id.partition(":")[2],
            "tenant_id": principal.tenant_id,
            "partner_id": principal.partner_id,
            "scopes": sorted(principal.scopes),
            "groups": list(principal.groups),
            "roles": sorted(principal.roles),
            "mfa_verified_at": principal.mfa_verified_at,
            "token_expires_at": principal.expires_at,
        }
    )


async def introspect(request: web.Request) -> web.Response:
    """Validate another token without using it. Invalid tokens are a 200 with ``{"active": false}``."""
    principal = await authenticated_principal(request)
    if not principal.has_scope("admin"):
        raise InsufficientScope("This request needs the scope admin", required_scope="admin")
    body = parse_body(IntrospectIn, await read_json_object(request))
    try:
        subject = await request.app[CONTAINER].authenticator.authenticate(f"Bearer {body.token}")
    except ScaiVaultError:
        return json_response({"active": False})
    return json_response(
        {
            "active": True,
            "identity_id": subject.identity_id,
            "identity_type": subject.identity_type,
            "tenant_id": subject.tenant_id,
            "partner_id": subject.partner_id,
            "scopes": sorted(subject.scopes),
            "roles": sorted(subject.roles),
            "token_type": subject.token_kind,
            "expires_at": subject.expires_at,
            "issued_at": subject.issued_at,
        }
    )


whoami.audit_action = "auth_whoami"  # type: ignore[attr-defined]
introspect.audit_action = "auth_introspect"  # type: ignore[attr-defined]


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/auth/whoami", whoami)
    app.router.add_post("/v1/auth/introspect", introspect)
