"""Running the fan-out projection in a test: a runner of its own over the container's store, stopped once the batch
that reached the log's head has committed."""

from __future__ import annotations

from collections.abc import Sequence

from projections.fanout.projection import FanOutProjection
from projections.fanout.sinks import FanOutSink
from projections.runner import ProjectionRunner
from scaivault.bootstrap import Container
from tests.helpers import eventually


async def run_fan_out(container: Container, database_url: str, sinks: Sequence[FanOutSink],
                      seen: int | None = None) -> None:
    """Run the fan-out until it has committed the log's head as it was at the call (and, with ``seen``, until the
    first sink, which must collect ``entries``, has been handed that many entries)."""
    runner = ProjectionRunner(
        database_url, container.store, container.repository.mapper, [FanOutProjection(list(sinks))],
        poll_seconds=0.05,
    )
    head = await container.store.max_notification_id(container.pool)
    await runner.start()
    try:
        if seen is not None:
            await eventually(lambda: len(sinks[0].entries) >= seen, timeout=10)  # type: ignore[attr-defined]
        await eventually(lambda: runner.states["fanout"].position >= head, timeout=10)
    finally:
        await runner.stop()
