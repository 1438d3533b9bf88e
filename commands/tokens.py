"""Issuing and revoking tokens of the built-in issuer and personal access tokens (the CLI's use cases)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import jwt

from projections.tenancy import partner_exists, tenant_partner
from scaivault.auth.pats import issue_pat, revoke_pat
from scaivault.auth.revocation import revoke
from scaivault.domain.errors import InvalidRequest, TenantNotFound
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id

if TYPE_CHECKING:
    from scaivault.bootstrap import Container


@dataclass(frozen=True)
class IssueToken:
    partner_id: str
    tenant_id: str | None
    identity_id: str
    scopes: tuple[str, ...]
    roles: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    ttl: timedelta = timedelta(hours=1)
    personal_access_token: bool = False


IDENTITY_PREFIXES = ("user:", "sa:")


async def issue_token(container: Container, cmd: IssueToken) -> str:
    partner_id = parse_partner_id(cmd.partner_id)
    if not cmd.identity_id.startswith(IDENTITY_PREFIXES) or len(cmd.identity_id) > 320:
        raise InvalidRequest("The identity is user:<email> or sa:<name>")
    if not cmd.scopes:
        raise InvalidRequest("A token needs at least one scope")
    async with container.pool.acquire() as conn:
        if cmd.tenant_id is not None:
            tenant_id = parse_tenant_id(cmd.tenant_id)
            if await tenant_partner(conn, tenant_id) != partner_id:
                raise TenantNotFound(
                    "No such tenant under that partner: run `scaivault tenants create` first", tenant_id=tenant_id
                )
        elif not await partner_exists(conn, partner_id):
            raise TenantNotFound("No such partner: run `scaivault tenants create` first", partner_id=partner_id)
        if cmd.personal_access_token:
            token, _ = await issue_pat(
                conn,
                identity_id=cmd.identity_id,
                tenant_id=cmd.tenant_id,
                partner_id=partner_id,
                scopes=list(cmd.scopes),
                roles=list(cmd.roles),
                groups=list(cmd.groups),
                ttl=cmd.ttl,
            )
            return token
    return container.issuer.issue(
        identity_id=cmd.identity_id,
        tenant_id=cmd.tenant_id,
        partner_id=partner_id,
        scopes=cmd.scopes,
        roles=cmd.roles,
        groups=cmd.groups,
        ttl=cmd.ttl,
    )


async def revoke_token(container: Container, token_or_id: str) -> bool:
    """Revoke a PAT (its text or pat_ id) or a JWT (its text or jti); servers drop it on the next NOTIFY or poll."""
    async with container.pool.acquire() as conn, conn.transaction():
        if token_or_id.startswith(("skt_", "pat_")):
            revoked = await revoke_pat(conn, token_or_id)
        else:
            jti, expires_at = token_or_id, datetime.now(timezone.utc) + timedelta(days=1)
            if token_or_id.count(".") == 2:  # a JWT: revoke its jti until it would have expired anyway
                claims = jwt.decode(token_or_id, options={"verify_signature": False})
                jti = str(claims.get("jti", ""))
                expires_at = datetime.fromtimestamp(int(claims.get("exp", 0)), timezone.utc)
            if not jti:
                raise InvalidRequest("That token has no jti to revoke")
            await revoke(conn, "jti", jti, expires_at)
            revoked = True
        return revoked
