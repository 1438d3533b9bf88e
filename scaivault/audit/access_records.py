"""Access records and the group-commit writer that makes them durable.

Each request's record becomes an ``AccessRecorded`` event. A write command appends it with its own events, in its
own transaction (so the record and the change commit together); every other request hands its record to
``AccessRecorder``, which appends the records of concurrent requests in one transaction (group commit) and releases
each request only once its record is durable. If that cannot happen within the audit timeout, the request fails
with 503: auditing is fail-closed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from scaivault.audit.access_encoding import stored_access_event
from scaivault.domain.access import AccessRecorded
from scaivault.domain.errors import ServiceUnavailable
from scaivault.domain.outcomes import Outcome
from scaivault.eventstore.append_functions import record_access
from scaivault.eventstore.locks import READ_MODEL_SWAP_KEY
from scaivault.eventstore.recorder import WAKEUP_COVERS_SECONDS
from scaivault.eventstore.repository import Repository
from scaivault.metrics import Metrics

log = logging.getLogger(__name__)

MAX_BATCH = 1000
MAX_REMEMBERED_STREAMS = 100_000  # last-access times remembered per process (forgotten all at once beyond it)
_EPOCH = datetime.min.replace(tzinfo=UTC)


@dataclass
class AccessRecord:
    recorded_at: datetime
    request_id: str
    method: str
    route: str
    action: str
    source_ip: str | None = None
    user_agent: str | None = None
    partner_id: str | None = None
    tenant_id: str | None = None
    identity_id: str | None = None
    identity_type: str | None = None
    secret_path: str | None = None
    status: int = 0
    error_code: str | None = None
    duration_ms: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    # Successful value reads of these secret streams refresh their last_accessed_at.
    accessed_streams: list[UUID] = field(default_factory=list)
    persisted: bool = False
    # What the request's command did, and how the edge that made this record reports an outcome (its status code):
    # a record that commits with a command needs its status before the answer exists.
    outcome: Outcome | None = None
    status_of: Callable[[Outcome], int] | None = None

    def settle(self, outcome: Outcome) -> None:
        """Before the record commits with a command: the status its edge gives the command's outcome."""
        self.outcome = self.outcome or outcome
        if self.status_of is not None:
            self.status = self.status_of(self.outcome)

    @property
    def success(self) -> bool:
        return 200 <= self.status < 400

    def event(self) -> AccessRecorded:
        """The record as an event (for a write command, which appends it with its own events). The group commit
        encodes the same fields straight to a stored event (``scaivault/audit/access_encoding.py``)."""
        return AccessRecorded.of(**self.storable_fields())

    def storable_fields(self) -> dict[str, Any]:
        """The event's fields. Every text field is made storable here (no NUL, other control characters or lone
        surrogates, bounded length): a request may carry anything in its path or headers, and one unstorable record
        must not fail a batch, stall the audit log or sit in the event log for ever."""
        return {
            "timestamp": self.recorded_at,
            "request_id": self.request_id,
            "method": _storable(self.method, 16),
            "route": _storable(self.route, 256),
            "action": self.action,
            "partner_id": _storable(self.partner_id, 128),
            "tenant_id": _storable(self.tenant_id, 128),
            "identity_id": _storable(self.identity_id, 320),
            "identity_type": _storable(self.identity_type, 32),
            "secret_path": _storable(self.secret_path, 512),
            "status": self.status,
            "success": self.success,
            "error_code": self.error_code,
            "source_ip": _storable(self.source_ip, 64),
            "user_agent": _storable(self.user_agent, 512),
            "duration_ms": self.duration_ms,
            "extra": self.extra,
            "accessed_streams": list(self.accessed_streams) if self.success else [],
        }


# Control characters, and lone surrogates (how aiohttp reads a header's bytes that are not UTF-8): UTF-8, hence the
# event store, cannot hold those.
_UNSTORABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _storable(value: str | None, limit: int) -> str | None:
    if not value:
        return None
    value = value[:limit]
    return value if value.isascii() and value.isprintable() else _UNSTORABLE.sub("\ufffd", value)


_TOUCH = "SELECT scaivault_touch_last_access($1::uuid[], $2::timestamptz[])"  # migration 0014


def last_access_times(accesses: Iterable[tuple[datetime, Sequence[UUID]]]) -> tuple[list[UUID], list[datetime]]:
    """The last-access times implied by (time, secret streams read) pairs, by stream, in a fixed order (so
    concurrent batches never deadlock on those rows). Times are cut to whole seconds: a hot secret's row is then
    rewritten once a second, not once per read (each rewrite is a new row version that every read of it wades
    through), and the result stays the same however events are grouped into batches, live or in a rebuild."""
    touched: dict[UUID, datetime] = {}
    for at, stream_ids in accesses:
        if not stream_ids:
            continue
        at = at.replace(microsecond=0)
        for stream_id in stream_ids:
            touched[stream_id] = max(at, touched.get(stream_id, at))
    streams = sorted(touched)
    return streams, [touched[s] for s in streams]


async def touch_last_access(
    conn: asyncpg.Connection, accesses: Iterable[tuple[datetime, Sequence[UUID]]]
) -> None:
    """Refresh last-access times from (time, secret streams read) pairs of AccessRecorded events: a read model
    written in the transaction that appends them (and replayed the same way by a rebuild)."""
    streams, times = last_access_times(accesses)
    if streams:
        await conn.execute(_TOUCH, streams, times)


