"""Issuing and revoking tokens: built-in issuer JWTs and personal access tokens (the CLI's use cases).

Issuing a PAT and revoking any token are state changes, so each is an event appended in the same transaction that
stores the PAT's hash or the revocation; minting a JWT changes no state (it is verified by signature alone)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import jwt

from commands.ports import TenancyLookup
from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner
from scaivault.auth.issuer import BuiltinIssuer
from scaivault.auth.pats import PAT_PREFIX, find_pat, issue_pat, revoke_pat
from scaivault.auth.revocation import revoke
from scaivault.clock import utcnow
from scaivault.domain.errors import InvalidRequest, TenantNotFound
from scaivault.domain.tenancy import parse_partner_id, parse_tenant_id
from scaivault.domain.tokens import JwtRevocation, PersonalAccessToken

IDENTITY_PREFIXES = ("user:", "sa:")


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
    actor: str = "system:cli"


class _Rights(TypedDict):
    """Who a token is for and what it lets them do: the same for a JWT, a PAT, and the PAT's Issued event."""

    identity_id: str
    tenant_id: str | None
    partner_id: str
    scopes: list[str]
    roles: list[str]
    groups: list[str]


class TokenCommands:
    def __init__(self, runner: UnitOfWorkRunner, issuer: BuiltinIssuer, tenancy: TenancyLookup) -> None:
        self._runner = runner
        self._issuer = issuer
        self._tenancy = tenancy

    async def issue(self, cmd: IssueToken) -> str:
        partner_id = parse_partner_id(cmd.partner_id)
        tenant_id = parse_tenant_id(cmd.tenant_id) if cmd.tenant_id is not None else None
        if not cmd.identity_id.startswith(IDENTITY_PREFIXES) or len(cmd.identity_id) > 320:
            raise InvalidRequest("The identity is user:<email> or sa:<name>")
        if not cmd.scopes:
            raise InvalidRequest("A token needs at least one scope")

        async def work(uow: UnitOfWork) -> str:
            if tenant_id is not None:
                if await self._tenancy.partner_of(uow.conn, tenant_id) != partner_id:
                    raise TenantNotFound(
                        "No such tenant under that partner: run `scaivault tenants create` first", tenant_id=tenant_id
                    )
            elif not await self._tenancy.partner_exists(uow.conn, partner_id):
                raise TenantNotFound("No such partner: run `scaivault tenants create` first", partner_id=partner_id)
            rights: _Rights = {
                "identity_id": cmd.identity_id,
                "tenant_id": tenant_id,
                "partner_id": partner_id,
                "scopes": list(cmd.scopes),
                "roles": list(cmd.roles),
                "groups": list(cmd.groups),
            }
            if not cmd.personal_access_token:
                return self._issuer.issue(**rights, ttl=cmd.ttl)
            token, pat_id = await issue_pat(uow.conn, **rights, ttl=cmd.ttl)
            now = utcnow()
            uow.add(PersonalAccessToken(pat_id=pat_id, **rights, expires_at=now + cmd.ttl, at=now, actor=cmd.actor))
            return token

        return await self._runner.run(work)

    async def revoke(self, token_or_id: str, *, actor: str = "system:cli") -> bool:
        """Revoke a PAT (its text or pat_ id) or a JWT (its text or jti); servers drop it on the NOTIFY or next poll.
        False when there is nothing (more) to revoke."""

        token_or_id = token_or_id.strip()

        async def work(uow: UnitOfWork) -> bool:
            if token_or_id.startswith(("skt_", "pat_")):
                pat_id = token_or_id
                if token_or_id.startswith(PAT_PREFIX):
                    row = await find_pat(uow.conn, token_or_id)
                    if row is None:
                        return False
                    pat_id = row["id"]
                pat = await uow.get(PersonalAccessToken.create_id(pat_id))
                if pat is None or not await revoke_pat(uow.conn, pat_id):
                    return False
                pat.revoke(at=utcnow(), actor=actor)
                uow.add(pat)
                return True
            jti, expires_at = _jti_and_expiry(token_or_id)
            if await uow.get(JwtRevocation.create_id(jti)) is not None:
                return False
            await revoke(uow.conn, "jti", jti, expires_at)
            uow.add(JwtRevocation(jti=jti, expires_at=expires_at, at=utcnow(), actor=actor))
            return True

        return await self._runner.run(work)


_JTI = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _jti_and_expiry(token_or_jti: str) -> tuple[str, datetime | None]:
    """A JWT is revoked by its jti until it would have expired anyway; a bare jti is kept for ever. Anything else
    is refused: a revocation is an event, kept for ever, and must never hold a credential typed by mistake."""
    if token_or_jti.count(".") != 2:
        if not _JTI.fullmatch(token_or_jti) or token_or_jti.startswith(("eyJ", "skt_")):
            raise InvalidRequest("Give a PAT (skt_...), its pat_ id, a JWT, or a JWT's jti")
        return token_or_jti, None
    try:
        claims = jwt.decode(token_or_jti, options={"verify_signature": False})
    except jwt.InvalidTokenError:
        raise InvalidRequest("That is not a JWT") from None
    jti = claims.get("jti")
    if not isinstance(jti, str) or not _JTI.fullmatch(jti):
        raise InvalidRequest("That token has no jti to revoke")
    exp = claims.get("exp")
    return jti, datetime.fromtimestamp(int(exp), UTC) if isinstance(exp, (int, float)) else None
