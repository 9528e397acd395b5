"""Two bridges, one PostgreSQL outbox, on a real server.

- a burst split between two bridge processes, one killed with ``kill -9``
  mid-burst: every acknowledged mail is sent exactly once, or is ``unknown``
  if it was being handed to the provider, and nothing is sent twice;
- the account's rate is a total over both bridges while both are busy;
- the same Message-ID given to each bridge is queued once;
- PostgreSQL restarted under load: ``4xx`` replies while it is away, nothing
  acknowledged is lost, and the bridges carry on without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_text
from tests import pg as pgcluster
from tests.helpers import (
    RunningBridge,
    config_data,
    eventually,
    mail,
    queue_section,
    running_bridge,
    running_simulator,
    running_sink,
    submit,
)
from tests.pg import PASSWORD
from tests.test_daemon_process import daemon

pytestmark = pytest.mark.usefixtures("pg_url")


def instance_config(tmp_path: Path, sim_url: str, pg_url: str, name: str, **kwargs: Any) -> dict[str, Any]:
    data = config_data(tmp_path, sim_url, **kwargs)
    data["queue"] = queue_section(tmp_path / name) | {"url": pg_url, "instance": name, "lease": 4}
    return data


def write(tmp_path: Path, data: dict[str, Any], name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def by_text(sim: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in sim.delivered:
        counts[item.text] = counts.get(item.text, 0) + 1
    return counts


async def test_kill_9_of_one_bridge_mid_burst_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, pg_url: str
) -> None:
    mails = {i: mail(f"mobile:9655{i:07d}\ntext:m{i}", message_id=f"<two-{i}@corp.example.com>") for i in range(80)}
    async with running_simulator(max_rate=0) as (sim, url):
        a_path = write(tmp_path, instance_config(tmp_path, url, pg_url, "a", account={"rate": 50}), "a")
        b_path = write(tmp_path, instance_config(tmp_path, url, pg_url, "b", account={"rate": 50}), "b")
        async with daemon(a_path) as a, daemon(b_path) as b:
            ports = {"a": await a.port, "b": await b.port}
            queue: asyncio.Queue[int] = asyncio.Queue()
            for i in mails:
                queue.put_nowait(i)
            acked: dict[int, str] = {}
            retry: list[int] = []
            killed = asyncio.Event()

            async def client(n: int) -> None:
                while not queue.empty():
                    i = queue.get_nowait()
                    target = "a" if (i + n) % 2 else "b"
                    if killed.is_set() and target == "a":
                        target = "b"
                    try:
                        code, _ = await submit(ports[target], mails[i])
                    except Exception:  # noqa: BLE001  (a died mid-session)
                        code = 0
                    if code != 250:
                        retry.append(i)
                        continue
                    acked[i] = target
                    if len(acked) >= 30 and not killed.is_set():
                        killed.set()
                        a.proc.send_signal(signal.SIGKILL)

            await asyncio.gather(*(client(n) for n in range(6)))
            assert killed.is_set()
            for i in retry:  # what got no 250 is sent again, to the bridge still up (same Message-ID)
                code, _ = await submit(ports["b"], mails[i])
                assert code == 250
                acked[i] = "b"
            view = RunningBridge(load_text(b_path.read_text(), env={}), 0).rows
            await eventually(
                lambda: len(view()) == len(mails) and all(r.delivery.state in ("sent", "unknown") for r in view()),
                "every message final, a's claims taken back by b after their lease",
                within=60,
            )
            rows = {r.request.text: r for r in view()}
    assert set(acked) == set(mails)
    assert set(rows) == {f"m{i}" for i in mails}  # every acknowledged mail has its one row
    delivered = by_text(sim)
    assert all(count == 1 for count in delivered.values())  # nothing twice
    for text, row in rows.items():
        if row.delivery.state == "sent":
            assert delivered.get(text) == 1
        else:  # a was handing it to the provider when it died: unknown, and not resent
            assert row.delivery.state == "unknown"
            assert delivered.get(text, 0) <= 1
    assert any(r.delivery.claimed_by == "b" for r in rows.values())


async def test_the_rate_is_shared_by_both_bridges(tmp_path: Path, pg_url: str) -> None:
    """Rate 4/s on the account, two busy bridges: the provider (which locks out a fifth
    request within a second) sees at most 4 in any second, where the two bridges would
    send 8 if each counted only its own."""
    async with running_simulator(max_rate=4) as (sim, url):
        settings: dict[str, Any] = {"account": {"rate": 4}, "dispatch": {"combine": False}}
        a_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "a", **settings)), env={})
        b_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "b", **settings)), env={})
        async with running_bridge(a_cfg) as a, running_bridge(b_cfg) as b:
            sends = [submit((a if i % 2 else b).port, mail(f"mobile:9655{i:07d}\ntext:rate {i}")) for i in range(24)]
            assert {code for code, _ in await asyncio.gather(*sends)} == {250}
            await eventually(lambda: len(sim.delivered) == 24, "all 24 SMS", within=30)
            served = {r.delivery.claimed_by for r in a.rows()}
    times = sorted(r["at"] for r in sim.requests if r["command"] == "send")
    assert len(times) == 24
    assert served == {"a", "b"}  # both bridges sent
    assert sim.refusals.get("ERR024", 0) == 0  # never locked out
    closest = min(times[i + 4] - times[i] for i in range(len(times) - 4))
    assert closest >= 1.0, f"5 requests within {closest:.3f} s"


async def test_the_same_message_id_given_to_each_bridge_is_queued_once(tmp_path: Path, pg_url: str) -> None:
    async with running_simulator(max_rate=0) as (sim, url):
        a_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "a")), env={})
        b_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "b")), env={})
        async with running_bridge(a_cfg) as a, running_bridge(b_cfg) as b:
            for i in range(10):
                same = mail(f"mobile:96597119440\ntext:once {i}", message_id=f"<same-{i}@corp.example.com>")
                replies = await asyncio.gather(submit(a.port, same), submit(b.port, same))
                assert [code for code, _ in replies] == [250, 250]
                assert replies[0][1].split()[-1] == replies[1][1].split()[-1]  # the same queue id
            await eventually(lambda: len(sim.delivered) == 10, "10 SMS")
            assert len(a.rows()) == 10
    assert sorted(by_text(sim).values()) == [1] * 10


async def test_ack_delivered_is_answered_with_the_outcome_though_another_bridge_is_idle(
    tmp_path: Path, pg_url: str
) -> None:
    """The SMS a session waits for are kept for its own bridge (the other would send them
    unseen by the session, which could then only answer ``250 queued``)."""
    async with running_simulator(max_rate=0) as (sim, url):
        route = {"ack": "delivered", "ack_timeout": 20}
        configs = [
            load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, n, body_route=route)), env={}) for n in "ab"
        ]
        async with running_bridge(configs[0]) as a, running_bridge(configs[1]):
            replies = await asyncio.gather(
                *(submit(a.port, mail(f"mobile:9655000{i:04d}\ntext:waited for {i}")) for i in range(20))
            )
            refused = await submit(a.port, mail("mobile:96566074414\nsender:NOPE\ntext:refused"))
            rows = a.rows()
    assert [text.split(" (")[0].split(" as ")[0] for _, text in replies] == ["2.0.0 sent"] * 20
    assert refused[0] == 550
    assert {r.delivery.claimed_by for r in rows} == {"a"}
    assert len(sim.delivered) == 20


async def test_a_postgresql_restart_under_load_costs_only_4xx_replies(
    tmp_path: Path, pg_url: str, pg_cluster: pgcluster.Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_simulator(max_rate=0) as (sim, url):
        cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "a", account={"rate": 50})), env={})
        async with running_bridge(cfg) as bridge:
            replies: dict[int, int] = {}
            sent_mails: dict[int, EmailMessage] = {}
            stop = asyncio.Event()
            counter = iter(range(100_000))

            async def client() -> None:
                while not stop.is_set():
                    i = next(counter)
                    sent_mails[i] = mail(f"mobile:9655{i:07d}\ntext:load {i}", message_id=f"<load-{i}@corp.example>")
                    try:
                        replies[i], _ = await submit(bridge.port, sent_mails[i])
                    except Exception:  # noqa: BLE001  (recorded as no reply)
                        replies[i] = 0

            clients = [asyncio.create_task(client()) for _ in range(4)]
            await eventually(lambda: sum(c == 250 for c in replies.values()) >= 20, "mail flowing")
            await asyncio.to_thread(pg_cluster.stop, "fast")
            during = len(replies)
            await eventually(lambda: len(replies) >= during + 8, "replies while PostgreSQL is down", within=60)
            outage = {i: c for i, c in replies.items() if i >= during + 4}  # after the server had gone
            await asyncio.to_thread(pg_cluster.start)
            after = len(replies)
            await eventually(
                lambda: sum(c == 250 for i, c in replies.items() if i >= after) >= 10, "250 again, no restart", 60
            )
            stop.set()
            await asyncio.gather(*clients)
            acked = {i for i, c in replies.items() if c == 250}
            await eventually(lambda: len(by_text(sim)) >= len(acked), "every acknowledged mail sent", within=60)
            back = "outbox presence: the database answers again"
            await eventually(lambda: any(back in r.getMessage() for r in caplog.records), "the presence back", 30)
    assert outage
    assert {c for c in outage.values()} <= {451, 421}  # temporary failures only, never 250 or 5xx
    assert any(c == 451 for c in outage.values())
    assert {c for c in replies.values()} <= {250, 451, 421, 0}
    delivered = by_text(sim)
    assert all(count == 1 for count in delivered.values())
    assert {f"load {i}" for i in acked} <= set(delivered)  # nothing acknowledged was lost
    # the outage is said in a few lines, not one per connection attempt, and its end too;
    # each mail it turned away in one line, without a traceback
    assert not [r for r in caplog.records if r.name.startswith("psycopg")]
    presence = [r.getMessage() for r in caplog.records if r.getMessage().startswith("outbox presence:")]
    assert 2 <= len(presence) <= 4, presence
    assert "answers again" in presence[-1]
    assert not [r.getMessage() for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any(r.getMessage().startswith("not accepted from=") for r in caplog.records)


async def test_a_failure_notice_is_mailed_once_though_both_bridges_could(tmp_path: Path, pg_url: str) -> None:
    """The simulator refuses the sender (ERR008, permanent): each sender is told once, by
    whichever bridge holds the notices, though both bridges have a smarthost."""
    async with running_simulator(max_rate=0) as (sim, url), running_sink() as (sink, sink_port):
        a_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "a", sink_port=sink_port)), env={})
        b_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "b", sink_port=sink_port)), env={})
        async with running_bridge(a_cfg) as a, running_bridge(b_cfg) as b:
            for i in range(6):
                body = f"sender:NOT-MINE\nmobile:9655{i:07d}\ntext:refused {i}"
                code, _ = await submit((a if i % 2 else b).port, mail(body, mail_from=f"app{i}@corp.example.com"))
                assert code == 250
            await eventually(
                lambda: len(a.rows()) == 6 and all(r.delivery.notice == "sent" for r in a.rows()),
                "every failure's notice sent",
                within=30,
            )
            told = sorted(str(envelope.rcpt_tos[0]) for envelope in sink.messages)
    assert sim.refusals.get("ERR008") == 6
    assert told == sorted(f"app{i}@corp.example.com" for i in range(6))  # once each


async def test_the_status_page_lists_the_bridges_sharing_the_outbox(tmp_path: Path, pg_url: str) -> None:
    import httpx

    from tests.helpers import free_port

    port = free_port()
    async with running_simulator(max_rate=0) as (_, url):
        a_data = instance_config(tmp_path, url, pg_url, "a", extra={"admin": {"listen": f"127.0.0.1:{port}"}})
        a_cfg = load_text(yaml.safe_dump(a_data), env={})
        b_cfg = load_text(yaml.safe_dump(instance_config(tmp_path, url, pg_url, "b")), env={})
        async with running_bridge(a_cfg), running_bridge(b_cfg), httpx.AsyncClient() as client:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            text = ""
            while "<td>b</td>" not in text:  # poll until b's first heartbeat is in
                assert loop.time() < deadline, "bridge b never listed"
                text = (await client.get(f"http://127.0.0.1:{port}/")).text
                await asyncio.sleep(0.1)
    assert '<td>a <span class="muted">(this one)</span></td>' in text
    assert "postgresql postgresql://bridge:***@" in text
    assert PASSWORD not in text


async def test_a_bridge_whose_name_was_taken_while_it_was_cut_off_stops_with_an_error(
    tmp_path: Path, pg_url: str
) -> None:
    """Its session ends, and a bridge with the same name takes the name before it is back:
    it cannot tell its rows from the other's, so it drains and exits 1 (systemd restarts it)."""
    async with running_simulator() as (_, url):
        a_path = write(tmp_path, instance_config(tmp_path, url, pg_url, "x"), "x")
        async with daemon(a_path) as a:
            await a.port
            async with pgcluster.name_taken_from(pg_url, "x"):
                assert await asyncio.wait_for(a.proc.wait(), 30) == 1
    log = "".join(a.log)
    assert "another bridge took the instance name 'x'" in log
    assert "stopped: another bridge runs as instance 'x'" in log
    assert "Traceback" not in log