class AccessRecorder:
    """Group commit for access records: one transaction per batch of concurrent requests."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        repository: Repository,
        *,
        timeout: float,
        metrics: Metrics | None = None,
        skip: bool = False,
        gather_seconds: float = 0.002,
    ) -> None:
        """``skip`` (benchmarks only: SCAIVAULT_UNSAFE_SKIP_READ_AUDIT) records nothing, to measure what auditing
        costs."""
        self._skip = skip
        self._pool = pool
        self._repository = repository
        self._metrics = metrics
        self._timeout = timeout
        self._queue: list[_Pending] = []
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._gather = gather_seconds
        self._last_batch = 0  # records in the batch flushed last
        self._woke_runners_at = -WAKEUP_COVERS_SECONDS  # loop time of the last committed NOTIFY
        # The last-access time (a whole second) this process last committed per secret stream: a hot secret is read
        # many times a second, and only the first read of each second can move its row.
        self._last_access_written: dict[UUID, datetime] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="access-recorder")

    async def close(self) -> None:
        """Flush what is queued, then stop."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def record(self, record: AccessRecord) -> None:
        """Return once ``record`` is durable; raise ServiceUnavailable if that does not happen in time.

        The deadline is kept by the group commit, not by a timer per request: each batch must commit before its
        oldest record's deadline (records queue in arrival order, so that is the earliest), and a batch whose
        oldest deadline has passed fails without being tried."""
        if self._skip:
            return
        if self._closing:
            raise ServiceUnavailable("The server is shutting down")
        loop = asyncio.get_running_loop()
        pending = _Pending(record, loop.create_future(), loop.time() + self._timeout)
        self._queue.append(pending)
        self._wakeup.set()
        try:
            await pending.future
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if self._metrics is not None:
                self._metrics.access_record_failures.inc()
            log.warning("access record not durable: %s", type(exc).__name__)
            raise ServiceUnavailable("The access record could not be made durable; try again") from None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if self._last_batch > 1 and self._gather:
                    # PostgreSQL's commit_delay, for our group commit: when requests are arriving together, a
                    # moment's wait lets more of them share the next transaction (docs/adr/0003). A lone request
                    # (the last batch held one record) is never held back.
                    await asyncio.sleep(self._gather)
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                self._last_batch = len(batch)
                try:
                    await self._flush(batch)
                except BaseException as exc:  # nothing may leave a request waiting for ever
                    self._fail(batch, OSError(f"access recorder: {type(exc).__name__}"))
                    if not isinstance(exc, Exception):
                        self._fail(self._queue, OSError("access recorder stopped"))
                        raise
                    log.exception("access recorder failed on a batch")
            if self._closing and not self._queue:
                return

    async def _flush(self, batch: list[_Pending]) -> None:
        if asyncio.get_running_loop().time() >= batch[0].deadline:  # too late already: not even tried
            self._fail(batch, TimeoutError())
            return
        try:
            async with asyncio.timeout_at(batch[0].deadline):
                await self._append([pending.record for pending in batch])
        except asyncpg.DataError:
            if len(batch) > 1:  # one unstorable record must not fail the others: isolate it
                for one in batch:
                    await self._flush([one])
                return
            self._fail(batch, OSError("unstorable access record"))
            return
        except Exception as exc:  # noqa: BLE001 (its requests fail closed; the next batch tries afresh)
            self._fail(batch, exc if isinstance(exc, (OSError, asyncpg.PostgresError)) else OSError(str(exc)))
            return
        if self._metrics is not None:
            self._metrics.access_record_batches.observe(len(batch))
        for pending in batch:
            pending.record.persisted = True
            if not pending.future.done():
                pending.future.set_result(None)

    async def _append(self, records: list[AccessRecord]) -> None:
        loop = asyncio.get_running_loop()
        transcoder = self._repository.mapper.transcoder
        stored = [stored_access_event(record.storable_fields(), transcoder) for record in records]
        touched = self._not_yet_written(
            last_access_times((r.recorded_at, r.accessed_streams) for r in records if r.success)
        )
        # Runners woken a moment ago are still polling (see WAKEUP_COVERS_SECONDS): no NOTIFY needed.
        wake = loop.time() - self._woke_runners_at >= WAKEUP_COVERS_SECONDS
        async with self._pool.acquire() as conn:
            await record_access(conn, READ_MODEL_SWAP_KEY, touched, self._repository.store.events_table, stored,
                                wake=wake)
        if wake:
            self._woke_runners_at = loop.time()
        if len(self._last_access_written) > MAX_REMEMBERED_STREAMS:
            self._last_access_written.clear()
        self._last_access_written.update(zip(*touched, strict=True))

    def _not_yet_written(self, touched: tuple[list[UUID], list[datetime]]) -> tuple[list[UUID], list[datetime]]:
        """The last-access times that would move a row, as far as this process knows (a row only moves forward,
        and rows are removed only with their secret or after years, so skipping a time this process already
        committed never loses one)."""
        written = self._last_access_written
        kept = [(stream, at) for stream, at in zip(*touched, strict=True) if written.get(stream, _EPOCH) < at]
        return [stream for stream, _ in kept], [at for _, at in kept]

    @staticmethod
    def _fail(batch: list[_Pending], exc: BaseException) -> None:
        for pending in batch:
            if not pending.future.done():
                pending.future.set_exception(exc)


@dataclass(slots=True)
class _Pending:
    record: AccessRecord
    future: asyncio.Future[None]
    deadline: float  # loop time by which the record must be durable, or the request fails closed
