"""``systemctl reload`` (SIGHUP): a new config is checked first, then taken without dropping the queue."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import yaml

from bridge.outbox import State
from tests.helpers import config_data, eventually, free_port, mail, running_simulator, submit
from tests.test_daemon_process import daemon, view


async def submit_until(port: int, to: str, text: str, want: int, within: float = 20.0) -> int:
    """Submit until the answer is ``want`` (the listener restarts on a reload); the last code."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            code, _ = await submit(port, mail(f"mobile:96597119440\ntext:{text}", to=to))
        except OSError:
            code = 0
        if code == want or loop.time() > deadline:
            return code
        await asyncio.sleep(0.1)


async def test_sighup_takes_a_good_config_and_refuses_a_bad_one(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (sim, url):
        data = config_data(tmp_path, url, smtp={"listen": [f"127.0.0.1:{port}"]})
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        async with daemon(path) as bridge:
            code, _ = await submit(port, mail("mobile:96597119440\ntext:x", to="new@bridge.test"))
            assert code == 550  # not served yet
            sim.arm("http503", count=100)  # a message waits in the queue across the reload
            code, text = await submit(port, mail("mobile:96566074414\ntext:waits in the queue"))
            assert code == 250
            waiting = text.split()[-1]
            # a good config: a new route
            data["routes"]["extra"] = {"format": "kwtsms", "account": "kwt", "recipients": ["new@bridge.test"]}
            path.write_text(yaml.safe_dump(data))
            bridge.proc.send_signal(signal.SIGHUP)
            assert await submit_until(port, "new@bridge.test", "after reload", 250) == 250
            # a bad config: refused, the running one kept
            path.write_text("accounts: {kwt: {provider: nonsense}}\nroutes: {}\n")
            bridge.proc.send_signal(signal.SIGHUP)
            await eventually(lambda: any("reload refused" in line for line in bridge.log), "the refusal")
            code, _ = await submit(port, mail("mobile:96597119440\ntext:still served", to="new@bridge.test"))
            assert code == 250
            path.write_text(yaml.safe_dump(data))  # for view() below; no reload is asked for
            sim.faults.clear()
            await eventually(
                lambda: view(tmp_path).rows(waiting)[0].delivery.state == State.SENT, "the queued SMS, after the reload"
            )
            await eventually(lambda: len(sim.delivered) == 3, "every SMS")
            assert bridge.proc.returncode is None
    log = "".join(bridge.log)
    assert "reloaded the configuration" in log
    assert "accounts.kwt.provider" in log  # the refusal names the problem
    assert sorted(d.text for d in sim.delivered) == ["after reload", "still served", "waits in the queue"]
