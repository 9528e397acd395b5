"""SMTP load against the bridge, next to a bare aiosmtpd server measured in the same run.

    .venv/bin/python bench/smtp_bench.py [--connections 10] [--messages 2000]

Prints, for the bridge (parse, validate, durable commit with fsync before 250,
dispatch to the simulator running as another process) and for a bare aiosmtpd
server that answers 250 and keeps nothing, under the same load:

- accepted messages per second and send→250 latency p50/p99;
- mail→provider latency p50/p99 with an idle provider (one message at a time);
- the bridge's peak RSS;
- an alert storm: 1000 mails, one text to 5 different numbers each, through an
  account limited to 2 requests/s: provider calls made against the minimum.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, peak_rss_mib, percentile, start, stop


def message(i: int, text: str, numbers: list[str]) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "bench@corp.example.com"
    msg["To"] = "sms@bridge.bench"
    msg["Subject"] = "bench"
    msg["Message-ID"] = f"<bench-{i}-{time.time_ns()}@corp.example.com>"
    msg.set_content(f"sender:KWT-SMS\nmobile:{','.join(numbers)}\ntext:{text}\n")
    return msg


async def load(
    port: int, messages: list[EmailMessage], connections: int
) -> tuple[float, list[float], dict[str, float]]:
    """Send ``messages`` over ``connections`` persistent sessions: (seconds, latencies, start times by text)."""
    queue: asyncio.Queue[EmailMessage] = asyncio.Queue()
    for msg in messages:
        queue.put_nowait(msg)
    latencies: list[float] = []
    started: dict[str, float] = {}

    async def worker() -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=60, start_tls=False)
        await client.connect()
        try:
            while not queue.empty():
                msg = queue.get_nowait()
                started[msg.get_content().rsplit("text:", 1)[-1].strip()] = time.time()
                t0 = time.perf_counter()
                await client.send_message(msg)
                latencies.append(time.perf_counter() - t0)
        finally:
            await client.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    return time.perf_counter() - t0, latencies, started


def bridge_config(
    directory: Path, port: int, sim_port: int, rate: float, queue: dict[str, str] | None = None, name: str = ""
) -> Path:
    """A bridge on ``port`` sending to the simulator; its outbox in ``directory`` unless ``queue`` says."""
    data = {
        "smtp": {"listen": [f"127.0.0.1:{port}"], "hostname": "bridge.bench", "max_connections_per_client": 200},
        "queue": queue or {"path": str(directory / "outbox.sqlite3")},
        "accounts": {
            "bench": {
                "provider": "kwtsms-http",
                "url": f"http://127.0.0.1:{sim_port}/API/",
                "username": "demo",
                "password": "demo-password",
                "sender": "KWT-SMS",
                "rate": rate,
                "max_numbers": 1000,
            }
        },
        "routes": {"body": {"format": "kwtsms", "account": "bench", "recipients": ["sms@bridge.bench"]}},
        "dispatch": {"in_flight": 8},
    }
    path = directory / f"bench-{name or rate}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def delivered(jsonl: Path) -> list[dict[str, object]]:
    if not jsonl.exists():
        return []
    return [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]


async def wait_delivered(jsonl: Path, count: int, seconds: float) -> float:
    t0 = time.perf_counter()
    while sum(len(d["numbers"]) for d in delivered(jsonl)) < count:  # type: ignore[arg-type]
        if time.perf_counter() - t0 > seconds:
            raise RuntimeError(f"only part of {count} numbers delivered after {seconds:.0f} s")
        await asyncio.sleep(0.002)
    return time.perf_counter() - t0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--idle-messages", type=int, default=200)
    parser.add_argument("--storm", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="load rounds, bare and bridge alternating")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="sms-bridge-bench-") as tmp:
        directory = Path(tmp)
        jsonl = directory / "delivered.jsonl"
        sim_port, bare_port, bridge_port = free_port(), free_port(), free_port()
        sim = await start(
            "-m", "bridge", "simulate", "--listen", f"127.0.0.1:{sim_port}", "--jsonl", str(jsonl),
            "--max-rate", "0", "--repeat-window", "0", "--accounts", str(write_sim_accounts(directory)),
            ready="simulator listening",
        )  # fmt: skip
        bare = await start(str(Path(__file__).parent / "bare_smtpd.py"), str(bare_port), ready="listening")
        bridge = await start(
            "-m", "bridge", "serve", "-c", str(bridge_config(directory, bridge_port, sim_port, rate=50)),
            ready="listening on",
        )  # fmt: skip
        try:
            n, c = args.messages, args.connections
            await load(bare_port, [message(i, f"warm {i}", [f"9655{i:07d}"]) for i in range(min(200, n))], c)
            rounds: list[tuple[float, ...]] = []
            for r in range(args.rounds):  # bare and bridge alternate, so both see the same machine
                base = r * n
                bare_s, bare_lat, _ = await load(
                    bare_port, [message(base + i, "bare", [f"9655{base + i:07d}"]) for i in range(n)], c
                )
                bridge_s, bridge_lat, _ = await load(
                    bridge_port, [message(base + i, "load test", [f"9655{base + i:07d}"]) for i in range(n)], c
                )
                rounds.append(
                    (
                        n / bridge_s,
                        n / bare_s,
                        percentile(bridge_lat, 50),
                        percentile(bare_lat, 50),
                        percentile(bridge_lat, 99),
                        percentile(bare_lat, 99),
                    )
                )
                await wait_delivered(jsonl, (r + 1) * n, 120)

            # idle provider: one message at a time
            idle_lat: list[float] = []
            for i in range(args.idle_messages):
                numbers_before = sum(len(d["numbers"]) for d in delivered(jsonl))  # type: ignore[arg-type]
                text = f"idle {i}"
                t_send = time.time()
                await load(bridge_port, [message(10**7 + i, text, [f"9656{i:07d}"])], 1)
                await wait_delivered(jsonl, numbers_before + 1, 30)
                at = float(next(d["at"] for d in reversed(delivered(jsonl)) if d["text"] == text))  # type: ignore[arg-type]
                idle_lat.append(at - t_send)
            rss = peak_rss_mib(bridge.pid)
        finally:
            for proc in (bridge, bare):
                await stop(proc)

        # alert storm through a 2 requests/s account (a fresh bridge and outbox)
        storm_dir = directory / "storm"
        storm_dir.mkdir()
        storm_port = free_port()
        bridge = await start(
            "-m", "bridge", "serve", "-c", str(bridge_config(storm_dir, storm_port, sim_port, rate=2)),
            ready="listening on",
        )  # fmt: skip
        try:
            before_requests = len(delivered(jsonl))
            already = sum(len(d["numbers"]) for d in delivered(jsonl))  # type: ignore[arg-type]
            storm = [
                message(
                    10**6 + i,
                    "ALERT: core switch down",
                    [f"965{5 + (i * 5 + k) // 10**7}{(i * 5 + k) % 10**7:07d}" for k in range(5)],
                )
                for i in range(args.storm)
            ]
            t0 = time.perf_counter()
            await load(storm_port, storm, c)
            accepted_s = time.perf_counter() - t0
            await wait_delivered(jsonl, already + 5 * args.storm, 600)
            drained_s = time.perf_counter() - t0
            storm_calls = len(delivered(jsonl)) - before_requests
        finally:
            await stop(bridge)
            await stop(sim)

    minimum_calls = math.ceil(5 * args.storm / 200)
    print(
        f"sms-bridge benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, {c} connections, "
        f"{n} messages a round, {len(rounds)} rounds: median (lowest-highest)"
    )
    print(f"{'':26}{'bridge (durable)':>22}{'bare aiosmtpd':>22}{'ratio':>18}")

    def cell(values: list[float], scale: float = 1.0, fmt: str = ".0f") -> str:
        ordered = sorted(v * scale for v in values)
        return f"{statistics.median(ordered):{fmt}} ({ordered[0]:{fmt}}-{ordered[-1]:{fmt}})"

    columns = [list(column) for column in zip(*rounds, strict=True)]
    ratio = [a / b for a, b in zip(columns[0], columns[1], strict=True)]
    print(f"{'accepted messages/s':26}{cell(columns[0]):>22}{cell(columns[1]):>22}{cell(ratio, fmt='.2f'):>18}")
    for label, i in (("send→250 p50 (ms)", 2), ("send→250 p99 (ms)", 4)):
        print(f"{label:26}{cell(columns[i], 1000, '.1f'):>22}{cell(columns[i + 1], 1000, '.1f'):>22}")
    for pct in (50, 99):
        print(f"{f'mail→provider p{pct} (ms, idle)':26}{percentile(idle_lat, pct) * 1000:22.1f}")
    print(f"{'bridge peak RSS (MiB)':26}{rss:22.1f}")
    print(
        f"alert storm: {args.storm} mails × 5 numbers, account at 2 requests/s: {storm_calls} provider calls "
        f"(minimum {minimum_calls}); accepted in {accepted_s:.1f} s, all delivered after {drained_s:.1f} s"
    )


def write_sim_accounts(directory: Path) -> Path:
    path = directory / "sim-accounts.yaml"
    path.write_text(
        yaml.safe_dump(
            {"kwtsms": [{"username": "demo", "password": "demo-password", "balance": 10**7, "senders": ["KWT-SMS"]}]}
        )
    )
    return path


if __name__ == "__main__":
    asyncio.run(main())
