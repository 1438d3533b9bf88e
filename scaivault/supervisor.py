"""The supervisor of ``scaivault serve --workers N``: N worker processes behind one port, kept running
(docs/adr/0016-several-worker-processes-behind-one-port.md).

The parent (``scaivault/cli/serve.py: supervise``) has done the once-only start-up and holds no event loop, pool or
cache when it hands over to the supervisor, which:

- starts each worker as a new process of the same executable (never a fork: a worker builds its own event loop,
  pool and caches), in a process group of its own, with a pipe on which the worker says when it is listening;
- calls ``on_ready`` once every worker has been listening;
- starts a worker that exits again, after ``first_delay`` (0.5 s), doubling up to ``max_delay`` (30 s) while it
  keeps failing; a worker that stayed up ``healthy_after`` (60 s) starts the count again. It gives up, stopping the
  others and returning 1, when a worker exits before it was ever listening during start-up (what cannot start will
  not start by being retried) or fails ``max_failures`` (5) times in a row later;
- on SIGTERM or SIGINT sends SIGTERM to every worker (each finishes its requests within its shutdown timeout and
  stops its jobs), waits ``stop_timeout`` for them, kills what is left, and returns 0. A second signal kills the
  workers at once.

Workers in process groups of their own get no Ctrl-C from the terminal: the supervisor stops them, once. Each worker
asks the kernel for SIGTERM should the supervisor die (``scaivault/workers.py: die_with_parent``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Mapping, Sequence

from scaivault.tasks import cancel_and_wait

log = logging.getLogger(__name__)

READY = b"ready\n"  # what a worker writes on its pipe once it is listening
FIRST_DELAY_SECONDS = 0.5
MAX_DELAY_SECONDS = 30.0
HEALTHY_AFTER_SECONDS = 60.0
MAX_FAILURES = 5

# (worker index, the pipe's file descriptor to write READY on) -> the worker's command line
WorkerCommand = Callable[[int, int], Sequence[str]]


class WorkerFailed(Exception):
    """A worker that cannot be kept running: the server stops."""


def say_ready(fd: int) -> None:
    """In a worker, once it is listening: tell the supervisor."""
    try:
        os.write(fd, READY)
    finally:
        os.close(fd)


class Supervisor:
    def __init__(
        self,
        count: int,
        command: WorkerCommand,
        *,
        stop_timeout: float,
        env: Mapping[str, str] | None = None,
        on_ready: Callable[[], None] = lambda: None,
        first_delay: float = FIRST_DELAY_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        healthy_after: float = HEALTHY_AFTER_SECONDS,
        max_failures: int = MAX_FAILURES,
    ) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self._count = count
        self._command = command
        self._stop_timeout = stop_timeout
        self._env = dict(env) if env is not None else None
        self._on_ready = on_ready
        self._first_delay = first_delay
        self._max_delay = max_delay
        self._healthy_after = healthy_after
        self._max_failures = max_failures
        self._running: dict[int, asyncio.subprocess.Process] = {}
        self._listened: set[int] = set()  # workers that have been listening at least once
        self._stop_requested: asyncio.Event | None = None
        self.restarts = 0

    @property
    def pids(self) -> dict[int, int]:
        """The live workers' process ids, by worker index."""
        return {index: process.pid for index, process in self._running.items() if process.returncode is None}

    async def run(self) -> int:
        """Run the workers until a signal (0) or a worker that cannot be kept running (1)."""
        loop = asyncio.get_running_loop()
        self._stop_requested = stop = asyncio.Event()
        signals = (signal.SIGTERM, signal.SIGINT)
        for signum in signals:
            loop.add_signal_handler(signum, self._on_signal, signum)
        slots = [asyncio.create_task(self._keep(index), name=f"worker-{index}") for index in range(self._count)]
        stopped = asyncio.create_task(stop.wait(), name="stop-requested")
        failures: list[BaseException | None] = []
        try:
            done, _ = await asyncio.wait([*slots, stopped], return_when=asyncio.FIRST_COMPLETED)
            failures = [task.exception() for task in done if task is not stopped and not task.cancelled()]
            for failure in failures:
                log.error("stopping the server: a worker cannot be kept running", extra={"reason": str(failure)})
        finally:  # also when this is cancelled: no worker is left behind
            await cancel_and_wait([*slots, stopped])  # no restarts from here on
            await self._stop_workers()
            for signum in signals:
                loop.remove_signal_handler(signum)
        return 1 if failures else 0

    def _on_signal(self, signum: int) -> None:
        assert self._stop_requested is not None
        if not self._stop_requested.is_set():
            log.info("stopping the workers", extra={"signal": signal.Signals(signum).name})
            self._stop_requested.set()
            return
        log.warning("second signal: killing the workers", extra={"signal": signal.Signals(signum).name})
        for process in self._running.values():
            _send(process, signal.SIGKILL)

    async def _keep(self, index: int) -> None:
        """Keep worker ``index`` running; raise ``WorkerFailed`` when it cannot be."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            process, listening = await self._start(index)
            listened = await listening
            if listened:
                self._listening(index)
            elif len(self._listened) < self._count:
                # Still starting: the parent's own checks passed, so this is not going to get better by retrying.
                status = await process.wait()
                raise WorkerFailed(f"worker {index} exited with status {status} before it was listening")
            status = await process.wait()
            self._running.pop(index, None)
            healthy = listened and loop.time() - started >= self._healthy_after
            failures = 0 if healthy else failures + 1
            if failures >= self._max_failures:
                raise WorkerFailed(f"worker {index} failed {failures} times in a row (last status {status})")
            delay = min(self._first_delay * 2 ** max(failures - 1, 0), self._max_delay)
            log.warning(
                "worker exited; starting it again",
                extra={"worker": index, "status": status, "restart_in_seconds": delay},
            )
            await asyncio.sleep(delay)
            self.restarts += 1

    def _listening(self, index: int) -> None:
        first_time = len(self._listened) < self._count
        self._listened.add(index)
        log.info("worker listening", extra={"worker": index, "pid": self._running[index].pid})
        if first_time and len(self._listened) == self._count:
            self._on_ready()

    async def _start(self, index: int) -> tuple[asyncio.subprocess.Process, asyncio.Future[bool]]:
        read_fd, write_fd = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *self._command(index, write_fd), env=self._env, pass_fds=(write_fd,), process_group=0
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._running[index] = process
        log.info("worker started", extra={"worker": index, "pid": process.pid})
        return process, _readiness(read_fd)

    async def _stop_workers(self) -> None:
        processes = [process for process in self._running.values() if process.returncode is None]
        for process in processes:
            _send(process, signal.SIGTERM)
        if not processes:
            return
        waits = [asyncio.create_task(process.wait()) for process in processes]
        _, pending = await asyncio.wait(waits, timeout=self._stop_timeout)
        if pending:
            log.warning("workers did not stop in time; killing them", extra={"count": len(pending)})
            for process in processes:
                _send(process, signal.SIGKILL)
            await asyncio.wait(waits)
        log.info("workers stopped", extra={"statuses": [process.returncode for process in processes]})


def _send(process: asyncio.subprocess.Process, signum: int) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signum)


def _readiness(fd: int) -> asyncio.Future[bool]:
    """True once the worker writes READY on the pipe; False when the pipe closes first (the worker is gone)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[bool] = loop.create_future()
    received = bytearray()

    def readable() -> None:
        try:
            chunk = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        received.extend(chunk)
        if READY in received or not chunk:
            loop.remove_reader(fd)
            os.close(fd)
            if not future.done():
                future.set_result(READY in received)

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)
    return future
