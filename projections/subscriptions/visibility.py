"""What a subscriber may learn of its queue: the entries it may list, judged as a listing would judge them, when it
asks (docs/subscriptions.md, "Policies" and "Counts a subscriber is shown").

Polls answer only such entries (``polling.py``), and the counts shown to an owner who does not administer the tenant
(``queue.queued`` and ``dropped_events``, by GET and by polls) count only them: a count that included entries the
owner may not list would tell it that secrets it may not list changed. The fan-out cannot filter for the owner: what
the owner may list depends on the token it asks with (its scopes, its claimed groups, its MFA) and on the request
(source address, time), which only a request has. So the queue holds what the globs select, and every read filters:
the queue's entries (``queued``) and the drops counted per path (``scaivault_subscription_drops``) are summed over
the paths the caller may list now. Administrators (``caller_administers``) may list everything in the tenant: they
are shown the totals the fan-out keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from projections.subscriptions import queries
from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.domain.subscriptions import administers

LIST_SCOPE = "secrets:list"


def caller_administers(caller: Caller) -> bool:
    return administers(caller.principal.roles, caller.principal.tenant_id, caller.tenant_id)


@dataclass(frozen=True)
class QueueCounts:
    queued: int
    dropped_events: int
    last_dropped_at: datetime | None


class EntryVisibility:
    def __init__(self, pool: asyncpg.Pool, authorizer: Authorizer) -> None:
        self._pool = pool
        self._authorizer = authorizer

    async def may_see(self, caller: Caller, path: str | None) -> bool:
        """As a listing would answer: the token's ``secrets:list`` scope and the caller's policies (or role). Entries
        without a path (policy and identity events) are for the tenant's administrators only."""
        if path is None:
            return caller_administers(caller)
        if not caller.principal.has_scope(LIST_SCOPE):
            return False
        decision = await self._authorizer.decide(
            caller.principal, caller.tenant_id, caller.partner_id, path, "list", caller.context()
        )
        return decision.allowed

    async def counts(self, caller: Caller, subscription_ids: Sequence[str]) -> dict[str, QueueCounts] | None:
        """The queue counts the caller is shown for these subscriptions: None for an administrator (the totals),
        else what waits and what was dropped on the paths it may list now. Nothing is removed or marked."""
        if caller_administers(caller):
            return None
        if not subscription_ids:
            return {}
        judge = _Judge(self, caller)
        queued: dict[str, int] = {}
        for row in await queries.queued_by_path(self._pool, subscription_ids):
            if await judge.may_see(row["path"]):
                queued[row["subscription_id"]] = queued.get(row["subscription_id"], 0) + row["n"]
        dropped = await self._dropped(judge, subscription_ids)
        return {
            s: QueueCounts(queued.get(s, 0), *dropped.get(s, (0, None))) for s in subscription_ids
        }

    async def dropped_events(self, caller: Caller, subscription_id: str) -> int:
        """The ``dropped_events`` a poll answers: the total for an administrator, else the drops of paths the caller
        may list now."""
        if caller_administers(caller):
            state = await queries.queue_state(self._pool, subscription_id)
            return int(state["dropped_events"]) if state else 0
        dropped = await self._dropped(_Judge(self, caller), [subscription_id])
        return dropped.get(subscription_id, (0, None))[0]

    async def _dropped(
        self, judge: _Judge, subscription_ids: Sequence[str]
    ) -> dict[str, tuple[int, datetime | None]]:
        dropped: dict[str, tuple[int, datetime | None]] = {}
        for row in await queries.drops_by_path(self._pool, subscription_ids):
            if await judge.may_see(row["path"]):
                count, last = dropped.get(row["subscription_id"], (0, None))
                at = row["last_dropped_at"]
                dropped[row["subscription_id"]] = (count + row["dropped_events"], at if last is None else max(last, at))
        return dropped


class _Judge:
    """One caller's decisions within one read: each path judged once."""

    def __init__(self, visibility: EntryVisibility, caller: Caller) -> None:
        self._visibility = visibility
        self._caller = caller
        self._seen: dict[str | None, bool] = {}

    async def may_see(self, path: str | None) -> bool:
        seen = self._seen.get(path)
        if seen is None:
            seen = self._seen[path] = await self._visibility.may_see(self._caller, path)
        return seen
