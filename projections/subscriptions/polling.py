"""Long polls and acknowledgements of polling subscriptions (spec reference/subscriptions).

A poll answers at once when events wait in the subscription's queue; otherwise it waits, holding no database
connection, until the fan-out announces new feed entries (``FeedSignal``: one LISTEN connection per process for
every waiting poll) or the timeout passes, and answers what then waits (``{"events": [], "has_more": false}`` after
a timeout with nothing).

Delivery is at least once. Every poll starts from the oldest entry not acknowledged (after ``since_event_id`` when
given), so what a consumer took but did not acknowledge comes again on its next poll, after a reconnect or not;
acknowledging removes entries from the queue.

Policies: a subscriber never learns of a secret it may not list. At every poll each entry's path is checked as a
listing would check it (``visibility.py``): the polling token must hold ``secrets:list`` and the caller's policies
(or role) must allow ``list`` on the path (the authorizer); entries it may not see are removed from the queue unseen.
Events without a path (policy and identity events) go to the tenant's administrators only. ``dropped_events``
counts, for an owner who does not administer the tenant, only drops on paths it may list.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from projections.fanout.projection import FEED_CHANNEL
from projections.subscriptions import queries
from projections.subscriptions.reader import SubscriptionReader
from projections.subscriptions.visibility import EntryVisibility
from scaivault.auth.authorization import Authorizer
from scaivault.auth.caller import Caller
from scaivault.domain.errors import AccessDenied, InvalidRequest
from scaivault.domain.subscriptions import POLLING, same_identity
from scaivault.eventstore.recorder import EventStoreListener

# Waiting polls look again this often even without a NOTIFY (a hint that a dropped connection may have missed).
RECHECK_SECONDS = 5.0
Row = Mapping[str, Any]


class FeedSignal:
    """Wakes every waiting poll of this process when the feed grows. ``ticket`` before looking, ``wait`` after: a
    notification that comes in between is not missed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def ticket(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    @staticmethod
    async def wait(ticket: asyncio.Event, timeout: float) -> bool:
        try:
            await asyncio.wait_for(ticket.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self, dsn: str, recheck_seconds: float = RECHECK_SECONDS) -> None:
        """The per-process job: LISTEN on the feed's channel and wake the polls (also every ``recheck_seconds``)."""
        async with EventStoreListener(dsn, channel=FEED_CHANNEL) as listener:
            while True:
                await listener.wait(recheck_seconds)
                self.notify()


@dataclass(frozen=True)
class PollRequest:
    timeout: float
    since_event_id: str | None
    max_events: int


class SubscriptionPolls:
    def __init__(self, pool: asyncpg.Pool, reader: SubscriptionReader, authorizer: Authorizer, signal: FeedSignal):
        self._pool = pool
        self._reader = reader
        self._visibility = EntryVisibility(pool, authorizer)
        self._signal = signal

    async def poll(self, caller: Caller, subscription_id: str, request: PollRequest) -> dict[str, Any]:
        row = await self._owned(caller, subscription_id)
        if row["delivery_type"] != POLLING:
            raise InvalidRequest("A push (webhook) subscription is not polled", subscription_id=subscription_id)
        after = await self._position_after(caller, request.since_event_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + request.timeout
        while True:
            ticket = self._signal.ticket()
            events, has_more = await self._take(caller, subscription_id, after, request.max_events)
            remaining = deadline - loop.time()
            if events or remaining <= 0:
                break
            await self._signal.wait(ticket, remaining)
        return {
            "events": events,
            "has_more": has_more,
            "dropped_events": await self._visibility.dropped_events(caller, subscription_id),
        }

    async def acknowledge(self, caller: Caller, subscription_id: str, event_ids: Sequence[str]) -> dict[str, Any]:
        await self._owned(caller, subscription_id)
        async with self._pool.acquire() as conn:
            acknowledged = await queries.acknowledge(conn, subscription_id, event_ids)
        return {"acknowledged": acknowledged}

    async def _owned(self, caller: Caller, subscription_id: str) -> Row:
        """Only the owner polls and acknowledges; an administrator who may see the subscription is refused, anyone
        else is told it does not exist."""
        row = await self._reader.visible_row(caller, subscription_id)
        if not same_identity(row["identity_id"], caller.identity_id):
            raise AccessDenied("Only the subscription's owner may poll it or acknowledge its events",
                               reason="owner_only", subscription_id=subscription_id)
        return row

    async def _position_after(self, caller: Caller, since_event_id: str | None) -> int:
        if since_event_id is None:
            return 0
        position = await queries.feed_position(self._pool, caller.require_tenant(), since_event_id)
        if position is None:
            raise InvalidRequest("'since_event_id' names no event this tenant's subscriptions can still receive",
                                 parameter="since_event_id")
        return position

    async def _take(
        self, caller: Caller, subscription_id: str, after: int, max_events: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``max_events`` entries the caller may see, oldest first, and whether more wait; entries it may not
        see are removed on the way."""
        visible: list[Row] = []
        hidden: list[int] = []
        more = False
        while not more:
            rows = await queries.queued_events(self._pool, subscription_id, after=after, limit=max_events + 1)
            for row in rows:
                if len(visible) == max_events:
                    more = True
                    break
                if await self._visibility.may_see(caller, row["path"]):
                    visible.append(row)
                else:
                    hidden.append(row["feed_position"])
            if len(rows) <= max_events:
                break
            after = rows[-1]["feed_position"]
        if hidden or visible:
            async with self._pool.acquire() as conn:
                if hidden:
                    await queries.remove_positions(conn, subscription_id, hidden)
                if visible:
                    await queries.mark_delivered(conn, subscription_id, [row["feed_position"] for row in visible])
        return [row["envelope"] for row in visible], more
