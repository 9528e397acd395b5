"""Routing by destination, failover to a second provider, and the circuit breaker,
against two simulators over real HTTP on loopback."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bridge.config import ConfigError, load_text
from bridge.outbox import State
from tests.helpers import (
    SIM_PASSWORD,
    RunningBridge,
    config_data,
    eventually,
    free_port,
    mail,
    run_cli,
    running_bridge,
    running_simulator,
    submit,
)

KW, KW2, LB = "96597119440", "96566074414", "96171123456"


def accounts(kwt_url: str, ot_url: str, ot: dict[str, Any] | None = None, **kwt: Any) -> dict[str, Any]:
    return {
        "kwt": {
            "provider": "kwtsms-http", "url": kwt_url + "/API/", "username": "corp", "password": SIM_PASSWORD,
            "sender": "KWT-SMS", "rate": 20, "timeout": 2, "repeat_interval": 0, "countries": ["KW"],
        } | kwt,
        "ot": {
            "provider": "opentech-http", "url": ot_url + "/ap/static/api/", "username": "corp", "password": SIM_PASSWORD,
            "uid": "77", "sender": "OpenTech", "rate": 20, "timeout": 2, "countries": ["KW", "LB"],
        } | (ot or {}),
    }  # fmt: skip


@asynccontextmanager
async def two_providers(
    tmp_path: Path,
    body_route: dict[str, Any],
    *,
    kwt_url: str | None = None,
    admin: bool = False,
    ot: dict[str, Any] | None = None,
    **kwt: Any,
) -> AsyncIterator[tuple[Any, Any, RunningBridge, str]]:
    async with running_simulator() as (kw_sim, kw_url), running_simulator() as (ot_sim, ot_url):
        data = config_data(tmp_path, kw_url, body_route=body_route)
        data["accounts"] = accounts(kwt_url or kw_url, ot_url, ot, **kwt)
        port = free_port()
        if admin:
            data["admin"] = {"listen": f"127.0.0.1:{port}"}
        async with running_bridge(load_text(yaml.safe_dump(data), env={})) as bridge:
            yield kw_sim, ot_sim, bridge, f"http://127.0.0.1:{port}"


async def test_numbers_of_two_countries_go_to_their_own_accounts(tmp_path: Path) -> None:
    rules = {"account": [{"prefix": "965", "account": "kwt"}, {"prefix": "961", "account": "ot"}]}
    async with two_providers(tmp_path, rules) as (kw_sim, ot_sim, bridge, _):
        code, text = await submit(bridge.port, mail(f"mobile:{KW},{LB},{KW2}\ntext:two countries"))
        assert code == 250, text
        await eventually(lambda: len(kw_sim.delivered) == 1 and len(ot_sim.delivered) == 1, "one call each")
        rows = bridge.rows()
    assert sorted(kw_sim.delivered[0].numbers) == sorted([KW, KW2])
    assert ot_sim.delivered[0].numbers == [LB]
    assert sorted(r.request.account for r in rows) == ["kwt", "ot"]


async def test_kwtsms_down_alerts_go_out_through_opentech_each_once(tmp_path: Path) -> None:
    """Connection refused at KwtSMS: no wait for a retry; OpenTech sends each alert once."""
    dead = f"http://127.0.0.1:{free_port()}"
    route = {"account": "kwt", "fallback": ["ot"]}
    async with two_providers(tmp_path, route, kwt_url=dead) as (kw_sim, ot_sim, bridge, _):
        for i in range(3):
            assert (await submit(bridge.port, mail(f"mobile:{KW}\ntext:alert {i}")))[0] == 250
        await eventually(
            lambda: len(bridge.rows()) == 3 and all(r.delivery.state == State.SENT for r in bridge.rows()),
            "every alert sent",
            within=10,
        )
        rows = bridge.rows()
    assert sorted(d.text for d in ot_sim.delivered) == ["alert 0", "alert 1", "alert 2"]
    assert kw_sim.delivered == []
    for row in rows:
        assert (row.request.account, row.delivery.tried, row.delivery.attempts) == ("ot", ("kwt",), 2)
        assert row.request.sender == "OpenTech"  # revalidated for the fallback account
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(bridge.config.model_dump(mode="json")))))
    code, shown = await run_cli("queue", "-c", str(path), "show", rows[0].id)
    assert code == 0, shown
    assert "route/account:   body / ot (opentech-http)" in shown
    assert "tried before:    kwt" in shown
    assert "failover: from kwt to ot: could not reach the provider" in shown


async def test_an_ambiguous_outcome_never_fails_over(tmp_path: Path) -> None:
    route = {"account": "kwt", "fallback": ["ot"]}
    async with two_providers(tmp_path, route) as (kw_sim, ot_sim, bridge, _):
        kw_sim.arm("drop")  # sent, then the connection cut before the reply
        _, text = await submit(bridge.port, mail(f"mobile:{KW}\ntext:maybe sent"))
        mail_id = text.split()[-1]
        await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == State.UNKNOWN, "unknown")
    assert [d.text for d in kw_sim.delivered] == ["maybe sent"]
    assert ot_sim.delivered == []


async def test_an_sms_not_valid_on_the_fallback_stays_on_its_account(tmp_path: Path) -> None:
    route = {"account": "kwt", "fallback": ["ot"]}
    async with two_providers(tmp_path, route, ot={"countries": ["LB"]}) as (kw_sim, ot_sim, bridge, _):
        kw_sim.arm("http503", count=1)  # failover-worthy, but the fallback does not send to Kuwait
        _, text = await submit(bridge.port, mail(f"mobile:{KW}\ntext:stays on kwtsms"))
        mail_id = text.split()[-1]
        await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == State.SENT, "sent by kwtsms on retry")
    assert [d.text for d in kw_sim.delivered] == ["stays on kwtsms"]
    assert ot_sim.delivered == []


async def test_the_breaker_opens_after_failures_and_closes_after_a_good_probe(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    breaker = {"failures": 2, "window": 60, "probe_interval": 1}
    async with two_providers(tmp_path, {"account": "kwt"}, admin=True, breaker=breaker) as (kw_sim, _, bridge, base):
        kw_sim.arm("http503", count=2)
        for i in range(2):
            await submit(bridge.port, mail(f"mobile:{KW}\ntext:during the outage {i}"))
        async with httpx.AsyncClient() as client:

            async def state() -> str:
                return str((await client.get(f"{base}/healthz")).json()["breakers"]["kwt"])

            await eventually_async(lambda: state(), "open", "the circuit to open")
            opened_requests = len(kw_sim.requests)
            await submit(bridge.port, mail(f"mobile:{KW2}\ntext:while open"))
            # the probe goes out after probe_interval; the provider is back, so the circuit closes
            await eventually_async(lambda: state(), "closed", "the circuit to close", within=20)
            await eventually(lambda: len(kw_sim.delivered) == 3, "every SMS after the outage", within=20)
    log = caplog.text
    assert "circuit open account=kwt" in log
    assert "circuit half-open account=kwt" in log
    assert "circuit closed account=kwt" in log
    assert opened_requests >= 2


async def eventually_async(probe: Any, want: str, what: str, within: float = 10.0) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (await probe()) != want:
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.05)


def route_config(route: dict[str, Any]) -> str:
    return json.dumps(
        {
            "accounts": {
                "kwt": {"provider": "kwtsms-http", "username": "u", "password": "p", "sender": "KWT-SMS"},
                "ot": {"provider": "opentech-http", "uid": "1", "username": "u", "password": "p"},
            },
            "routes": {"r": {"format": "kwtsms", "recipients": ["s@x.test"]} | route},
        }
    )


@pytest.mark.parametrize(
    ("route", "path", "why"),
    [
        ({"account": [{"prefix": "965", "account": "nope"}]}, "routes.r.account.0.account", "no account named 'nope'"),
        ({"account": "kwt", "fallback": ["kwt"]}, "routes.r.fallback.0", "a failover loop"),
        ({"account": "kwt", "fallback": ["ot", "ot"]}, "routes.r.fallback.1", "a failover loop"),
        (
            {"account": [{"prefix": "965", "account": "kwt"}, {"prefix": "9655", "account": "ot"}]},
            "routes.r.account.1",
            "never matches: rule 0 (prefix 965)",
        ),
        (
            {"account": [{"default": True, "account": "kwt"}, {"region": "LB", "account": "ot"}]},
            "routes.r.account.1",
            "never matches: rule 0 (default)",
        ),
    ],
)
def test_bad_routing_is_a_config_error_with_its_path(route: dict[str, Any], path: str, why: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(route_config(route), env={})
    assert any(p.field == path and why in p.message for p in caught.value.problems), caught.value.describe()


def test_a_number_no_rule_takes_is_refused_naming_it(tmp_path: Path) -> None:
    from bridge.core.intake import decide
    from bridge.core.model import InboundMail

    config = load_text(route_config({"account": [{"prefix": "965", "account": "kwt"}]}), env={})
    mail_ = InboundMail("a@b.example", ("s@x.test",), "x", f"mobile:{KW},{LB}\ntext:hi\n")
    verdict = decide(mail_, config)
    assert not verdict.ok
    assert [p.field for p in verdict.problems] == ["mobile"]
    assert f"'{LB}' matches no routing rule of route r" in verdict.problems[0].message


def test_check_json_shows_the_per_account_split(tmp_path: Path) -> None:
    import subprocess
    import sys

    data = json.loads(
        route_config({"account": [{"prefix": "965", "account": "kwt"}, {"region": "LB", "account": "ot"}]})
    )
    data["accounts"]["kwt"]["sender"] = "KWT-SMS"
    data["accounts"]["ot"] |= {"sender": "OpenTech", "countries": ["LB"]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    eml = tmp_path / "m.eml"
    eml.write_text(f"From: a@b.example\nTo: s@x.test\nSubject: x\n\nmobile:{KW},{LB}\ntext:split\n")
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check", "-c", str(path), str(eml), "--json"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    sms = json.loads(result.stdout)["sms"]
    assert [(s["account"], s["numbers"]) for s in sms] == [("kwt", [KW]), ("ot", [LB])]


def test_a_setting_of_another_provider_is_an_error_at_its_path() -> None:
    text = json.dumps(
        {
            "accounts": {"kwt": {"provider": "kwtsms-http", "username": "u", "password": "p", "relay_to": "x@y.z"}},
            "routes": {"r": {"format": "kwtsms", "account": "kwt", "recipients": ["s@x.test"]}},
        }
    )
    with pytest.raises(ConfigError) as caught:
        load_text(text, env={})
    (problem,) = caught.value.problems
    assert problem.field == "accounts.kwt.relay_to"
    assert "belongs to kwtsms-smtp accounts" in problem.message
