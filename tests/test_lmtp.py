"""LMTP: one reply per recipient after DATA (RFC 2033), and Debian's real Postfix handing mail over."""

from __future__ import annotations

import asyncio
import tempfile
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import OutboxError
from bridge.outbox import intake
from tests import postfix
from tests.helpers import (
    before_each_operation,
    eventually,
    make_config,
    running_bridge,
    running_simulator,
    running_sink,
)

K1 = "96597119440"
GOOD, BAD = f"{K1}@alerts.bridge.test", "123@alerts.bridge.test"


def socket_path() -> Path:
    # a short path: Unix socket names are limited to about 100 bytes
    folder = Path(tempfile.mkdtemp(prefix="lmtp-"))
    folder.chmod(0o755)
    return folder / "lmtp.sock"


async def reply(reader: asyncio.StreamReader) -> list[bytes]:
    lines = [await asyncio.wait_for(reader.readline(), 10)]
    while lines[-1][3:4] == b"-":
        lines.append(await asyncio.wait_for(reader.readline(), 10))
    return lines


async def test_lmtp_answers_each_recipient_after_data(tmp_path: Path) -> None:
    sock = socket_path()
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url, extra={"lmtp": {"listen": f"unix:{sock}"}})
        async with running_bridge(config) as bridge:
            assert oct(sock.stat().st_mode & 0o777) == "0o666"
            reader, writer = await asyncio.open_unix_connection(str(sock))
            greeting = await reply(reader)
            for line in (b"EHLO x\r\n",):
                writer.write(line)
                refused = await reply(reader)
            for line in (b"LHLO postfix.test\r\n", b"MAIL FROM:<cron@corp.test>\r\n"):
                writer.write(line)
                await reply(reader)
            for rcpt in (GOOD, BAD):
                writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
                assert (await reply(reader))[-1].startswith(b"250")
            writer.write(b"DATA\r\n")
            assert (await reply(reader))[-1].startswith(b"354")
            writer.write(
                b"From: cron@corp.test\r\nSubject: PROBLEM: backup failed\r\nMessage-ID: <l1@corp.test>\r\n\r\nx\r\n.\r\n"
            )
            first, second = await reply(reader), await reply(reader)
            writer.close()
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            rows = bridge.rows()
    assert greeting[0].startswith(b"220")
    assert refused[-1].startswith(b"500")  # EHLO is not LMTP
    assert first[-1].startswith(b"250 2.0.0 queued as")
    assert second[0].startswith(b"550")
    assert b"recipient" in b"".join(second)
    assert len(rows) == 1
    assert rows[0].origin.via == "lmtp"


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (OutboxError("the disk is full"), b"451 4.3.0 The bridge cannot store mail right now"),
        (RuntimeError("a bug"), b"451 4.3.0 Internal error"),
    ],
)
async def test_when_nothing_can_be_stored_each_recipient_gets_its_451(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: Exception, expected: bytes
) -> None:
    """One reply per recipient even then: an MTA waiting for the second would time out."""

    async def cannot_store(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if op is intake.enqueue:
            raise error

    before_each_operation(monkeypatch, cannot_store)
    sock = socket_path()
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, extra={"lmtp": {"listen": f"unix:{sock}"}})
        async with running_bridge(config):
            reader, writer = await asyncio.open_unix_connection(str(sock))
            await reply(reader)
            for line in (b"LHLO postfix.test\r\n", b"MAIL FROM:<cron@corp.test>\r\n"):
                writer.write(line)
                await reply(reader)
            for rcpt in (GOOD, "96566074414@alerts.bridge.test"):
                writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
                assert (await reply(reader))[-1].startswith(b"250")
            writer.write(b"DATA\r\n")
            assert (await reply(reader))[-1].startswith(b"354")
            writer.write(b"From: cron@corp.test\r\nSubject: PROBLEM: backup failed\r\n\r\nx\r\n.\r\n")
            first, second = await reply(reader), await reply(reader)
            writer.write(b"NOOP\r\n")
            still_there = await reply(reader)  # nothing more was sent before this
            writer.close()
    assert first[-1].startswith(expected)
    assert second[-1].startswith(expected)
    assert still_there[-1].startswith(b"250")
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == (0 if isinstance(error, OutboxError) else 1)  # a bug is logged with its traceback


@pytest.mark.skipif(postfix.available() is not None, reason=postfix.available() or "")
async def test_postfix_hands_over_by_lmtp_and_bounces_the_refused_recipient(tmp_path: Path) -> None:
    """Debian's Postfix, no inet listener, transport_maps to the bridge's LMTP socket: the valid
    recipient's SMS is sent once; the invalid one comes back to the sender with the bridge's reason."""
    sock = socket_path()
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        config = make_config(tmp_path, url, extra={"lmtp": {"listen": f"unix:{sock}"}})
        async with running_bridge(config) as bridge:
            transports = {"alerts.bridge.test": f"lmtp:unix:{sock}", "corp.test": f"smtp:[127.0.0.1]:{sink_port}"}
            with postfix.running_postfix(transports, ["alerts.bridge.test", "corp.test"]) as mta:
                message = b"From: cron@corp.test\nTo: ops\nSubject: PROBLEM: backup failed on db01\n\nexit 2\n"
                await asyncio.to_thread(mta.sendmail, "cron@corp.test", [GOOD, BAD], message)
                try:
                    await eventually(
                        lambda: len(sim.delivered) == 1 and bool(sink.messages), "the SMS and the bounce", within=60
                    )
                except AssertionError:
                    print(mta.log())
                    raise
                log = mta.log()
            rows = bridge.rows()
    assert [d.numbers for d in sim.delivered] == [[K1]]
    assert len(rows) == 1
    (bounce,) = sink.messages
    assert bounce.rcpt_tos == ["cron@corp.test"]
    text = message_from_bytes(bounce.original_content, policy=policy.default).as_string()
    assert BAD in text
    assert "550" in text
    assert "is not a Kuwait mobile number" in text  # the bridge's reason, carried in the bounce
    assert "status=sent" in log
    assert "status=bounced" in log
