"""Shared pieces of the benchmarks: child processes, ports, percentiles, RSS."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


def peak_rss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmHWM:\s+(\d+) kB", text)
    return int(match.group(1)) / 1024 if match else float("nan")


async def start(*args: str, ready: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    """Start a child (stdout and stderr merged) and wait for a line containing ``ready``."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None
    seen: list[str] = []
    while True:
        line = await asyncio.wait_for(proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError(f"{' '.join(args)} exited before it was ready:\n" + "".join(seen))
        seen.append(line.decode("utf-8", "replace"))
        if ready in seen[-1]:
            break

    async def drain() -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    proc._drain = asyncio.ensure_future(drain())  # type: ignore[attr-defined]  # keep the pipe from filling
    return proc


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
