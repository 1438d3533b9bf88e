"""Reading rotation: policies, a policy's history, and the secrets due for rotation (``/v1/rotation/...``).

A caller sees its tenant's rotation policies only; any other id answers ``rotation_policy_not_found``. Listings
page by id (policy ids in id order, history ids in time order); a cursor is bound to its listing's parameters.

The due list names secrets: a caller without the ``admin`` scope sees only the paths it may list, decided as
``GET /v1/secrets`` decides (the authorizer's listing plan: its role, or the rules of its policies granting ``list``
whose conditions hold now; 403 when none could show anything).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg
from pydantic import Field

from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain.errors import RotationPolicyNotFound
from scaivault.domain.policies import ListingPlan
from scaivault.domain.rotation import HISTORY_FIELDS
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]
HistoryStatus = Literal["success", "failed", "pending"]
MAX_DUE = 1000
# A caller who may list few of the due secrets: at most this many due rows are examined for its list.
DUE_SCAN_BUDGET = 10_000
ADMIN_SCOPE = "admin"

_POLICY_COLUMNS = """p.policy_id, p.name, p.description, p.interval, p.interval_seconds, p.grace_period, p.warn_before,
    p.auto_generate, p.secret_policy_id, p.webhook_ids, p.is_active, p.created_at, p.created_by, p.updated_at,
    p.updated_by,
    (SELECT count(*) FROM scaivault_secret_schedules s
     WHERE s.owner = p.owner AND s.rotation_policy_id = p.policy_id AND s.live AND NOT s.deleted) AS secrets_count"""


class PolicyListCursor(CursorState):
    v: Literal[1]
    active_only: bool
    after: str = Field(max_length=80)


class HistoryCursor(CursorState):
    v: Literal[1]
    policy_id: str
    status: HistoryStatus | None
    after: str = Field(max_length=80)


def policy_document(row: Row) -> dict[str, Any]:
    return {
        "id": row["policy_id"],
        "name": row["name"],
        "description": row["description"],
        "interval": row["interval"],
        "interval_seconds": row["interval_seconds"],
        "grace_period": row["grace_period"],
        "warn_before": ",".join(row["warn_before"]) or None,
        "auto_generate": row["auto_generate"],
        "secret_policy_id": row["secret_policy_id"],
        "webhook_ids": list(row["webhook_ids"]),
        "is_active": row["is_active"],
        "secrets_count": row["secrets_count"],
        "created_at": row["created_at"],
        "created_by": row["created_by"],
        "updated_at": row["updated_at"],
        "updated_by": row["updated_by"],
    }


def history_document(row: Row) -> dict[str, Any]:
    document = {name: row[name] for name in HISTORY_FIELDS if name in row}
    document["id"], document["rotation_policy_id"], document["secret_path"] = row["id"], row["policy_id"], row["path"]
    return {name: document.get(name) for name in HISTORY_FIELDS}


class RotationReader:
    def __init__(
        self, pool: asyncpg.Pool, authorizer: Authorizer, *, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._pool = pool
        self._authorizer = authorizer
        self._clock = clock

    async def policies(self, owner: str, *, active_only: bool, limit: int, cursor: str | None) -> dict[str, Any]:
        state = decode_cursor(cursor, PolicyListCursor, expected={"active_only": active_only})
        rows = await self._pool.fetch(
            f"""SELECT {_POLICY_COLUMNS} FROM scaivault_rotation_policies p
                WHERE p.owner = $1 AND (NOT $2 OR p.is_active) AND p.policy_id > coalesce($3, '')
                ORDER BY p.policy_id LIMIT $4""",
            owner, active_only, state.after if state else None, limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(
            PolicyListCursor(v=1, active_only=active_only, after=row["policy_id"])
        ))
        return page.document("data", policy_document)

    async def policy(self, owner: str, policy_id: str) -> dict[str, Any]:
        row = await self._pool.fetchrow(
            f"SELECT {_POLICY_COLUMNS} FROM scaivault_rotation_policies p WHERE p.owner = $1 AND p.policy_id = $2",
            owner, policy_id,
        )
        if row is None:
            raise RotationPolicyNotFound(rotation_policy_id=policy_id[:64])
        return policy_document(row)

    async def history(
        self, owner: str, policy_id: str, *, status: HistoryStatus | None, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """A page of the policy's rotations, newest first. A deleted policy's history stays readable."""
        state = decode_cursor(cursor, HistoryCursor, expected={"policy_id": policy_id, "status": status})
        rows = await self._pool.fetch(
            """SELECT * FROM scaivault_rotation_history
               WHERE owner = $1 AND policy_id = $2 AND ($3::text IS NULL OR status = $3)
                 AND ($4::text IS NULL OR id < $4)
               ORDER BY id DESC LIMIT $5""",
            owner, policy_id, status, state.after if state else None, limit + 1,
        )
        if not rows and state is None:
            await self.policy(owner, policy_id)  # an unknown policy is 404, a quiet one an empty page
        page = page_of(rows, limit, lambda row: encode_cursor(
            HistoryCursor(v=1, policy_id=policy_id, status=status, after=row["id"])
        ))
        return page.document("data", history_document)

    async def due(
        self, caller: Caller, *, within_hours: int, include_overdue: bool, policy_id: str | None
    ) -> dict[str, Any]:
        """Secrets of the caller's tenant under active policies whose rotation falls due within ``within_hours``
        (and, with ``include_overdue``, those already past due), soonest first, at most MAX_DUE: all of them for a
        caller with the ``admin`` scope, else those the caller may list."""
        owner = caller.require_tenant()
        plan: ListingPlan | None = None
        if not caller.principal.has_scope(ADMIN_SCOPE):
            plan = await self._authorizer.listing(
                caller.principal, caller.tenant_id, caller.partner_id, "", caller.context()
            )
        at = self._clock()
        shown: list[Row] = []
        after: tuple[datetime, str] | None = None
        scanned = 0
        while len(shown) < MAX_DUE and scanned < DUE_SCAN_BUDGET:
            rows = await self._pool.fetch(
                """SELECT s.path, s.rotation_policy_id, p.name, s.rotation_due_at, s.last_rotated_at,
                          s.rotation_pending_due_at, s.rotation_overdue, s.current_version
                   FROM scaivault_secret_schedules s
                   JOIN scaivault_rotation_policies p ON p.owner = s.owner AND p.policy_id = s.rotation_policy_id
                   WHERE s.owner = $1 AND s.live AND NOT s.deleted AND p.is_active AND s.rotation_due_at IS NOT NULL
                     AND s.rotation_due_at <= $2 AND ($3 OR s.rotation_due_at > $4)
                     AND ($5::text IS NULL OR s.rotation_policy_id = $5)
                     AND ($7::text[] IS NULL
                          OR EXISTS (SELECT 1 FROM unnest($7::text[]) AS r(start) WHERE starts_with(s.path, r.start)))
                     AND ($8::timestamptz IS NULL OR (s.rotation_due_at, s.path) > ($8, $9::text))
                   ORDER BY s.rotation_due_at, s.path LIMIT $6""",
                owner, at + timedelta(hours=within_hours), include_overdue, at, policy_id, MAX_DUE,
                None if plan is None else list(plan.ranges), *(after or (None, None)),
            )
            scanned += len(rows)
            shown += [row for row in rows if plan is None or plan.visible(row["path"])]
            if len(rows) < MAX_DUE:
                break
            after = (rows[-1]["rotation_due_at"], rows[-1]["path"])
        return {"data": [_due_document(row, at) for row in shown[:MAX_DUE]], "as_of": at}


def _due_document(row: Row, at: datetime) -> dict[str, Any]:
    if row["rotation_overdue"]:
        status = "overdue"
    elif row["rotation_pending_due_at"] is not None:
        status = "awaiting_value"
    else:
        status = "due" if row["rotation_due_at"] <= at else "scheduled"
    return {
        "secret_path": row["path"], "rotation_policy_id": row["rotation_policy_id"],
        "rotation_policy_name": row["name"], "due_at": row["rotation_due_at"],
        "overdue": row["rotation_due_at"] <= at, "status": status, "current_version": row["current_version"],
        "last_rotated_at": row["last_rotated_at"],
    }
