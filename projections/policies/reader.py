"""Reading policies: listings, one policy with its bindings, bindings, and the dry run (``POST /v1/policies/test``).

What a caller sees is confined here: its tenant's policies and its partner's. A policy of any other owner answers
exactly like a missing one (``policy_not_found``), so no answer reveals another tenant's policies.

Listings page by id (ids sort by creation time); a cursor is bound to the listing's parameters (``scope`` and
``include_inactive``; the policy, for bindings), and one from any other listing is 400 ``invalid_cursor`` naming the
``cursor`` parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.policies import queries
from scaivault.auth.authorization import Authorizer, role_decision
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.errors import InvalidRequest, PolicyNotFound
from scaivault.domain.paths import parse_path
from scaivault.domain.policies import (
    RequestContext,
    Subject,
    canonical_identity,
    parse_ip,
)
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

# A policy document lists its bindings in full: a policy holds at most this many.
MAX_BINDINGS = 1000
PolicyScope = Literal["tenant", "partner"]
Row = Mapping[str, Any]


class PolicyListCursor(CursorState):
    v: Literal[1]
    scope: PolicyScope | None
    include_inactive: bool
    after: str = Field(max_length=64)


class BindingListCursor(CursorState):
    v: Literal[1]
    policy_id: str
    after: str = Field(max_length=64)


@dataclass(frozen=True)
class DryRunQuestion:
    """Would ``identity_id`` be allowed ``permission`` on ``path``, from ``source_ip``, at ``at`` (default: now)?
    ``mfa_verified``: with MFA done at ``mfa_verified_at`` (default: at ``at``)."""

    identity_id: str
    path: str
    permission: str
    source_ip: str | None = None
    mfa_verified: bool = False
    mfa_verified_at: datetime | None = None
    at: datetime | None = None


def visible_owners(caller: Caller) -> list[str]:
    """Whose policies the caller sees: its tenant's and that tenant's partner's."""
    return [owner for owner in (caller.tenant_id, caller.partner_id) if owner is not None]


def _owners(caller: Caller, scope: PolicyScope | None) -> list[str]:
    if scope is None:
        return visible_owners(caller)
    owner = caller.tenant_id if scope == "tenant" else caller.partner_id
    return [] if owner is None else [owner]


def _summary(row: Row) -> dict[str, Any]:
    return {
        "id": row["policy_id"],
        "name": row["name"],
        "scope": row["scope"],
        "rule_count": row["rule_count"],
        "binding_count": row["binding_count"],
        "is_active": row["is_active"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
    }


def _binding_document(binding: Row, at: datetime) -> dict[str, Any]:
    """A binding as the API shows it; ``expired`` as of ``at``."""
    return {
        "id": binding["binding_id"],
        "policy_id": binding["policy_id"],
        "identity_type": binding["identity_type"],
        "identity_id": binding["identity_id"],
        "expires_at": binding["expires_at"],
        "expired": binding["expires_at"] is not None and binding["expires_at"] <= at,
        "created_at": binding["created_at"],
        "created_by": binding["created_by"],
    }


class PolicyReader:
    def __init__(self, pool: asyncpg.Pool, authorizer: Authorizer, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._authorizer = authorizer
        self._clock = clock

    async def policies(
        self, caller: Caller, *, scope: PolicyScope | None, include_inactive: bool, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """A page of summaries in id order: the caller's tenant's and partner's policies, or one ``scope``'s."""
        state = decode_cursor(
            cursor, PolicyListCursor, expected={"scope": scope, "include_inactive": include_inactive}
        )
        rows = await queries.policy_rows(
            self._pool, _owners(caller, scope), at=self._clock(), include_inactive=include_inactive,
            after=state.after if state else None, limit=limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(PolicyListCursor(
            v=1, scope=scope, include_inactive=include_inactive, after=row["policy_id"]
        )))
        return page.document("policies", _summary)

    async def policy(self, caller: Caller, policy_id: str) -> dict[str, Any]:
        """One policy with all its bindings."""
        at = self._clock()
        row = await self._visible_policy(caller, policy_id, at)
        bindings = await queries.binding_rows(self._pool, policy_id, after=None, limit=MAX_BINDINGS)
        return {
            **_summary(row),
            "description": row["description"],
            "rules": row["rules"],
            "bindings": [_binding_document(binding, at) for binding in bindings],
            "created_by": row["created_by"],
            "updated_by": row["updated_by"],
        }

    async def bindings(self, caller: Caller, policy_id: str, *, limit: int, cursor: str | None) -> dict[str, Any]:
        """A page of the policy's bindings in id order, expired ones included (``expired: true``)."""
        at = self._clock()
        await self._visible_policy(caller, policy_id, at)
        state = decode_cursor(cursor, BindingListCursor, expected={"policy_id": policy_id})
        rows = await queries.binding_rows(
            self._pool, policy_id, after=state.after if state else None, limit=limit + 1
        )
        page = page_of(rows, limit, lambda row: encode_cursor(
            BindingListCursor(v=1, policy_id=policy_id, after=row["binding_id"])
        ))
        return page.document("bindings", lambda row: _binding_document(row, at))

    def binding_document(self, binding: Row) -> dict[str, Any]:
        """The document of a binding a command just made (``PolicyCommands.bind``'s answer)."""
        return _binding_document(binding, self._clock())

    async def dry_run(self, caller: Caller, question: DryRunQuestion) -> dict[str, Any]:
        """Would this identity be allowed? Evaluated on the current policies (no cache); changes nothing.

        The identity's groups are those the identity mirror knows (plus the token's, when testing oneself); a group
        id is evaluated as a member of that group; roles count only when testing oneself (a token carries them, the
        directory does not)."""
        tenant_id = caller.require_tenant()
        path = parse_path(question.path)
        identity_id = canonical_identity(question.identity_id)
        at = question.at or self._clock()
        source_ip = parse_ip(question.source_ip)
        if question.source_ip is not None and source_ip is None:
            raise InvalidRequest("context.source_ip is not an IP address", field="context.source_ip")
        mfa_at = (question.mfa_verified_at or at) if question.mfa_verified else None
        context = RequestContext(at=at, source_ip=source_ip, mfa_verified_at=mfa_at)
        testing_myself = identity_id == canonical_identity(caller.identity_id)
        token_groups = caller.principal.groups if testing_myself else ()
        groups = await self._authorizer.groups(tenant_id, identity_id, token_groups)
        if identity_id.startswith("group:"):  # "would this group be allowed?": as any member of it
            groups |= {identity_id}
        decision = role_decision(caller.principal, tenant_id, path, question.permission) if testing_myself else None
        if decision is None:
            decision = await self._authorizer.dry_run(
                tenant_id, caller.partner_id, Subject.of(identity_id, groups), path, question.permission, context
            )
        return {"identity_id": identity_id, "evaluated_at": at, **decision.document()}

    async def _visible_policy(self, caller: Caller, policy_id: str, at: datetime) -> Row:
        row = await queries.policy_row(self._pool, visible_owners(caller), policy_id, at=at)
        if row is None:  # another owner's policy answers exactly like a missing one
            raise PolicyNotFound(policy_id=policy_id[:64])
        return row
