"""The supervisor of `serve --workers N` with real child processes: small Python programs that speak its readiness
protocol (write ``ready`` on the pipe they are given), so its policies are shown in a second, without a server.
The whole server under its supervisor is in tests/e2e/test_workers.py."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Sequence

from scaivault.supervisor import Supervisor, WorkerCommand

LISTEN = "os.write(fd, b'ready\\n'); os.close(fd)\n"


def program(body: str) -> WorkerCommand:
    """Each worker runs ``body`` with ``index`` and ``fd`` (the readiness pipe) set."""

    def command(index: int, fd: int) -> Sequence[str]:
        return [sys.executable, "-c", f"import os, sys, time\nindex, fd = {index}, {fd}\n{body}"]

    return command


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_worker_that_exits_before_listening_at_start_up_stops_the_server() -> None:
    supervisor = Supervisor(2, program("time.sleep(0.2 * index); sys.exit(3)"), stop_timeout=5)
    started = time.monotonic()
    assert await supervisor.run() == 1
    assert time.monotonic() - started < 5
    assert supervisor.restarts == 0 and supervisor.pids == {}


async def test_a_worker_that_keeps_failing_is_started_again_with_back_off_then_given_up() -> None:
    # Worker 1 listens, then dies at once, every time; worker 0 stays up until it is stopped.
    body = LISTEN + "if index == 1:\n    sys.exit(2)\ntime.sleep(60)\n"
    announced: list[float] = []
    supervisor = Supervisor(
        2, program(body), stop_timeout=5, on_ready=lambda: announced.append(time.monotonic()),
        first_delay=0.1, max_failures=4,
    )
    started = time.monotonic()
    assert await supervisor.run() == 1
    assert len(announced) == 1  # "listening" once, not at every restart
    assert supervisor.restarts == 3  # after failures 1, 2 and 3; the 4th gives up
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4  # the delays doubled
    assert supervisor.pids == {}  # worker 0 was stopped with the server


async def test_sigterm_stops_every_worker_and_run_returns_0() -> None:
    pids: list[int] = []

    def ready() -> None:
        pids.extend(supervisor.pids.values())
        os.kill(os.getpid(), signal.SIGTERM)  # a real signal to this process, which the supervisor handles

    supervisor = Supervisor(3, program(LISTEN + "time.sleep(60)\n"), stop_timeout=5, on_ready=ready)
    assert await asyncio.wait_for(supervisor.run(), 30) == 0
    assert len(pids) == 3 and all(gone(pid) for pid in pids)
    assert supervisor.restarts == 0
