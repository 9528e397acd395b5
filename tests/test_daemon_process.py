"""The daemon as a real process: kill -9 and restart, SIGTERM drain, queue commands, exit codes."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.config import load_text
from tests.helpers import (
    SIM_PASSWORD,
    RunningBridge,
    config_data,
    eventually,
    mail,
    run_cli,
    running_bridge,
    running_simulator,
    submit,
)

#: every test here runs on each outbox backend (SQLite, PostgreSQL)
pytestmark = pytest.mark.usefixtures("backend")

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")


class Daemon:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.log: list[str] = []
        self.port: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode("utf-8", "replace")
            self.log.append(text)
            match = LISTENING.search(text)
            if match and not self.port.done():
                self.port.set_result(int(match.group(1)))
        if not self.port.done():
            self.port.set_exception(AssertionError("the daemon exited before listening:\n" + "".join(self.log)))


@asynccontextmanager
async def daemon(config_path: Path) -> AsyncIterator[Daemon]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "-c", str(config_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Daemon(proc)
    try:
        await asyncio.wait_for(asyncio.shield(running.port), 30)
        yield running
    finally:
        if proc.returncode is None:
            proc.kill()
        await asyncio.wait_for(proc.wait(), 30)
        await running.reader


def write_config(tmp_path: Path, url: str, **kwargs: Any) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, url, **kwargs)))
    return path


def view(tmp_path: Path) -> RunningBridge:
    """Read the outbox the daemon writes (no daemon started)."""
    return RunningBridge(load_text((tmp_path / "config.yaml").read_text(), env={}), 0)


async def burst(
    d: Daemon, port: int, mails: dict[int, EmailMessage], todo: list[int], kill_after: int
) -> tuple[set[int], list[int]]:
    """Six clients send ``todo``; the daemon is killed with SIGKILL after ``kill_after`` replies of 250.
    Returns (acknowledged, not acknowledged)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in todo:
        queue.put_nowait(i)
    acked: set[int] = set()
    pending: list[int] = []
    killed = asyncio.Event()

    async def client() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            if killed.is_set():
                pending.append(i)
                continue
            try:
                code, _ = await submit(port, mails[i])
            except Exception:  # noqa: BLE001  (the server died mid-session)
                code = 0
            if code != 250:
                pending.append(i)
                continue
            acked.add(i)
            if len(acked) >= kill_after and not killed.is_set():
                killed.set()
                d.proc.send_signal(signal.SIGKILL)

    await asyncio.gather(*(client() for _ in range(6)))
    return acked, pending


async def test_kill_9_at_several_moments_loses_nothing_acknowledged_and_sends_nothing_twice(tmp_path: Path) -> None:
    """Killed after 1, 12 and 30 replies of 250 and restarted each time; the client resubmits
    whatever got no 250 (same Message-ID), as a mail server would."""
    mails = {i: mail(f"mobile:9655{i:07d}\ntext:m{i}", message_id=f"<crash-{i}@corp.example.com>") for i in range(60)}
    async with running_simulator(max_rate=0) as (sim, url):
        path = write_config(tmp_path, url, account={"rate": 50}, dispatch={"in_flight": 4})
        pending = list(mails)
        acked: set[int] = set()
        for kill_after in (1, 12, 30):
            async with daemon(path) as d:
                got, pending = await burst(d, await d.port, mails, pending, kill_after)
                acked |= got
        async with daemon(path) as d:
            port = await d.port
            for i in pending:
                code, _ = await submit(port, mails[i])
                assert code == 250
                acked.add(i)
            bridge = view(tmp_path)
            await eventually(
                lambda: (
                    len(bridge.rows()) == len(mails)
                    and all(r.delivery.state in ("sent", "unknown") for r in bridge.rows())
                ),
                "every message to reach a final state",
                within=60,
            )
    assert acked == set(mails)
    delivered: dict[str, int] = {}
    for item in sim.delivered:
        delivered[item.text] = delivered.get(item.text, 0) + 1
    rows = {r.request.text: r for r in bridge.rows()}
    assert set(rows) == {f"m{i}" for i in mails}  # nothing lost: every mail has its row
    assert all(count == 1 for count in delivered.values())  # nothing twice
    for text, row in rows.items():
        if row.delivery.state == "sent":
            assert delivered.get(text) == 1
        else:  # unknown: killed while handing it to the provider; recorded, never resent
            assert delivered.get(text, 0) <= 1


async def test_sigterm_drains_and_exits_0(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url)
        async with daemon(path) as d:
            port = await d.port
            for i in range(5):
                code, _ = await submit(port, mail(f"mobile:9655{i:07d}\ntext:drain {i}"))
                assert code == 250
            d.proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(d.proc.wait(), 30) == 0
        rows = view(tmp_path).rows()
    assert len(rows) == 5
    assert all(r.delivery.state in ("sent", "queued") for r in rows)
    assert len(sim.delivered) == sum(r.delivery.state == "sent" for r in rows)
    assert any("stopped" in line for line in d.log)


async def test_a_bad_config_exits_78_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("accounts: {}\nroutes: {x: {format: nope}}\nsmtp: {listen: [bogus]}\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 78
    assert b"smtp.listen.0.address: must be host:port" in err
    assert b"routes.x.format" in err
    assert b"Traceback" not in err


async def test_queue_commands_show_retry_and_cancel(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        path = write_config(
            tmp_path, url, body_route={"body_credentials": "passthrough"}, dispatch={"retry_schedule": [300]}
        )
        config = load_text(path.read_text(), env={})
        async with running_bridge(config) as bridge:
            sim.arm("drop")
            body = f"username:corp\npassword:{SIM_PASSWORD}\nmobile:96597119440\ntext:ambiguous"
            _, text = await submit(bridge.port, mail(body))
            unknown_id = text.split()[-1]
            await eventually(lambda: bridge.rows(unknown_id)[0].delivery.state == "unknown", "unknown")

            code, out = await run_cli("queue", "-c", str(path), "show", unknown_id)
            assert code == 0
            assert "state:           unknown" in out
            assert SIM_PASSWORD not in out

            code, out = await run_cli("queue", "-c", str(path), "list", "--state", "unknown")
            assert (code, unknown_id in out) == (0, True)

            sim.arm("http503")
            _, text = await submit(
                bridge.port, mail(f"username:corp\npassword:{SIM_PASSWORD}\nmobile:96566074414\ntext:waiting")
            )
            queued_id = text.split()[-1]
            await eventually(lambda: bridge.rows(queued_id)[0].delivery.attempts == 1, "the first attempt")
            code, out = await run_cli("queue", "-c", str(path), "cancel", queued_id)
            assert (code, out.strip()) == (0, f"{queued_id}: cancelled")
            assert bridge.rows(queued_id)[0].delivery.state == "cancelled"

            code, out = await run_cli("queue", "-c", str(path), "cancel", queued_id)
            assert code == 1
            assert "only queued messages can be cancelled" in out

            # retrying the unknown one: its body credentials were erased, and the account's
            # own credentials must not stand in for them: it fails, saying why
            code, out = await run_cli("queue", "-c", str(path), "retry", unknown_id)
            assert (code, out.strip()) == (0, f"{unknown_id}: queued again")
            await eventually(lambda: bridge.rows(unknown_id)[0].delivery.state == "failed", "the retried row to finish")
            assert "credentials from the mail were erased" in bridge.rows(unknown_id)[0].delivery.last_error
            assert [r["params"]["message"] for r in sim.requests].count("ambiguous") == 1
