"""The outbox with 100,000 queued messages: memory stays flat and claiming stays O(log n).

    .venv/bin/python bench/outbox_bench.py [--rows 100000]

Fills a fresh SQLite outbox in steps, all rows due now, each with its own text
(so no claim can combine them), and at each size prints the process's RSS and
the time to claim one row and put it back (the dispatcher's hot path), next to
the same figures at the first step as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from bridge.core.model import SmsRequest
from bridge.outbox import Accepted, Outbox, SqliteOutbox, Tx, claims, intake


def rss_mib() -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path("/proc/self/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def fill(conn: Tx, start: int, count: int) -> None:
    conn.now -= 1  # due a second ago
    for i in range(start, start + count):
        request = SmsRequest("body", "bench", "kwtsms-http", "KWT-SMS", (f"9655{i:07d}",), f"text {i}", 1, "gsm7", 1, 1)
        intake.enqueue(conn, Accepted("smtp", "a@b.c", ("sms@b",), "", "", (request,)))


async def fill_to(outbox: Outbox, filled: int, target: int) -> int:
    """Queue rows ``filled`` up to ``target``, in transactions of 5,000; the new count."""
    while filled < target:
        chunk = min(5_000, target - filled)
        await outbox.run(fill, filled, chunk)
        filled += chunk
    return filled


async def claim_timings(outbox: Outbox, times: int = 300) -> list[float]:
    """Seconds to claim one row and put it back (the dispatcher's hot path), ``times`` times."""
    timings = []
    for _ in range(times):
        t0 = time.perf_counter()
        group = await outbox.run(claims.claim, "bench")
        await outbox.run(claims.unclaim, group.ids)
        timings.append(time.perf_counter() - t0)
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    steps = [s for s in (1_000, 10_000, 50_000, 100_000, 200_000) if s <= args.rows] or [args.rows]
    with tempfile.TemporaryDirectory(prefix="sms-bridge-outbox-bench-") as tmp:
        async with SqliteOutbox(Path(tmp) / "outbox.sqlite3") as outbox:
            print(f"{'queued rows':>12} {'RSS MiB':>9} {'claim+unclaim mean ms':>22} {'p99 ms':>8}")
            filled = 0
            baseline: tuple[float, float] | None = None
            for target in steps:
                filled = await fill_to(outbox, filled, target)
                timings = await claim_timings(outbox)
                mean = statistics.mean(timings) * 1000
                p99 = sorted(timings)[int(len(timings) * 0.99) - 1] * 1000
                rss = rss_mib()
                baseline = baseline or (rss, mean)
                print(f"{filled:>12} {rss:>9.1f} {mean:>22.3f} {p99:>8.3f}")
            print(f"baseline (first step): RSS {baseline[0]:.1f} MiB, claim {baseline[1]:.3f} ms")


if __name__ == "__main__":
    asyncio.run(main())
