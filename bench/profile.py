"""`python -m bench.run --profile`: where the server's time goes during a measured phase.

Two samplers run for the length of the phase:
  * py-spy on the server process, sampling only while it holds the GIL (`--gil`): where its Python time goes, by
    package and by function. Waiting in epoll or in a socket write (no GIL) is left out, and so is time spent
    runnable but without a CPU (which a plain sample of a busy 2-core machine would pin on those calls).
  * pg_stat_activity, 10 times a second: what the server's PostgreSQL connections are doing. `idle / ClientRead`
    means the connection waits for Python; `Lock:*`, `IO:WALSync`, `LWLock:WAL*` mean Python waits for PostgreSQL.
    Also: what the connection holding the event store's table lock (writers queue on it) is doing meanwhile.

Writes <out>.txt (py-spy's collapsed stacks) and <out>-summary.txt, and prints the summary's head.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from types import TracebackType

import asyncpg

BIN = Path(sys.executable).parent
SAMPLE_HZ = 200
WAIT_SAMPLE_SECONDS = 0.1
SCAFFOLDING = {"click", "asyncio", "scaivault.cli"}  # frames under which everything runs: left out of "inclusive"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*)\)$")


def package_of(frame: str) -> str:
    """`read_secret (scaivault/http/secrets/reads.py)` -> `scaivault.http`; third-party and stdlib by top-level name."""
    match = _FRAME.match(frame)
    path = match["file"] if match else frame
    parts = [p for p in re.split(r"[\\/]", path.split("site-packages/")[-1]) if p]
    if not parts:
        return "?"
    if parts[0] in ("scaivault", "commands", "projections", "bench") and len(parts) > 2:
        return f"{parts[0]}.{parts[1]}"
    return parts[0].removesuffix(".py")


def summarize(collapsed: str, top: int = 25) -> str:
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        by_package[package_of(frames[-1])] += count
        for frame in set(frames):
            if package_of(frame) not in SCAFFOLDING and not frame.startswith("<module>"):
                inclusive[frame] += count
    if not total:
        return "no samples (is py-spy allowed to ptrace the server?)\n"

    def table(title: str, counts: Counter[str], n: int) -> list[str]:
        return [title] + [f"  {100 * c / total:5.1f}%  {name}" for name, c in counts.most_common(n)] + [""]

    lines = [f"{total} busy samples at {SAMPLE_HZ} Hz", ""]
    lines += table("own time by package (leaf frame)", by_package, 15)
    lines += table("own time by function", own, top)
    lines += table("inclusive time by function", inclusive, top)
    return "\n".join(lines)


class Profiler:
    def __init__(self, pid: int, db_url: str, out: Path, seconds: float) -> None:
        self.pid, self.db_url, self.out, self.seconds = pid, db_url, out, seconds
        self._spy: asyncio.subprocess.Process | None = None
        self._waits: asyncio.Task[Counter[str]] | None = None

    async def __aenter__(self) -> Profiler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        py_spy = shutil.which("py-spy", path=str(BIN)) or shutil.which("py-spy")
        if py_spy is None:
            print("  (py-spy not found: `.venv/bin/pip install py-spy`; sampling wait events only)", file=sys.stderr)
        else:
            self._spy = await asyncio.create_subprocess_exec(
                py_spy, "record", "--pid", str(self.pid), "--duration", str(max(1, round(self.seconds))),
                "--rate", str(SAMPLE_HZ), "--function", "--gil", "--format", "raw",
                "--output", str(self.out.with_suffix(".txt")),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )
        self._waits = asyncio.create_task(self._sample_waits())
        return self

    async def _sample_waits(self) -> tuple[int, Counter[str], Counter[str]]:
        """(samples, states of the server's connections, state of the one holding the event-store table lock)."""
        waits: Counter[str] = Counter()
        holder: Counter[str] = Counter()
        samples = 0
        conn = await asyncpg.connect(self.db_url)
        try:
            for _ in range(int(self.seconds / WAIT_SAMPLE_SECONDS)):
                rows = await conn.fetch(
                    "SELECT a.state, a.wait_event_type, a.wait_event, l.pid IS NOT NULL AS holds_event_lock"
                    " FROM pg_stat_activity a LEFT JOIN pg_locks l ON l.pid = a.pid AND l.granted"
                    "  AND l.mode = 'ExclusiveLock' AND l.relation = to_regclass('scaivault_events')"
                    " WHERE a.application_name = 'scaivault' AND a.datname = current_database()"
                )
                samples += 1
                for row in rows:
                    wait = f"{row['wait_event_type']}:{row['wait_event']}" if row["wait_event"] else "on CPU"
                    waits[f"{row['state']:<20} {wait}"] += 1
                    if row["holds_event_lock"]:
                        holder[f"{row['state']:<20} {wait}"] += 1
                holder["(nobody)"] += not any(row["holds_event_lock"] for row in rows)
                await asyncio.sleep(WAIT_SAMPLE_SECONDS)
        finally:
            await conn.close()
        return samples, waits, holder

    async def __aexit__(self, *exc: object | TracebackType) -> None:
        assert self._waits is not None
        samples, waits, holder = await asyncio.wait_for(self._waits, self.seconds + 30)
        samples = max(1, samples)
        lines = ["server's PostgreSQL connections, average number in each state", ""]
        lines += [f"  {n / samples:6.2f}  {what}" for what, n in waits.most_common(12)] + [""]
        lines += ["holder of the event-store table lock (LOCK TABLE scaivault_events), share of samples", ""]
        lines += [f"  {100 * n / samples:5.1f}%  {what}" for what, n in holder.most_common(8)] + [""]
        if self._spy is not None:
            await asyncio.wait_for(self._spy.wait(), self.seconds + 60)
            collapsed = self.out.with_suffix(".txt")
            lines.append(summarize(collapsed.read_text()) if collapsed.exists() else "py-spy wrote nothing\n")
        summary = "\n".join(lines)
        self.out.with_name(self.out.name + "-summary.txt").write_text(summary)
        print("\n".join("    " + line for line in summary.splitlines()[:32]), file=sys.stderr)
