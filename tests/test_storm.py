"""The alert path end to end: per-number pacing and digests, over SMTP and real HTTP.

The simulator enforces KwtSMS's repeat rule (one SMS per number per window);
the window is shortened to keep the tests quick, and the bridge's
``repeat_interval`` is set to match, as an operator would for a provider
with another rule. ``bench/storm_bench.py`` runs the same storm with 15 s.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from itertools import pairwise
from pathlib import Path

import yaml

from bridge.outbox import State
from tests.helpers import (
    config_data,
    eventually,
    mail,
    make_config,
    run_cli,
    running_bridge,
    running_simulator,
    submit,
)

WINDOW = 1.5
K1, K2 = "96597119440", "96566074414"


def alert(n: int, to: str = "oncall@alerts.bridge.test") -> EmailMessage:
    return mail(
        f"Problem started at 10:00:{n:02d} on 2026.11.22\nProblem name: Disk {n} is full\nHost: db{n:02d}\nSeverity: High\n",
        to=to,
        subject=f"Problem: Disk {n} is full",
        mail_from="zabbix@monitor.example.com",
    )


async def test_a_storm_to_an_alias_reaches_each_phone_in_few_sms_without_err028(tmp_path: Path) -> None:
    """Every alert once on every phone, in digests, one provider call per window, no refusals."""
    async with running_simulator(repeat_window=WINDOW) as (sim, url):
        config = make_config(tmp_path, url, account={"repeat_interval": WINDOW})
        async with running_bridge(config) as bridge:
            for n in range(12):
                code, _ = await submit(bridge.port, alert(n))
                assert code == 250
            await eventually(
                lambda: all(r.delivery.state == State.SENT for r in bridge.rows()) and len(bridge.rows()) == 12,
                "every alert to be sent",
            )
    assert sim.refusals.get("ERR028", 0) == 0
    for phone in (K1, K2):
        texts = [d.text for d in sim.delivered if phone in d.numbers]
        listed = [int(m) for t in texts for m in re.findall(r"Disk (\d+) is full", t)]
        assert sorted(listed) == list(range(12))  # each alert exactly once on each phone
        assert all(re.search(r"Disk \d+ is full", t) for t in texts)  # no SMS without an alert
    assert len(sim.delivered) <= 4  # the first alone, then digests to both phones in one call each
    assert all(len(d.numbers) == 2 for d in sim.delivered)
    rows = bridge.rows()
    carried = [r for r in rows if r.delivery.carrier]
    assert carried, "the digest's rows record which row carried them"
    by_id = {r.id: r for r in rows}
    for row in carried:
        lead = by_id[row.delivery.carrier]
        assert row.delivery.provider_msg_id == lead.delivery.provider_msg_id != ""
    assert sum(r.delivery.points_charged or 0 for r in rows) == sum(d.points for d in sim.delivered)
    follower = next(r for r in carried if r.delivery.carrier != r.id)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, "http://127.0.0.1:9", account={"repeat_interval": WINDOW})))
    code, shown = await run_cli("queue", "-c", str(path), "show", follower.id)
    assert code == 0
    assert f"carried in:      row {follower.delivery.carrier}'s SMS" in shown
    assert f"provider id:     {follower.delivery.provider_msg_id}" in shown


async def test_a_paced_number_does_not_hold_up_other_numbers(tmp_path: Path) -> None:
    """Three SMS to one number wait their turn; an SMS to another number goes at once."""
    async with running_simulator(repeat_window=WINDOW) as (sim, url):
        config = make_config(tmp_path, url, account={"repeat_interval": WINDOW})
        async with running_bridge(config) as bridge:
            for text in ("one", "two", "three"):
                await submit(bridge.port, mail(f"mobile:{K1}\ntext:{text}"))
            await submit(bridge.port, mail(f"mobile:{K2}\ntext:other"))
            await eventually(lambda: len(sim.delivered) == 4, "all four SMS", within=30)
    assert sim.refusals.get("ERR028", 0) == 0
    order = [d.text for d in sim.delivered]
    assert order.index("other") < order.index("two")  # not queued behind K1's wait
    times = [d.at for d in sim.delivered if d.numbers == [K1]]
    assert [d.text for d in sim.delivered if d.numbers == [K1]] == ["one", "two", "three"]
    assert all(b - a >= WINDOW for a, b in pairwise(times))


async def test_a_resolution_waiting_with_its_problem_travels_in_the_same_sms(tmp_path: Path) -> None:
    async with running_simulator(repeat_window=WINDOW) as (sim, url):
        config = make_config(tmp_path, url, account={"repeat_interval": WINDOW})
        async with running_bridge(config) as bridge:
            await submit(bridge.port, alert(1, to=f"{K1}@alerts.bridge.test"))
            await eventually(lambda: len(sim.delivered) == 1, "the first alert")
            await submit(bridge.port, alert(2, to=f"{K1}@alerts.bridge.test"))
            resolved = mail(
                "Problem has been resolved at 10:01:00 on 2026.11.22\nProblem name: Disk 2 is full\nHost: db02\nSeverity: High\n",
                to=f"{K1}@alerts.bridge.test",
                subject="Resolved in 1m: Disk 2 is full",
            )
            await submit(bridge.port, resolved)
            await eventually(lambda: len(sim.delivered) == 2, "the digest")
    text = sim.delivered[1].text
    assert "PROBLEM" in text
    assert "RESOLVED" in text
    assert text.index("PROBLEM") < text.index("RESOLVED")


async def test_digest_false_sends_each_alert_alone_but_still_paced(tmp_path: Path) -> None:
    async with running_simulator(repeat_window=WINDOW) as (sim, url):
        config = make_config(tmp_path, url, account={"repeat_interval": WINDOW})
        data_routes = config.model_copy(
            update={"routes": {**config.routes, "alerts": config.routes["alerts"].model_copy(update={"digest": False})}}
        )
        async with running_bridge(data_routes) as bridge:
            for n in range(3):
                await submit(bridge.port, alert(n, to=f"{K1}@alerts.bridge.test"))
            await eventually(lambda: len(sim.delivered) == 3, "three separate SMS", within=30)
    assert sim.refusals.get("ERR028", 0) == 0
    assert [len(re.findall(r"Disk \d+ is full", d.text)) for d in sim.delivered] == [1, 1, 1]
    assert all(r.delivery.carrier == "" for r in bridge.rows())
