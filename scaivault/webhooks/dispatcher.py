"""The outbox worker: sends the deliveries the fan-out queued in ``scaivault_webhook_deliveries`` and records each try.

- **Claiming.** Due pending rows are claimed with ``FOR UPDATE SKIP LOCKED`` and leased (``next_attempt_at`` moved
  ``lease_seconds`` ahead) in one statement that also returns each row's envelope and target, so several servers
  may run the dispatcher on one database and a crashed one's claims come due again after the lease.
- **Order.** Per lane (target, ordering key) only the pending row with the lowest feed position is ``ready``
  (``scaivault.webhooks.outbox``), so one path's events reach a receiver in log order, one at a time (a retried
  delivery holds back the later ones; a dead letter releases them), and a claim reads only ready rows, however
  long the queues behind them. Events without a path have their own key: no order to keep.
- **Concurrency.** At most ``concurrency`` sends in flight, at most ``per_target`` of them for one target, so a slow
  receiver never holds up the others; requests never wait on the dispatcher.
- **Results.** A recorder beside the claims (on a connection of its own) records whatever finished meanwhile in one
  transaction that also readies the next row of each lane it finished, which frees those sends' places for the next
  claim. 2xx is
  success; anything else is retried after ``uniform(0, min(retry_cap, retry_base * 2**(attempt-1)))`` seconds (full
  jitter) until ``max_attempts`` tries failed: then ``failed`` (the dead letter, kept and redeliverable).
- **Targets.** A disabled webhook or inactive subscription fails its deliveries as they come due (error says why);
  a deleted one's rows are removed. An event trimmed from the feed before it could be sent fails likewise.
- **Wake-ups.** The fan-out's NOTIFY on ``scaivault_feed`` after each batch, each recording of finished sends (the
  next row of their keys may go), a redelivery in this process (``wake``), and a poll every ``poll_seconds`` for
  retries.
Delivery state is this worker's operational state, not events (see the table's comment in migration 0018).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from scaivault.clock import utcnow
from scaivault.crypto.aead import DecryptionFailed
from scaivault.crypto.keyring import KeyDestroyed
from scaivault.eventstore.recorder import EventStoreListener
from scaivault.webhooks.client import SendResult, WebhookClient
from scaivault.webhooks.outbox import lock_lanes, promote_heads, repair_lanes
from scaivault.webhooks.signing import sign
from scaivault.webhooks.targets import SigningSecrets

log = logging.getLogger(__name__)

FEED_CHANNEL = "scaivault_feed"
# Claims and results are committed without waiting for the WAL flush: a database crash may forget the last few,
# and then those deliveries are sent again, which at-least-once delivery (with event ids to de-duplicate) allows.
ASYNC_COMMIT = "SET LOCAL synchronous_commit = off"
# How often lanes are checked for a head left waiting (see scaivault.webhooks.outbox).
REPAIR_SECONDS = 60.0
# Candidates looked at per claim, before the per-target limits pick among them.
CANDIDATES_PER_CLAIM = 1000

_CLAIM = """
WITH candidates AS (
    SELECT d.delivery_id, d.target_kind || ':' || d.target_id AS target, d.next_attempt_at,
           row_number() OVER (PARTITION BY d.target_kind, d.target_id ORDER BY d.next_attempt_at, d.delivery_id) AS n
    FROM (SELECT * FROM scaivault_webhook_deliveries d
          WHERE d.status = 'pending' AND d.ready AND d.next_attempt_at <= $1
          ORDER BY d.next_attempt_at LIMIT $6) d
), allowed AS (
    SELECT c.delivery_id FROM candidates c
    LEFT JOIN unnest($3::text[], $4::int[]) AS busy(target, in_flight) ON busy.target = c.target
    WHERE c.n <= $5 - coalesce(busy.in_flight, 0)
    ORDER BY c.next_attempt_at LIMIT $2
), locked AS (
    SELECT d.delivery_id FROM scaivault_webhook_deliveries d JOIN allowed USING (delivery_id)
    WHERE d.status = 'pending' AND d.ready AND d.next_attempt_at <= $1
    FOR UPDATE OF d SKIP LOCKED
), claimed AS (
    UPDATE scaivault_webhook_deliveries d SET next_attempt_at = $7
    FROM locked WHERE d.delivery_id = locked.delivery_id
    RETURNING d.delivery_id, d.target_kind, d.target_id, d.ordering_key, d.tenant_id, d.event_id, d.attempts
)
SELECT c.*, f.envelope,
       coalesce(w.url, s.url) AS url,
       coalesce(w.secret_ciphertext, s.secret_ciphertext) AS secret_ciphertext,
       coalesce(w.secret_key_id, s.secret_key_id) AS secret_key_id,
       (w.webhook_id IS NOT NULL OR s.subscription_id IS NOT NULL) AS target_exists,
       CASE WHEN c.target_kind = 'webhook' THEN coalesce(w.enabled, false)
            ELSE coalesce(s.status = 'active' AND s.url IS NOT NULL AND s.secret_ciphertext IS NOT NULL, false)
       END AS target_active
