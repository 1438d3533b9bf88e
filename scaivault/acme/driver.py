"""Takes an order from new to a certificate, one recorded step at a time.

``run_order`` reports every step through ``on_step(step, state)`` before it goes on: the caller stores the state
(as an event) and, after a restart, calls ``run_order`` again with the last state stored. The run then starts from
what the CA says the order is now, not from the step name: a pending order has its challenges presented and
answered (an answered challenge is not answered twice), a ready one is finalized, a processing one waited for, a
valid one downloaded. A resumed run may so report a step the stored log already has (``challenges_presented``
again, or ``finalized`` for an order that was finalized before the restart); treat a repeat as a no-op.

Steps: ``order_created``, ``challenges_presented``, ``challenges_answered``, ``finalized``, ``certificate_issued``,
``failed``. ``failed`` is reported for an order that can no longer succeed (its state carries the CA's problem);
a failure that may pass (the CA unreachable, rate limits, a wait that ran out) is raised without it, and the
order can be resumed later. Challenges presented are always cleaned up, whatever happens after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from scaivault.acme.challenges import Solver
from scaivault.acme.client import CHALLENGE_TYPES, AcmeClient
from scaivault.acme.models import AcmeAccountInfo, AcmeError, ChallengeTask, OrderState, clip

log = logging.getLogger(__name__)

STEPS = (
    "order_created",
    "challenges_presented",
    "challenges_answered",
    "finalized",
    "certificate_issued",
    "failed",
)

OnStep = Callable[[str, OrderState], Awaitable[None]]


@dataclass(frozen=True)
class Waits:
    """Bounds on waiting for the CA. Polls start at ``poll_first`` seconds apart and grow by ``backoff`` up to
    ``poll_most``."""

    validation_seconds: float = 300.0
    issuance_seconds: float = 300.0
    solver_seconds: float = 120.0  # each present and each cleanup
    poll_first: float = 1.0
    poll_most: float = 15.0
    backoff: float = 1.6


@dataclass(frozen=True)
class Issued:
    order: OrderState
    fullchain_pem: str


async def _nothing(step: str, state: OrderState) -> None:
    return None


async def run_order(
    client: AcmeClient,
    account: AcmeAccountInfo,
    names: Sequence[str],
    csr_pem: str,
    solvers: Mapping[str, Solver],
    *,
    on_step: OnStep = _nothing,
    state: OrderState | None = None,
    waits: Waits = Waits(),
) -> Issued:
    """Order ``names`` (or resume ``state``), answer each pending authorization with the first challenge type of
    ``solvers`` (in its order) the CA offers, finalize with ``csr_pem`` and fetch the chain. Raises ``AcmeError``."""
    preferred = [t for t in solvers if t in CHALLENGE_TYPES]
    if not preferred:
        raise ValueError(f"solvers must answer some of {', '.join(CHALLENGE_TYPES)}")
    current = state
    try:
        if current is None:
            current = await client.new_order(account, names)
            await on_step("order_created", current)
        else:
            current = await client.poll(account, current)
        if current.status == "pending":
            current = await _validate(client, account, current, solvers, preferred, on_step, waits)
        if current.status in ("ready", "processing", "valid"):
            current = await client.finalize(account, current, csr_pem)
            await on_step("finalized", current)
            current = await _wait(client, account, current, ("ready", "processing"), waits.issuance_seconds, waits)
        if current.status != "valid":
            raise current.error() or AcmeError("order_invalid", f"the order ended {current.status}")
        fullchain = await client.fetch_certificate(account, current)
        await on_step("certificate_issued", current)
        return Issued(current, fullchain)
    except AcmeError as failure:
        if current is not None and not failure.retryable:
            failed = current if current.status == "invalid" and current.error_detail else current.with_error(failure)
            failed = failed if failed.status == "invalid" else _as_invalid(failed)
            log.info("ACME order %s failed: %s", failed.url, failure.kind)
            await on_step("failed", failed)
        raise


def _as_invalid(state: OrderState) -> OrderState:
    return replace(state, status="invalid")


async def _validate(
    client: AcmeClient,
    account: AcmeAccountInfo,
    order: OrderState,
    solvers: Mapping[str, Solver],
    preferred: list[str],
    on_step: OnStep,
    waits: Waits,
) -> OrderState:
    tasks = await client.authorizations(account, order, preferred)
    presented: list[ChallengeTask] = []
    try:
        for task in tasks:
            presented.append(task)  # before present: a half-done present is cleaned up too
            await _present(solvers[task.type], task, waits.solver_seconds)
        await on_step("challenges_presented", order)
        for task in tasks:
            await client.answer(account, task.url)
        await on_step("challenges_answered", order)
        return await _wait(client, account, order, ("pending",), waits.validation_seconds, waits)
    finally:
        await _cleanup(presented, solvers, waits.solver_seconds)


async def _present(solver: Solver, task: ChallengeTask, seconds: float) -> None:
    """A solver's failure as an ``AcmeError``: its message is shown (solvers raise errors fit for the client, as the
    DNS providers' ``DnsProviderError`` is), never its trace."""
    try:
        await asyncio.wait_for(solver.present(task), seconds)
    except AcmeError:
        raise
    except TimeoutError:
        raise AcmeError(
            "solver_failed", f"presenting the {task.type} challenge took longer than {int(seconds)} s",
            identifier=task.identifier,
        ) from None
    except Exception as exc:  # noqa: BLE001 - reported to the caller as what it is
        log.warning("presenting the %s challenge for %s failed: %s", task.type, task.identifier, type(exc).__name__)
        raise AcmeError(
            "solver_failed", f"could not present the {task.type} challenge: {clip(exc, 200)}",
            identifier=task.identifier,
        ) from None


async def _cleanup(tasks: list[ChallengeTask], solvers: Mapping[str, Solver], seconds: float) -> None:
    # Shielded: a cancelled run still takes its records down (a TXT record left behind is visible to anyone).
    async def all_of_them() -> None:
        for task in tasks:
            try:
                await asyncio.wait_for(solvers[task.type].cleanup(task), seconds)
            except Exception as exc:  # noqa: BLE001 - one failed cleanup must not stop the others
                log.warning("cleanup of the %s challenge for %s failed: %s", task.type, task.identifier,
                            type(exc).__name__)

    if tasks:
        await asyncio.shield(all_of_them())


async def _wait(
    client: AcmeClient,
    account: AcmeAccountInfo,
    order: OrderState,
    while_in: tuple[str, ...],
    seconds: float,
    waits: Waits,
) -> OrderState:
    """Poll until the order leaves ``while_in``, within ``seconds``."""
    deadline = time.monotonic() + seconds
    delay = waits.poll_first
    current = order
    while current.status in while_in:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AcmeError("timeout", f"the order was still {current.status} after {int(seconds)} s")
        await asyncio.sleep(min(delay, remaining))
        delay = min(delay * waits.backoff, waits.poll_most)
        current = await client.poll(account, current)
    return current
