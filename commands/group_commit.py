"""Group commit: independent commands that arrive together are committed in one transaction.

Some use cases are many small, independent appends (issuing certificates: each a new aggregate, checked against
shared state that rarely changes). One transaction each spends most of its time on round trips and the commit's
flush; one transaction for all that arrived while the previous one committed costs about the same as one of them.
Nothing waits to form a batch: a lone request commits at once; under load, requests queue behind the transaction in
flight and commit together in the next.

Each item is still its own command as far as anyone can tell: ``record`` checks and records one item in the shared
unit of work and may refuse it (its exception goes to its caller alone, and its request's access record is left out
of the batch, so the front door records the failure). A batch that fails as a whole (a database error) is taken
apart: every item is then committed on its own, so one item's fault never fails another's request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from commands.unit_of_work import UnitOfWork, UnitOfWorkRunner
from scaivault.audit.access_records import AccessRecord

log = logging.getLogger(__name__)
I = TypeVar("I")  # noqa: E741 - the item type
R = TypeVar("R")
MAX_BATCH = 64


@dataclass
class BatchScope:
    """What items of one transaction share: what was looked up or locked already (``memo``), so a batch asks once."""

    memo: dict[Any, Any] = field(default_factory=dict)


@dataclass
class _Entry(Generic[I, R]):
    item: I
    access: AccessRecord | None
    future: asyncio.Future[R]
    result: R | None = None
    error: BaseException | None = None


class GroupCommit(Generic[I, R]):
    def __init__(
        self, runner: UnitOfWorkRunner, record: Callable[[UnitOfWork, I, BatchScope], Awaitable[R]], *,
        max_batch: int = MAX_BATCH, lock_order: Callable[[I], Any] | None = None,
    ) -> None:
        """``lock_order``: the key items are recorded in. Items that lock rows or keys shared with other batches
        (other processes' too) must take them in one order, or two batches can deadlock."""
        self._runner = runner
        self._record = record
        self._lock_order = lock_order
        self._max_batch = max_batch
        self._queue: list[_Entry[I, R]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def submit(self, item: I, access: AccessRecord | None) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Entry(item, access, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        while self._queue:
            # A caller that went away before its turn is left out: nobody would learn the outcome.
            batch = [e for e in self._queue[:self._max_batch] if not e.future.done()]
            del self._queue[:self._max_batch]
            if not batch:
                continue
            if self._lock_order is not None:
                key = self._lock_order
                batch.sort(key=lambda entry: key(entry.item))
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - taken apart below, so each caller gets its own outcome
                if len(batch) == 1:
                    self._fail(batch[0], exc)
                    continue
                log.warning("a group commit failed (%s); committing its items one by one", type(exc).__name__)
                for entry in batch:
                    try:
                        await self._commit([entry])
                    except Exception as own:  # noqa: BLE001 - the item's own failure, for its caller
                        self._fail(entry, own)

    async def _commit(self, batch: list[_Entry[I, R]]) -> None:
        async def work(uow: UnitOfWork) -> None:
            scope = BatchScope()
            kept: list[AccessRecord] = []
            for entry in batch:
                entry.result, entry.error = None, None
                try:
                    entry.result = await self._record(uow, entry.item, scope)
                except Exception as exc:  # noqa: BLE001 - this item is refused; the others go on
                    entry.error = exc
                    continue
                if entry.access is not None:
                    kept.append(entry.access)
            uow.accesses = kept

        await self._runner.run(work, accesses=[e.access for e in batch if e.access is not None])
        for entry in batch:
            if entry.future.done():
                continue
            if entry.error is not None:
                entry.future.set_exception(entry.error)
            else:
                entry.future.set_result(entry.result)  # type: ignore[arg-type]

    @staticmethod
    def _fail(entry: _Entry[I, R], exc: BaseException) -> None:
        if not entry.future.done():
            entry.future.set_exception(exc)