FROM claimed c
LEFT JOIN scaivault_event_feed f ON f.event_id = c.event_id
LEFT JOIN scaivault_webhooks w ON c.target_kind = 'webhook' AND w.webhook_id = c.target_id
LEFT JOIN scaivault_subscriptions s ON c.target_kind = 'subscription' AND s.subscription_id = c.target_id
"""

_RECORD = """
UPDATE scaivault_webhook_deliveries d
SET status = r.status, attempts = d.attempts + r.tried, next_attempt_at = r.next_attempt_at,
    last_attempt_at = coalesce(r.attempted_at, d.last_attempt_at), response_code = r.response_code, error = r.error,
    duration_ms = r.duration_ms, completed_at = r.completed_at
FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::int[], $7::text[],
            $8::int[], $9::timestamptz[])
     AS r(delivery_id, status, tried, next_attempt_at, attempted_at, response_code, error, duration_ms, completed_at)
WHERE d.delivery_id = r.delivery_id AND d.status = 'pending'
"""


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 1.0
    cap_seconds: float = 3600.0

    def delay(self, attempt: int, rng: Callable[[float, float], float] = random.uniform) -> float:
        """Full jitter: anywhere from 0 to the exponential ceiling of the ``attempt``-th failure."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** min(attempt - 1, 62))
        return rng(0.0, ceiling)


@dataclass(frozen=True)
class Outcome:
    """What became of one claimed delivery, as recorded."""

    delivery_id: str
    lane: tuple[str, str, str]  # (target kind, target id, ordering key)
    status: str
    tried: int
    next_attempt_at: datetime | None
    attempted_at: datetime | None
    response_code: int | None
    error: str | None
    duration_ms: int | None
    completed_at: datetime | None

    @property
    def target(self) -> str:
        return f"{self.lane[0]}:{self.lane[1]}"


def _lane(row: asyncpg.Record) -> tuple[str, str, str]:
    return (row["target_kind"], row["target_id"], row["ordering_key"])


