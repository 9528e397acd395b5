"""``systemctl reload`` (SIGHUP): a new config is checked first, then taken without dropping the queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bridge.outbox import State
from tests.helpers import config_data, eventually, free_port, mail, make_config, running_simulator, submit
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


@contextlib.contextmanager
def taken_port() -> Iterator[int]:
    """A port another program listens on, for as long as the block runs."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


async def test_a_reload_onto_a_taken_port_keeps_the_running_listeners(tmp_path: Path) -> None:
    """``systemctl reload`` with a new ``smtp.listen`` another program holds: refused, naming the
    address and the key, and the running listener still takes mail."""
    port = free_port()
    with taken_port() as other:
        async with running_simulator() as (sim, url):
            data = config_data(tmp_path, url, smtp={"listen": [f"127.0.0.1:{port}"]})
            path = tmp_path / "config.yaml"
            path.write_text(yaml.safe_dump(data))
            async with daemon(path) as bridge:
                data["smtp"] = {"listen": [f"127.0.0.1:{other}"]}
                path.write_text(yaml.safe_dump(data))
                bridge.proc.send_signal(signal.SIGHUP)
                await eventually(lambda: any("reload refused" in line for line in bridge.log), "the refusal")
                code, _ = await submit(port, mail("mobile:96597119440\ntext:still listening"))
                assert code == 250
                await eventually(lambda: len(sim.delivered) == 1, "the SMS")
                assert bridge.proc.returncode is None
    refusal = next(line for line in bridge.log if "reload refused" in line)
    assert f"cannot listen on 127.0.0.1:{other} (smtp.listen): Address already in use" in refusal
    assert "reloaded the configuration" not in "".join(bridge.log)


async def test_a_port_taken_between_the_check_and_the_bind_brings_back_the_running_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The check passed, then the bind failed (another program was quicker): the bridge goes
    back to the configuration it ran, rather than exit."""
    from bridge.app import serve as serve_module

    monkeypatch.setattr(serve_module, "cannot_bind", lambda new, running: None)
    port = free_port()
    with taken_port() as other:
        async with running_simulator() as (sim, url):
            first = make_config(tmp_path, url, smtp={"listen": [f"127.0.0.1:{port}"]})
            second = make_config(tmp_path, url, smtp={"listen": [f"127.0.0.1:{other}"]})
            stop, hup = asyncio.Event(), asyncio.Event()
            bridge = asyncio.create_task(
                serve_module.serve(first, stop=stop, hup=hup, reload=lambda: second, handle_signals=False)
            )
            try:
                assert await submit_until(port, "sms@bridge.test", "before", 250) == 250
                with caplog.at_level(logging.ERROR, logger="bridge"):
                    hup.set()
                    await eventually(lambda: "reload failed" in caplog.text, "the failed reload")
                assert await submit_until(port, "sms@bridge.test", "after", 250) == 250
                await eventually(lambda: len(sim.delivered) == 2, "both SMS")
                assert not bridge.done()
            finally:
                stop.set()
                await asyncio.wait_for(bridge, 30)
    assert f"cannot listen on 127.0.0.1:{other} (smtp.listen)" in caplog.text
    assert sorted(d.text for d in sim.delivered) == ["after", "before"]
