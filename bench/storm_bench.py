"""Alert storms through the bridge, with KwtSMS's repeat rule on in the simulator.

    .venv/bin/python bench/storm_bench.py [--window 15] [--alerts 30] [--spread 10]
                                          [--storm 200] [--storm-spread 20] [--cap 120]

Runs, each against a fresh simulator (one SMS per number per ``--window``
seconds, else ERR028; 5 requests/s per IP) and a fresh bridge (both child
processes, real SMTP and HTTP on 127.0.0.1):

1. ``--alerts`` different Zabbix alerts over ``--spread`` seconds to an alias
   of 3 numbers, with digests (the default for address routes);
2. the same storm with ``digest: false`` (one SMS per alert, still paced),
   watched for at most ``--cap`` seconds after the last mail;
3. ``--storm`` alerts over ``--storm-spread`` seconds to one number, with digests.

For each it prints: the time from the last mail's 250 until every alert is on
every phone, the provider requests made and how many were refused (ERR028 and
others), SMS per phone, the largest SMS in pages, the shortest gap between two
SMS to one phone, and alerts listed twice on a phone or SMS listing none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path
from typing import Any

import aiosmtplib
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from _common import free_port, start, stop

PHONES = ["96597119440", "96566074414", "96599887766"]
ALERT = re.compile(r"Alert (\d{3})")


def alert(n: int, to: str) -> EmailMessage:
    """A Zabbix problem mail as its default template writes it (short names, so even the
    shortest digest form keeps each alert's number readable)."""
    msg = EmailMessage()
    msg["From"] = "Zabbix <zabbix@monitor.example.com>"
    msg["To"] = to
    msg["Subject"] = f"Problem: Alert {n:03d} disk full"
    msg["Message-ID"] = f"<storm-{n}-{time.time_ns()}@monitor.example.com>"
    body = (
        f"Problem started at 10:00:00 on 2026.11.22\nProblem name: Alert {n:03d} disk full\n"
        f"Host: db{n:03d}\nSeverity: High\nOperational data: used 97 %\nOriginal problem ID: {90000 + n}\n"
    )
    msg.set_content(body, cte="base64")
    return msg


def config(tmp: Path, sim_port: int, smtp_port: int, *, digest: bool, window: float) -> Path:
    data: dict[str, Any] = {
        "smtp": {"listen": [f"127.0.0.1:{smtp_port}"], "hostname": "bridge.bench"},
        "queue": {"path": str(tmp / "outbox.sqlite3")},
        "accounts": {
            "kwt": {
                "provider": "kwtsms-http",
                "url": f"http://127.0.0.1:{sim_port}/API/",
                "username": "demo",
                "password": "demo-password",
                "sender": "KWT-SMS",
                "rate": 2,
                "repeat_interval": window,
            }
        },
        "routes": {"alerts": {"format": "address", "account": "kwt", "domain": "alerts.bench", "digest": digest}},
        "aliases": {"oncall": PHONES},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def fetch(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as reply:  # noqa: S310  (our own simulator on loopback)
        return json.load(reply)


async def run(
    label: str,
    args: argparse.Namespace,
    *,
    count: int,
    spread: float,
    to: str,
    phones: list[str],
    digest: bool,
    cap: float,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        sim_port, smtp_port = free_port(), free_port()
        sim = await start(
            "-m", "bridge", "simulate", "--listen", f"127.0.0.1:{sim_port}", "--repeat-window", str(args.window),
            ready="listening",
        )  # fmt: skip
        bridge = await start(
            "-m",
            "bridge",
            "serve",
            "-c",
            str(config(tmp, sim_port, smtp_port, digest=digest, window=args.window)),
            ready="listening",
        )
        base = f"http://127.0.0.1:{sim_port}/_sim"
        try:
            first = time.time()
            for n in range(count):
                await asyncio.sleep(max(0.0, first + n * spread / max(count - 1, 1) - time.time()))
                await aiosmtplib.send(alert(n, to), hostname="127.0.0.1", port=smtp_port, timeout=30)
            last = time.time()
            wanted = {(n, p) for n in range(count) for p in phones}
            delivered: list[dict[str, Any]] = []
            while time.time() < last + cap:
                delivered = await asyncio.to_thread(fetch, f"{base}/messages")
                seen = {(int(a), p) for d in delivered for a in ALERT.findall(d["text"]) for p in d["numbers"]}
                if wanted <= seen:
                    break
                await asyncio.sleep(0.5)
            requests = [r for r in await asyncio.to_thread(fetch, f"{base}/requests") if r["command"] == "send"]
            refusals = await asyncio.to_thread(fetch, f"{base}/refusals")
        finally:
            await stop(bridge)
            await stop(sim)
    firsts: dict[tuple[int, str], float] = {}
    listed: dict[tuple[int, str], int] = {}
    per_phone: dict[str, list[float]] = {p: [] for p in phones}
    empty = 0
    for d in sorted(delivered, key=lambda d: d["at"]):
        found = [int(a) for a in ALERT.findall(d["text"])]
        empty += not found
        for p in d["numbers"]:
            per_phone.setdefault(p, []).append(d["at"])
            for a in found:
                listed[(a, p)] = listed.get((a, p), 0) + 1
                firsts.setdefault((a, p), d["at"])
    done = set(firsts) >= wanted
    gaps = [b - a for times in per_phone.values() for a, b in pairwise(times)]
    return {
        "label": label,
        "complete": f"{max(firsts.values()) - last:.1f} s"
        if done
        else f"not in {cap:.0f} s ({len(set(firsts) & wanted)}/{len(wanted)})",
        "requests": len(requests),
        "refused": sum(refusals.values()),
        "err028": refusals.get("ERR028", 0),
        "sms_per_phone": max(len(t) for t in per_phone.values()),
        "max_pages": max((d["pages"] for d in delivered), default=0),
        "min_gap": f"{min(gaps):.1f} s" if gaps else "-",
        "twice": sum(1 for v in listed.values() if v > 1),
        "empty": empty,
    }


def table(results: list[dict[str, Any]]) -> None:
    rows = [
        ("every alert on every phone, after the last mail", "complete"),
        ("provider requests", "requests"),
        ("  refused (all codes)", "refused"),
        ("  refused with ERR028", "err028"),
        ("SMS per phone (most)", "sms_per_phone"),
        ("largest SMS, pages", "max_pages"),
        ("shortest gap between SMS to one phone", "min_gap"),
        ("alerts listed twice on a phone", "twice"),
        ("SMS listing no alert", "empty"),
    ]
    width = max(24, *(len(r["label"]) + 2 for r in results))
    print(f"{'':48}" + "".join(f"{r['label']:>{width}}" for r in results))
    for title, key in rows:
        print(f"{title:48}" + "".join(f"{r[key]!s:>{width}}" for r in results))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--window", type=float, default=15.0, help="the simulator's repeat window (KwtSMS: 15 s)")
    parser.add_argument("--alerts", type=int, default=30)
    parser.add_argument("--spread", type=float, default=10.0)
    parser.add_argument("--storm", type=int, default=200)
    parser.add_argument("--storm-spread", type=float, default=20.0)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds to watch the digest: false run")
    args = parser.parse_args()
    alias = "oncall@alerts.bench"
    print(f"{args.alerts} alerts over {args.spread:g} s to a 3-number alias; repeat window {args.window:g} s\n")
    results = [
        await run("digest", args, count=args.alerts, spread=args.spread, to=alias, phones=PHONES, digest=True, cap=300),
        await run(
            "digest: false",
            args,
            count=args.alerts,
            spread=args.spread,
            to=alias,
            phones=PHONES,
            digest=False,
            cap=args.cap,
        ),
    ]
    table(results)
    one = f"{PHONES[0]}@alerts.bench"
    print(f"\n{args.storm} alerts over {args.storm_spread:g} s to one number; repeat window {args.window:g} s\n")
    table(
        [
            await run(
                "digest",
                args,
                count=args.storm,
                spread=args.storm_spread,
                to=one,
                phones=PHONES[:1],
                digest=True,
                cap=600,
            )
        ]
    )


if __name__ == "__main__":
    asyncio.run(main())
