"""The PostgreSQL outbox beside the SQLite one, in the same run, on the same machine.

    .venv/bin/python bench/pg_bench.py [--connections 10] [--messages 2000] [--rows 100000]

Starts a throwaway PostgreSQL cluster (Debian's ``postgresql``, as the tests do)
and the simulator, then measures, rounds alternating between the set-ups:

- accepted mails/s over 10 SMTP connections, and send→250 p50/p99, against
  one bridge on SQLite, one bridge on PostgreSQL, and two bridges sharing one
  PostgreSQL database (the connections split between them); every bridge also
  dispatches what it accepts to the simulator meanwhile, and each round starts
  once the round before it is delivered, so the other set-ups are idle;
- claim latency (claim one row and put it back: the dispatcher's hot path) with
  ``--rows`` rows queued, on SQLite and on PostgreSQL.

``synchronous_commit`` is on and SQLite runs with ``synchronous=FULL``: every
250 follows a durable commit on both. The cluster is local (a Unix-socket-free
TCP loopback connection), so these figures are the floor of what a networked
database adds; a real deployment adds its round-trip time to each commit.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from _common import free_port, percentile, start, stop
from outbox_bench import claim_timings, fill_to
from smtp_bench import bridge_config, load, message, wait_delivered, write_sim_accounts

from bridge.outbox import Outbox, SqliteOutbox
from bridge.outbox.pg import PgOutbox
from tests import pg as pgcluster


async def one_round(ports: list[int], n: int, connections: int, base: int) -> tuple[float, list[float]]:
    """``n`` messages over ``connections`` sessions spread over ``ports``: (messages/s, latencies)."""
    share = [connections // len(ports) + (1 if i < connections % len(ports) else 0) for i in range(len(ports))]
    per_port = [n * s // connections for s in share]
    per_port[0] += n - sum(per_port)
    jobs = []
    offset = base
    for port, count, conns in zip(ports, per_port, share, strict=True):
        msgs = [
            message(offset + i, f"pg bench {offset + i}", [f"9655{(offset + i) % 10**7:07d}"]) for i in range(count)
        ]
        offset += count
        jobs.append(load(port, msgs, conns))
    t0 = time.perf_counter()
    results = await asyncio.gather(*jobs)
    seconds = time.perf_counter() - t0
    return n / seconds, [lat for _, lats, _ in results for lat in lats]


async def claim_latency(store: Outbox, rows: int) -> list[float]:
    await fill_to(store, 0, rows)
    return await claim_timings(store)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    pg_dir = pgcluster.throwaway_directory()
    cluster = pgcluster.create(pg_dir)
    procs: list[asyncio.subprocess.Process] = []
    try:
        with tempfile.TemporaryDirectory(prefix="sms-bridge-pg-bench-") as tmp:
            directory = Path(tmp)
            sim_port = free_port()
            jsonl = directory / "delivered.jsonl"
            procs.append(
                await start(
                    "-m",
                    "bridge",
                    "simulate",
                    "--listen",
                    f"127.0.0.1:{sim_port}",
                    "--jsonl",
                    str(jsonl),
                    "--max-rate",
                    "0",
                    "--repeat-window",
                    "0",
                    "--accounts",
                    str(write_sim_accounts(directory)),
                    ready="simulator listening",
                )
            )
            one_url, two_url = cluster.create_database(), cluster.create_database()
            setups: dict[str, list[int]] = {}
            layouts = {
                "SQLite, 1 bridge": [("sqlite", {"path": str(directory / "outbox.sqlite3")})],
                "PostgreSQL, 1 bridge": [("pg1", {"url": one_url, "instance": "one"})],
                "PostgreSQL, 2 bridges": [
                    ("pg2a", {"url": two_url, "instance": "a"}),
                    ("pg2b", {"url": two_url, "instance": "b"}),
                ],
            }
            for label, bridges in layouts.items():
                setups[label] = []
                for name, queue in bridges:
                    port = free_port()
                    path = bridge_config(directory, port, sim_port, 50, queue, name)
                    procs.append(await start("-m", "bridge", "serve", "-c", str(path), ready="listening on"))
                    setups[label].append(port)
            n, c = args.messages, args.connections
            sent = 0
            for k, ports in enumerate(setups.values()):  # warm up each
                await one_round(ports, 200, c, 9 * 10**6 + k * 200)
                sent += 200
            await wait_delivered(jsonl, sent, 120)
            results: dict[str, list[tuple[float, float, float]]] = {label: [] for label in setups}
            for r in range(args.rounds):
                for i, (label, ports) in enumerate(setups.items()):
                    rate, lat = await one_round(ports, n, c, (r * len(setups) + i) * n)
                    results[label].append((rate, percentile(lat, 50), percentile(lat, 99)))
                    sent += n
                    await wait_delivered(jsonl, sent, 300)  # each set-up measured with the others idle
            for proc in procs[1:]:
                await stop(proc)

            claims: dict[str, list[float]] = {}
            async with SqliteOutbox(directory / "claims.sqlite3") as sqlite_store:
                claims["SQLite"] = await claim_latency(sqlite_store, args.rows)
            async with PgOutbox(cluster.create_database(), instance="bench") as pg_store:
                claims["PostgreSQL"] = await claim_latency(pg_store, args.rows)
    finally:
        for proc in procs:
            await stop(proc)
        pgcluster.remove(pg_dir)

    print(
        f"sms-bridge outbox benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"PostgreSQL {cluster.bin.parent.name} (local, synchronous_commit on), {args.connections} connections, "
        f"{args.messages} mails a round, {args.rounds} rounds: median (lowest-highest)"
    )

    def cell(values: list[float], scale: float = 1.0, fmt: str = ".0f") -> str:
        ordered = sorted(v * scale for v in values)
        return f"{statistics.median(ordered):{fmt}} ({ordered[0]:{fmt}}-{ordered[-1]:{fmt}})"

    print(f"{'':24}{'accepted mails/s':>20}{'send→250 p50 ms':>20}{'send→250 p99 ms':>20}")
    for label, rows in results.items():
        rates, p50, p99 = (list(col) for col in zip(*rows, strict=True))
        print(f"{label:24}{cell(rates):>20}{cell(p50, 1000, '.1f'):>20}{cell(p99, 1000, '.1f'):>20}")
    print(f"claim + put back with {args.rows:,} rows queued (300 times):")
    for label, timings in claims.items():
        print(
            f"  {label:12} mean {statistics.mean(timings) * 1000:.2f} ms, p50 {percentile(timings, 50) * 1000:.2f} ms, "
            f"p99 {percentile(timings, 99) * 1000:.2f} ms"
        )


if __name__ == "__main__":
    asyncio.run(main())
