"""Which serving process this is: ``scaivault serve --workers N`` runs N worker processes behind one port
(``scaivault/supervisor.py``, docs/adr/0016-several-worker-processes-behind-one-port.md).

Worker 0 is the primary: it alone runs the singleton jobs (catch-up projections, housekeeping, the audit-export
worker); every worker runs the per-process ones (access-record group commit, revocation and authorization sync, the
Redis probe). A single process (``--workers 1``) is worker 0 of 1, and runs everything, as ``serve`` always did.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class WorkerRole:
    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"worker {self.index} of {self.count}")

    @property
    def singletons(self) -> bool:
        """Whether this process runs the jobs one process runs for all: the primary (worker 0) does."""
        return self.index == 0

    @property
    def alone(self) -> bool:
        return self.count == 1

    def session_suffix(self) -> str:
        """What this worker's database sessions add to their ``application_name`` (nothing for a single process)."""
        return "" if self.alone else f" worker {self.index}"

    def internal_address(self, address: str) -> str:
        """``METRICS_BIND_ADDRESS`` as this worker serves it: worker i on the configured port + i (each process's
        metrics are its own); ``off`` stays off."""
        if address == "off" or self.index == 0:
            return address
        host, _, port = address.rpartition(":")
        return f"{host}:{int(port) + self.index}"

    def describe(self) -> dict[str, Any]:
        return {"index": self.index, "workers": self.count, "singletons": self.singletons}


ALONE = WorkerRole()  # a single serving process: worker 0 of 1


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which container cpusets restrict; CFS quotas are not
    seen, so set SCAIVAULT_WORKERS under a CPU limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def die_with_parent(parent_pid: int) -> None:
    """Make sure this worker never outlives its supervisor: on Linux the kernel sends it SIGTERM when the parent
    dies (``PR_SET_PDEATHSIG``), elsewhere a thread watches the parent; a parent already gone ends it at once."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    else:
        threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watch", daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the death signal was asked for
        sys.exit(1)


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGTERM)
