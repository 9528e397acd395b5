"""What the status page costs: the bridge's memory and CPU at idle, with and without it, in one run.

    .venv/bin/python bench/idle_bench.py [--idle 20] [--views 50]

Starts the bridge twice as a child process on the same config (with its
in-process simulator), once without ``admin.listen`` and once with it, where
each page (overview, list, one message) is fetched ``--views`` times first.
Then it leaves each alone for ``--idle`` seconds and prints the peak and
current RSS and the CPU seconds used while idle.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, peak_rss_mib, start, stop


def rss_mib(pid: int) -> float:
    match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    return int(match.group(1)) / 1024 if match else float("nan")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def config(tmp: Path, smtp: int, sim: int, admin: int | None) -> Path:
    data: dict[str, Any] = yaml.safe_load((Path(__file__).parent.parent / "config.example.yaml").read_text())
    data["smtp"]["listen"] = [f"127.0.0.1:{smtp}"]
    data["queue"]["path"] = str(tmp / "outbox.sqlite3")
    data["simulator"]["listen"] = f"127.0.0.1:{sim}"
    data["accounts"]["demo"]["url"] = f"http://127.0.0.1:{sim}/API/"
    data["accounts"]["demo"]["password"] = "demo-password"  # noqa: S105  (the simulator's demo account)
    if admin is None:
        data.pop("admin", None)
    else:
        data["admin"] = {"listen": f"127.0.0.1:{admin}"}
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def one(label: str, page: bool, idle: float, views: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        smtp, sim, admin = free_port(), free_port(), free_port()
        proc = await start(
            "-m",
            "bridge",
            "serve",
            "-c",
            str(config(tmp, smtp, sim, admin if page else None)),
            ready="listening on 127.0.0.1",
        )
        try:
            for i in range(20):  # some messages to show
                msg = f"From: bench@corp.example\r\nTo: sms@sms-bridge.local\r\nSubject: x\r\n\r\nmobile:96597119440\r\ntext:idle bench {i}\r\n"
                await aiosmtplib.send(
                    msg,
                    sender="bench@corp.example",
                    recipients=["sms@sms-bridge.local"],
                    hostname="127.0.0.1",
                    port=smtp,
                )
            if page:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin}") as client:
                    listing = await client.get("/messages")
                    first = re.search(r'href="/messages/([0-9a-f]{22})"', listing.text)
                    assert first, "the list shows a message"
                    for _ in range(views):
                        for path in ("/", "/messages", f"/messages/{first.group(1)}"):
                            assert (await client.get(path)).status_code == 200
            assert proc.pid is not None
            cpu_before, t0 = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(idle)  # the measurement itself: the bridge left alone
            cpu = cpu_seconds(proc.pid) - cpu_before
            return {
                "label": label,
                "peak": peak_rss_mib(proc.pid),
                "rss": rss_mib(proc.pid),
                "cpu": cpu / (time.monotonic() - t0) * 100,
            }
        finally:
            await stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--views", type=int, default=50)
    args = parser.parse_args()
    rows = [
        await one("no status page", False, args.idle, args.views),
        await one("status page, viewed", True, args.idle, args.views),
    ]
    print(f"{'':24}{'peak RSS':>12}{'RSS at idle':>14}{'CPU at idle':>14}")
    for r in rows:
        print(f"{r['label']:24}{r['peak']:>9.1f} MiB{r['rss']:>11.1f} MiB{r['cpu']:>12.2f} %")
    print(
        f"{'difference':24}{rows[1]['peak'] - rows[0]['peak']:>+9.1f} MiB{rows[1]['rss'] - rows[0]['rss']:>+11.1f} MiB{rows[1]['cpu'] - rows[0]['cpu']:>+12.2f} %"
    )


if __name__ == "__main__":
    asyncio.run(main())
