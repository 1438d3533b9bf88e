"""The ACME order worker: one per server process, like the webhook dispatcher.

Every ``poll_seconds`` (and at once when this process takes an order) it lists the orders due (not ended, not
waiting for a retry) and drives each it can claim: a session advisory lock per order (``acme-order:<id>``) held on
one pooled connection while the order is driven, so two processes never drive the same order; a process that dies
releases it with its connection. Driving is ``run_order`` from the order's last recorded ``OrderState``, every step
recorded as an event through ``AcmeCommands``, so after a restart an order resumes where it was. A process without
the tls-alpn-01 responder (``SCAIVAULT_ACME_TLS_ALPN_ADDRESS`` unset) does not claim tls-alpn-01 orders.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import asyncpg

from commands.acme import AcmeCommands, DrivenOrder, challenge_record
from projections.acme.lookup import PostgresAcmeLookup
from scaivault.acme.challenges import Dns01Solver, Solver, TlsAlpn01Responder
from scaivault.acme.client import AcmeClient
from scaivault.acme.driver import Waits, run_order
from scaivault.acme.models import AcmeError, ChallengeTask, OrderState
from scaivault.clock import utcnow
from scaivault.domain.acme import STEP_STATUS, OrderCancelled
from scaivault.domain.errors import ScaiVaultError

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
BATCH = 50


class TenantDnsRecords:
    """dns-01 records written through the tenant's provider that manages each name (opened per call: the
    credentials are in memory only while a record is written)."""

    def __init__(self, providers: Any, tenant_id: str) -> None:
        self._providers = providers
        self._tenant = tenant_id

    async def set_txt(self, fqdn: str, value: str, *, ttl: int = 60) -> None:
        client = await self._providers.open_for_zone(self._tenant, fqdn)
        try:
            await client.set_txt(fqdn, value, ttl=ttl)
        finally:
            await client.aclose()

    async def remove_txt(self, fqdn: str, value: str) -> None:
        client = await self._providers.open_for_zone(self._tenant, fqdn)
        try:
            await client.remove_txt(fqdn, value)
        finally:
            await client.aclose()


class RecordedSolver:
    """A solver whose every presentation and cleanup is an event on the order. http-01 has no inner solver: the
    event's projection puts the token in the table every process answers from."""

    def __init__(self, commands: AcmeCommands, order_id: str, inner: Solver | None) -> None:
        self._commands = commands
        self._order_id = order_id
        self._inner = inner

    async def present(self, task: ChallengeTask) -> None:
        if self._inner is not None:
            await self._inner.present(task)
        await self._commands.challenge_presented(self._order_id, challenge_record(task.to_dict()))

    async def cleanup(self, task: ChallengeTask) -> None:
        try:
            if self._inner is not None:
                await self._inner.cleanup(task)
        finally:
            await self._commands.challenge_cleaned_up(self._order_id, challenge_record(task.to_dict()))


class AcmeOrderWorker:
    def __init__(
        self, pool: asyncpg.Pool, commands: AcmeCommands, client: AcmeClient, lookup: PostgresAcmeLookup,
        dns_providers: Any, *, tls_alpn: TlsAlpn01Responder | None = None, poll_seconds: float = POLL_SECONDS,
        concurrency: int = 8, waits: Waits | None = None, clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._pool = pool
        self._commands = commands
        self._client = client
        self._lookup = lookup
        self._dns = dns_providers
        self._tls_alpn = tls_alpn
        self._poll = poll_seconds
        self._slots = asyncio.Semaphore(concurrency)
        self._waits = waits or Waits()
        self._clock = clock
        self._wake = asyncio.Event()
        self._driving: dict[str, asyncio.Task[None]] = {}

    @property
    def challenge_types(self) -> tuple[str, ...]:
        return ("dns-01", "http-01", "tls-alpn-01") if self._tls_alpn is not None else ("dns-01", "http-01")

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        if self._tls_alpn is not None:
            await self._tls_alpn.start()
        try:
            while True:
                self._wake.clear()
                await self.tick()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._poll)
                except TimeoutError:
                    pass
        finally:
            tasks = list(self._driving.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self._tls_alpn is not None:
                await self._tls_alpn.close()

    async def tick(self) -> int:
        """Start driving every due order this process is not driving already; returns how many were started."""
        due = await self._lookup.orders_due(self._pool, self._clock(), self.challenge_types, BATCH)
        started = 0
        for order_id in due:
            if order_id in self._driving:
                continue
            task = asyncio.create_task(self._claimed(order_id), name=f"acme-order-{order_id}")
            self._driving[order_id] = task
            task.add_done_callback(functools.partial(self._done, order_id))
            started += 1
        return started

    def _done(self, order_id: str, _: asyncio.Task[None]) -> None:
        self._driving.pop(order_id, None)

    async def _claimed(self, order_id: str) -> None:
        async with self._slots, self._pool.acquire() as conn:
            lock = f"acme-order:{order_id}"
            if not await conn.fetchval("SELECT pg_try_advisory_lock(hashtextextended($1::text, 0))", lock):
                return  # another process drives it
            try:
                await self.drive(order_id)
            except Exception as exc:  # noqa: BLE001 - an order must not take the worker down
                log.warning("ACME order %s: %s", order_id, type(exc).__name__)
                await self._retry(order_id, AcmeError("server_problem", "the order was interrupted; it is retried"))
            finally:
                await asyncio.shield(conn.fetchval("SELECT pg_advisory_unlock(hashtextextended($1::text, 0))", lock))

    async def drive(self, order_id: str) -> None:
        """Take the order as far as it goes now: valid, invalid, or waiting for a retry."""
        try:
            driven = await self._commands.driven_order(order_id)
        except ScaiVaultError as failure:  # the account was deleted: the order cannot go on
            await self._commands.fail(order_id, failure, None)
            return
        if driven is None:
            return
        failed_state: dict[str, Any] | None = None

        async def on_step(step: str, state: OrderState) -> None:
            nonlocal failed_state
            if step in STEP_STATUS:
                await self._commands.record_step(order_id, step, state.to_dict())
            elif step == "failed":
                failed_state = state.to_dict()
            # certificate_issued: recorded by ``complete`` with the certificate, in one transaction.

        resume = OrderState.from_dict(driven.state) if driven.state else None
        try:
            issued = await run_order(
                self._client, driven.account, driven.names, driven.csr_pem, self._solvers(driven),
                on_step=on_step, state=resume, waits=self._waits,
            )
        except OrderCancelled:
            return
        except AcmeError as failure:
            if failure.retryable:
                await self._retry(order_id, failure)
            else:
                await self._commands.fail(order_id, failure, failed_state)
            return
        try:
            await self._commands.complete(order_id, issued.order.to_dict(), issued.fullchain_pem)
        except OrderCancelled:
            return
        except ScaiVaultError as failure:  # the secret could not be written (a secret policy refuses it, ...)
            await self._commands.fail(order_id, failure, issued.order.to_dict())

    async def _retry(self, order_id: str, failure: AcmeError) -> None:
        try:
            await self._commands.schedule_retry(order_id, failure)
        except OrderCancelled:
            pass

    def _solvers(self, driven: DrivenOrder) -> Mapping[str, Solver]:
        if driven.challenge_type == "dns-01":
            inner: Solver | None = Dns01Solver(TenantDnsRecords(self._dns, driven.owner))
        elif driven.challenge_type == "tls-alpn-01":
            inner = self._tls_alpn
        else:
            inner = None
        return {driven.challenge_type: RecordedSolver(self._commands, driven.order_id, inner)}
