"""``sms-bridge sendmail``: what cron and scripts pipe into /usr/sbin/sendmail, exit statuses from sysexits.h."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bridge.cli.sendmail import Options, Usage, parse_args, prepare
from bridge.config import load_text
from tests.helpers import config_data, eventually, free_port, running_bridge, running_simulator

K1, K2 = "96597119440", "96566074414"


async def sendmail(config: Path, *args: str, stdin: bytes, argv0: str | None = None) -> tuple[int, str]:
    command = [sys.executable, "-m", "bridge", "sendmail", "-C", str(config), *args]
    env = os.environ.copy()
    if argv0 is not None:  # a symlink named sendmail
        command = [argv0, "-C", str(config), *args]
    proc = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    out, _ = await asyncio.wait_for(proc.communicate(stdin), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def write_config(tmp_path: Path, url: str, port: int, **sendmail: Any) -> Path:
    data = config_data(tmp_path, url, smtp={"listen": [f"127.0.0.1:{port}"]})
    data["sendmail"] = {"retry_for": 2} | sendmail
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


async def test_recipients_from_the_headers_with_t(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url, port)
        config = load_text(path.read_text(), env={})
        async with running_bridge(config) as bridge:
            message = f"To: {K1}@alerts.bridge.test\nCc: oncall@alerts.bridge.test\nBcc: {K2}@alerts.bridge.test\nSubject: PROBLEM: cron job failed\n\nexit 2\n"
            code, out = await sendmail(path, "-t", "-oi", "-odi", stdin=message.encode())
            assert code == 0, out
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            (row,) = bridge.rows()
    assert sorted(sim.delivered[0].numbers) == sorted([K1, K2])
    assert row.origin.mail_from.count("@") == 1  # user@host, as sendmail makes it
    assert set(row.origin.rcpts) == {
        f"{K1}@alerts.bridge.test",
        "oncall@alerts.bridge.test",
        f"{K2}@alerts.bridge.test",
    }


async def test_recipients_as_arguments_and_a_sender_with_f(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})) as bridge:
            code, out = await sendmail(
                path, "-f", "cron@corp.example.com", "-F", "Cron Daemon", "sms@bridge.test",
                stdin=f"Subject: x\n\nmobile:{K1}\ntext:from cron\n.\nnot read after the dot\n".encode(),
            )  # fmt: skip
            assert code == 0, out
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            (row,) = bridge.rows()
    assert sim.delivered[0].text == "from cron"
    assert row.origin.mail_from == "cron@corp.example.com"


async def test_an_invalid_body_exits_65_naming_the_field(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (_, url):
        path = write_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})) as bridge:
            code, out = await sendmail(path, "-i", "sms@bridge.test", stdin=b"Subject: x\n\nmobile:123\ntext:hi\n")
            assert bridge.rows() == []
    assert code == 65
    assert "sendmail: mobile: '123' is not a Kuwait mobile number" in out


async def test_with_the_bridge_stopped_it_exits_75_after_the_retry_window(tmp_path: Path) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", free_port(), retry_for=1)
    code, out = await sendmail(path, "-i", "sms@bridge.test", stdin=f"Subject: x\n\nmobile:{K1}\ntext:hi\n".encode())
    assert code == 75
    assert "not accepted, try again later: cannot reach the bridge" in out


async def test_a_bridge_that_comes_back_within_the_window_takes_the_mail_once(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url, port, retry_for=30)
        waiting = asyncio.ensure_future(
            sendmail(path, "-i", "sms@bridge.test", stdin=f"Subject: x\n\nmobile:{K1}\ntext:after restart\n".encode())
        )
        await asyncio.sleep(0)  # the command starts while nothing listens
        done, _ = await asyncio.wait([waiting], timeout=1.5)
        assert not done, "sendmail must keep trying while the bridge is down"
        async with running_bridge(load_text(path.read_text(), env={})) as bridge:
            code, out = await waiting
            assert code == 0, out
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            rows = bridge.rows()
    assert len(rows) == 1
    assert [d.text for d in sim.delivered] == ["after restart"]


async def test_a_symlink_named_sendmail_behaves_the_same(tmp_path: Path) -> None:
    port = free_port()
    link = tmp_path / "sendmail"
    link.symlink_to(Path(sys.executable).parent / "sms-bridge")
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})):
            code, out = await sendmail(
                path,
                "-oi",
                "sms@bridge.test",
                stdin=f"Subject: x\n\nmobile:{K1}\ntext:linked\n".encode(),
                argv0=str(link),
            )
            assert code == 0, out
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")


def test_flags_are_read_as_sendmail_reads_them() -> None:
    opts = parse_args(["-fcron@x.example", "-F", "Cron", "-oi", "-odb", "-oem", "-t", "a@b", "--", "-c@d"])
    assert (opts.sender, opts.full_name, opts.dot_ends, opts.from_headers) == ("cron@x.example", "Cron", False, True)
    assert opts.recipients == ["a@b", "-c@d"]
    for bad in (["-bs"], ["-f"], ["-Z"]):
        try:
            parse_args(bad)
        except Usage:
            continue
        raise AssertionError(f"{bad} should be a usage error")


def test_a_message_without_message_id_gets_one_and_bcc_is_removed() -> None:
    sender, rcpts, message = prepare(
        b"Bcc: x@y.example\r\nSubject: s\r\n\r\nbody\r\n", Options(from_headers=True), "me@host"
    )
    assert (sender, rcpts) == ("me@host", ["x@y.example"])
    assert b"Message-ID: <" in message
    assert b"Bcc:" not in message
    assert message.endswith(b"\r\n\r\nbody\r\n")
