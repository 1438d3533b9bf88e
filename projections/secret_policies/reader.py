"""Reading secret policies: listings, one policy, and previews (a sample value of a recipe, stored nowhere).

A caller sees its tenant's secret policies; another tenant's answers exactly like a missing one
(``secret_policy_not_found``). Listings page by id (ids sort by creation time); a cursor is bound to
``include_inactive``.

A preview is generated in a worker thread: key pairs and bcrypt hashes take CPU time the event loop must not wait on
(up to seconds: four RSA-4096 key pairs or bcrypt hashes of cost 14). At most PREVIEW_CONCURRENCY previews of a
process generate at once, the others wait their turn without a thread: the threads they would take are the default
executor's, which secret writes (checking values against their recipe) and auto-generated rotations use too.
Its value goes only into the response: no event, no read model, no log line, no access-record detail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

import asyncpg
from pydantic import Field

from projections.secret_policies import queries
from scaivault.auth.caller import Caller
from scaivault.clock import utcnow
from scaivault.domain import generators
from scaivault.domain.errors import SecretPolicyNotFound
from scaivault.pagination import CursorState, decode_cursor, encode_cursor, page_of

Row = Mapping[str, Any]
PREVIEW_CONCURRENCY = 2


class SecretPolicyListCursor(CursorState):
    v: Literal[1]
    include_inactive: bool
    after: str = Field(max_length=64)


def _document(row: Row) -> dict[str, Any]:
    return {
        "id": row["policy_id"],
        "name": row["name"],
        "policy_type": row["policy_type"],
        "fields": row["fields"],
        "is_active": row["is_active"],
        "description": row["description"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "created_by": row["created_by"],
        "updated_by": row["updated_by"],
    }


class SecretPolicyReader:
    def __init__(self, pool: asyncpg.Pool, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._pool = pool
        self._clock = clock
        self._previews = asyncio.Semaphore(PREVIEW_CONCURRENCY)

    async def policies(
        self, caller: Caller, *, include_inactive: bool, limit: int, cursor: str | None
    ) -> dict[str, Any]:
        """A page of the tenant's secret policies (full documents: a recipe is small) in id order."""
        state = decode_cursor(cursor, SecretPolicyListCursor, expected={"include_inactive": include_inactive})
        rows = await queries.secret_policy_rows(
            self._pool, caller.require_tenant(), include_inactive=include_inactive,
            after=state.after if state else None, limit=limit + 1,
        )
        page = page_of(rows, limit, lambda row: encode_cursor(SecretPolicyListCursor(
            v=1, include_inactive=include_inactive, after=row["policy_id"]
        )))
        return page.document("policies", _document)

    async def policy(self, caller: Caller, policy_id: str) -> dict[str, Any]:
        return _document(await self._visible(caller, policy_id))

    async def preview(self, caller: Caller, policy_id: str) -> dict[str, Any]:
        """A sample of what the policy generates (inactive policies too: a preview is how one tries a recipe)."""
        row = await self._visible(caller, policy_id)
        return {"secret_policy_id": policy_id, **await self.preview_recipe(row["fields"])}

    async def preview_recipe(self, fields: Any) -> dict[str, Any]:
        """A sample of what a recipe not stored generates (``ValidationFailed`` for an invalid recipe)."""
        async with self._previews:
            at = self._clock()
            data = await asyncio.to_thread(generators.generate, fields, at=at)
        return {"data": data, "generated_at": at}

    async def _visible(self, caller: Caller, policy_id: str) -> Row:
        row = await queries.secret_policy_row(self._pool, caller.require_tenant(), policy_id)
        if row is None:  # another tenant's policy answers exactly like a missing one
            raise SecretPolicyNotFound(secret_policy_id=policy_id[:64])
        return row