class DeliveryDispatcher:
    def __init__(
        self, pool: asyncpg.Pool, secrets: SigningSecrets, client: WebhookClient, *, dsn: str,
        retry: RetryPolicy = RetryPolicy(), concurrency: int = 256, per_target: int = 32, lease_seconds: float = 60.0,
        poll_seconds: float = 1.0, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._secrets = secrets
        self._client = client
        self._dsn = dsn
        self.retry = retry
        self._concurrency = concurrency
        self._per_target = per_target
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._in_flight: dict[str, int] = {}
        self._finished: list[Outcome] = []
        self._wake = asyncio.Event()
        self._results = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        """Look for due deliveries now (a redelivery was queued)."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled: claim, send, record. Sends in flight when it is stopped are abandoned (their lease runs
        out and they are tried again)."""
        async with EventStoreListener(self._dsn, channel=FEED_CHANNEL) as listener:
            listening = asyncio.create_task(self._listen(listener), name="webhook-feed-listener")
            recording = asyncio.create_task(self._record_continuously(), name="webhook-delivery-recorder")
            repairing = asyncio.create_task(self._repair_now_and_then(), name="webhook-lane-repair")
            try:
                while True:
                    self._wake.clear()
                    await self.dispatch_once()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._poll_seconds)
            finally:
                for task in [listening, recording, repairing, *self._sends]:
                    task.cancel()
                await asyncio.gather(listening, recording, repairing, *self._sends, return_exceptions=True)

    async def _listen(self, listener: EventStoreListener) -> None:
        while True:
            if await listener.wait(self._poll_seconds):
                self._wake.set()

    async def _repair_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(REPAIR_SECONDS)
            try:
                await self.repair()
            except Exception as exc:  # noqa: BLE001 - tried again next time
                log.warning("repairing webhook delivery lanes failed: %s", type(exc).__name__)

    async def repair(self) -> int:
        """Make every waiting lane's head ready (the safety net of ``outbox``); returns how many were stuck."""
        async with self._pool.acquire() as conn:
            stuck = await repair_lanes(conn)
        if stuck:
            log.warning("%d webhook delivery lanes were waiting behind nothing; released", stuck)
            self._wake.set()
        return stuck

    async def _record_continuously(self) -> None:
        """Results are recorded as they come, beside the claims (on a connection of their own), and each
        recording frees its sends' places for the next claim."""
        while True:
            await self._results.wait()
            self._results.clear()
            try:
                await self._record_finished()
            except Exception as exc:  # noqa: BLE001 - kept and recorded on the next round
                log.warning("recording webhook deliveries failed: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
                self._results.set()
                continue
            self._wake.set()

    async def dispatch_once(self) -> int:
        """Claim what is due and start sending it; returns how many were started."""
        room = self._concurrency - sum(self._in_flight.values())
        if room <= 0:
            return 0
        now = self._clock()
        busy = [(target, count) for target, count in self._in_flight.items() if count]
        async with self._pool.acquire() as conn:
            async with conn.transaction():
                await conn.execute(ASYNC_COMMIT)
                rows = await conn.fetch(
                    _CLAIM, now, room, [t for t, _ in busy], [c for _, c in busy], self._per_target,
                    min(CANDIDATES_PER_CLAIM, 4 * room), now + self._lease,
                )
            prepared = [await self._prepare(conn, row, now) for row in rows]
        for row, secret in zip(rows, prepared, strict=True):
            target = f"{row['target_kind']}:{row['target_id']}"
            self._in_flight[target] = self._in_flight.get(target, 0) + 1
            if isinstance(secret, Outcome):
                self._finish(secret)
                continue
            task = asyncio.create_task(self._send(row, secret))
            self._sends.add(task)
            task.add_done_callback(self._sends.discard)
        return len(rows)

    async def _prepare(self, conn: asyncpg.Connection, row: asyncpg.Record, now: datetime) -> str | Outcome:
        """The signing secret to send ``row`` with, or the outcome of a delivery that cannot be sent."""
        if not row["target_exists"]:
            return self._not_sent(row, now, "removed", "the target was deleted")
        if not row["target_active"]:
            reason = "the webhook is disabled" if row["target_kind"] == "webhook" else "the subscription is not active"
            return self._not_sent(row, now, "failed", reason)
        if row["envelope"] is None:
            return self._not_sent(row, now, "failed", "the event is no longer retained")
        try:
            return await self._secrets.open(
                conn, ciphertext=row["secret_ciphertext"], data_key_id=row["secret_key_id"], owner=row["tenant_id"],
                target_id=row["target_id"],
            )
        except (KeyDestroyed, DecryptionFailed):
            return self._not_sent(row, now, "failed", "the signing secret can no longer be opened")

    @staticmethod
    def _not_sent(row: asyncpg.Record, now: datetime, status: str, error: str) -> Outcome:
        return Outcome(row["delivery_id"], _lane(row), status, 0, None, None, None, error, None, now)

    async def _send(self, row: asyncpg.Record, secret: str) -> None:
        try:
            request = sign(row["envelope"], secret, int(time.time()))
            attempted_at = self._clock()
            result = await self._client.send(row["url"], request)
        except Exception as exc:  # noqa: BLE001 - a send that broke is a failed try, never a lost delivery
            log.warning("webhook send failed unexpectedly: %s", type(exc).__name__)
            attempted_at, result = self._clock(), SendResult(False, None, 0, "internal error while sending")
        self._finish(self.outcome(row["delivery_id"], _lane(row), row["attempts"] + 1, attempted_at, result))

    def outcome(
        self, delivery_id: str, lane: tuple[str, str, str], attempt: int, attempted_at: datetime,
        result: SendResult,
    ) -> Outcome:
        """Success, a retry after the backoff, or the dead letter after ``max_attempts`` tries."""
        completed = attempted_at + timedelta(milliseconds=result.duration_ms)
        if result.success:
            status, next_at, completed_at = "success", None, completed
        elif attempt >= self.retry.max_attempts:
            status, next_at, completed_at = "failed", None, completed
        else:
            status, completed_at = "pending", None
            next_at = completed + timedelta(seconds=self.retry.delay(attempt))
        return Outcome(
            delivery_id, lane, status, 1, next_at, attempted_at, result.response_code, result.error,
            result.duration_ms, completed_at,
        )

    def _finish(self, outcome: Outcome) -> None:
        self._finished.append(outcome)
        self._results.set()

    async def _record_finished(self) -> None:
        if not self._finished:
            return
        finished, self._finished = self._finished, []
        removed = [o.delivery_id for o in finished if o.status == "removed"]
        recorded = [o for o in finished if o.status != "removed"]
        done = [o.lane for o in finished if o.status != "pending"]
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute(ASYNC_COMMIT)
                await lock_lanes(conn, {o.lane[:2] for o in finished if o.status != "pending"})
                if removed:
                    await conn.execute(
                        "DELETE FROM scaivault_webhook_deliveries WHERE delivery_id = ANY($1::text[])", removed
                    )
                if recorded:
                    await conn.execute(_RECORD, *_columns(recorded))
                await promote_heads(conn, done)
        except BaseException:
            self._finished = finished + self._finished  # recorded next time; the leases keep others off them
            raise
        for o in finished:
            left = self._in_flight.get(o.target, 1) - 1
            if left > 0:
                self._in_flight[o.target] = left
            else:
                self._in_flight.pop(o.target, None)


def _columns(outcomes: Sequence[Outcome]) -> list[list[Any]]:
    return [
        [o.delivery_id for o in outcomes], [o.status for o in outcomes], [o.tried for o in outcomes],
        [o.next_attempt_at for o in outcomes], [o.attempted_at for o in outcomes],
        [o.response_code for o in outcomes], [o.error for o in outcomes], [o.duration_ms for o in outcomes],
        [o.completed_at for o in outcomes],
    ]
