"""Helpers for the end-to-end tests: waiting for the read models, and running the CLI as operators do."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys

from scaivault.bootstrap import Container
from tests.helpers import eventually

SCAIVAULT = [sys.executable, "-m", "scaivault.cli.main"]


async def caught_up(container: Container) -> None:
    """Wait until every projection (the audit log's included) has applied every committed event."""

    async def no_lag() -> bool:
        status = await container.projections.status(container.pool)
        return all(entry["lag"] == 0 for entry in status.values())

    await eventually(no_lag, message="the projections did not catch up")


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scaivault <args>`` in a process of its own; blocks the event loop, so not for a server this process runs."""
    return subprocess.run([*SCAIVAULT, *args], env=env, capture_output=True, text=True, timeout=60)


async def run_cli_async(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``scaivault <args>`` while this process keeps serving (the test server, a stand-in ScaiKey)."""
    process = await asyncio.create_subprocess_exec(
        *SCAIVAULT, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return subprocess.CompletedProcess(args, process.returncode or 0, out.decode(), err.decode())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
