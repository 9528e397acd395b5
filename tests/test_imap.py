"""IMAP ingress against a real Dovecot on 127.0.0.1 (started per test by tests/dovecot.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aioimaplib
import pytest
import yaml

from bridge import outbox
from bridge.config import load_text
from bridge.core.validate import validate
from bridge.outbox import Accepted
from tests.dovecot import PASSWORD, USER, Dovecot, dovecot_available, new_dovecot
from tests.helpers import (
    SIM_PASSWORD,
    config_data,
    eventually,
    mail,
    queue_section,
    running_bridge,
    running_simulator,
    running_sink,
)

pytestmark = pytest.mark.skipif(
    not dovecot_available(), reason="needs Debian's dovecot-imapd and root (.ci/run installs it)"
)


@pytest.fixture
def dovecot(tmp_path: Path) -> Iterator[Dovecot]:
    server = new_dovecot(tmp_path / "dovecot")
    server.start()
    try:
        yield server
    finally:
        server.stop()


class Mailbox:
    """A test's own IMAP client to the same Dovecot: put mail in, count what is where."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def _client(self) -> aioimaplib.IMAP4:
        client = aioimaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        await client.wait_hello_from_server()
        await client.login(USER, PASSWORD)
        return client

    @staticmethod
    async def _done(client: aioimaplib.IMAP4) -> None:
        await client.logout()
        client.protocol.transport.close()

    async def append(self, messages: list[EmailMessage], folder: str = "INBOX") -> list[int]:
        client = await self._client()
        uids = []
        try:
            if folder != "INBOX":
                await client.create(folder)
            for msg in messages:
                response = await client.append(bytes(msg), mailbox=folder)
                assert response.result == "OK", response
                uids.append(int(response.lines[0].split()[2].rstrip(b"]")))
        finally:
            await self._done(client)
        return uids

    async def count(self, folder: str) -> int:
        client = await self._client()
        try:
            response = await client.status(folder, "(MESSAGES)")
            if response.result != "OK":
                return 0
            return int(response.lines[0].rsplit(b" ", 1)[-1].rstrip(b")"))
        finally:
            await self._done(client)

    async def uidvalidity(self, folder: str = "INBOX") -> int:
        client = await self._client()
        try:
            response = await client.status(folder, "(UIDVALIDITY)")
            return int(response.lines[0].rsplit(b" ", 1)[-1].rstrip(b")"))
        finally:
            await self._done(client)

    async def delete(self, folder: str) -> None:
        client = await self._client()
        try:
            await client.delete(folder)
        finally:
            await self._done(client)


async def until_count(box: Mailbox, folder: str, count: int, within: float = 30) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while (found := await box.count(folder)) != count:
        if loop.time() > deadline:
            raise AssertionError(f"{folder} holds {found} message(s), expected {count}")
        await asyncio.sleep(0.05)


def imap_config(dv: Dovecot, **overrides: Any) -> dict[str, Any]:
    return {
        "name": "box",
        "host": "127.0.0.1",
        "port": dv.port,
        "tls": "none",
        "user": USER,
        "password": PASSWORD,
        "address": "sms@company.example",
        "route": "body",
        "poll_interval": 0.5,
        "idle_interval": 5,
        "timeout": 10,
        "max_backoff": 1,
    } | overrides


CLIENTS = {"local": {"networks": ["127.0.0.0/8"]}, "mailbox": {"mailboxes": ["box"]}}


def make(tmp_path: Path, url: str, dv: Dovecot, sink_port: int | None = None, **imap: Any) -> Any:
    data = config_data(
        tmp_path, url, sink_port=sink_port, extra={"imap": [imap_config(dv, **imap)], "clients": CLIENTS}
    )
    return load_text(yaml.safe_dump(data), env={})


def sms_mail(i: int, text: str = "from imap", **kwargs: Any) -> EmailMessage:
    return mail(
        f"mobile:9655{i:07d}\ntext:{text}", to="sms@company.example", message_id=f"<imap-{i}-{text}@corp>", **kwargs
    )


@pytest.fixture
def box(dovecot: Dovecot) -> Mailbox:
    return Mailbox(dovecot.port)


async def test_a_valid_mail_becomes_an_sms_and_moves_to_processed(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox
) -> None:
    await box.append([sms_mail(1, "hello from the mailbox")])
    async with running_simulator(max_rate=0) as (sim, url), running_bridge(make(tmp_path, url, dovecot)):
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
        await until_count(box, "Processed", 1)
        assert await box.count("INBOX") == 0
    assert sim.delivered[0].text == "hello from the mailbox"


async def test_idle_takes_a_mail_as_soon_as_it_arrives(tmp_path: Path, dovecot: Dovecot, box: Mailbox) -> None:
    """Polling is set to a minute and IDLE re-issue to five: only IDLE can take it within seconds."""
    await box.append([sms_mail(1, "first")])
    async with (
        running_simulator(max_rate=0) as (sim, url),
        running_bridge(make(tmp_path, url, dovecot, poll_interval=60, idle_interval=300)),
    ):
        await eventually(lambda: len(sim.delivered) == 1, "the first SMS")
        await until_count(box, "Processed", 1)
        started = time.monotonic()
        await box.append([sms_mail(2, "pushed")])
        await eventually(lambda: len(sim.delivered) == 2, "the pushed SMS", within=20)
        assert time.monotonic() - started < 20


async def test_an_invalid_mail_moves_to_rejected_and_its_sender_is_told(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox
) -> None:
    bad = mail(
        f"mobile:123\npassword:{SIM_PASSWORD}\ntext:x", to="sms@company.example", mail_from="clerk@corp.example.com"
    )
    await box.append([bad])
    async with (
        running_simulator(max_rate=0) as (sim, url),
        running_sink() as (sink, sink_port),
        running_bridge(make(tmp_path, url, dovecot, sink_port=sink_port)),
    ):
        await until_count(box, "Rejected", 1)
        await asyncio.wait_for(sink.arrived.wait(), 20)
    assert sim.requests == []
    (envelope,) = sink.messages
    assert envelope.rcpt_tos == ["clerk@corp.example.com"]
    text = envelope.original_content.decode("utf-8", "replace")
    assert "mobile: '123' is not a Kuwait mobile number" in text
    assert SIM_PASSWORD not in text


async def test_no_notice_goes_to_the_mailbox_itself_or_to_automatic_mail(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox
) -> None:
    loop_mail = mail("text:x", to="sms@company.example", mail_from="sms@company.example")
    auto = mail("text:x", to="sms@company.example", mail_from="robot@corp.example.com")
    auto["Auto-Submitted"] = "auto-replied"
    await box.append([loop_mail, auto])
    async with (
        running_simulator(max_rate=0) as (_, url),
        running_sink() as (sink, sink_port),
        running_bridge(make(tmp_path, url, dovecot, sink_port=sink_port)) as bridge,
    ):
        await until_count(box, "Rejected", 2)
        conn = outbox.connect(bridge.config.queue.path)
        notices = [r[0] for r in conn.execute("SELECT notice FROM rejections")]
        conn.close()
    assert notices == ["skipped", "skipped"]
    assert sink.messages == []


async def test_a_server_restart_mid_run_loses_nothing(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await box.append([sms_mail(1, "before")])
    async with running_simulator(max_rate=0) as (sim, url), running_bridge(make(tmp_path, url, dovecot)):
        await eventually(lambda: len(sim.delivered) == 1, "the first SMS")
        await until_count(box, "Processed", 1)
        await asyncio.to_thread(dovecot.stop)
        await asyncio.to_thread(dovecot.start)
        await box.append([sms_mail(2, "after the restart")])
        try:
            await eventually(lambda: len(sim.delivered) == 2, "the SMS after the restart", within=30)
        except AssertionError:
            print(dovecot.log.read_text()[-3000:])  # for the diagnosis, in the test's output
            raise
        await until_count(box, "Processed", 2)
    assert [d.text for d in sim.delivered] == ["before", "after the restart"]
    assert "reconnecting" in caplog.text
    assert PASSWORD not in caplog.text  # the IMAP password, through an outage and a new login


async def test_a_mail_committed_but_not_moved_before_a_crash_is_moved_not_sent_again(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox
) -> None:
    """The state a crash between the commit and the move leaves: row and identity stored, mail still in INBOX."""
    msg = sms_mail(1, "committed once")
    (uid,) = await box.append([msg])
    uidvalidity = await box.uidvalidity()
    async with running_simulator(max_rate=0) as (sim, url):
        config = make(tmp_path, url, dovecot)
        route = config.routes["body"]
        from bridge.core.formats.kwtsms import parse

        outcome = validate(
            parse(msg.get_content(), "body"),
            account_name="kwt",
            account=config.accounts["kwt"],
            route=route,
            numbers=config.numbers,
        )
        assert outcome.request is not None
        conn = outbox.connect(config.queue.path)
        conn.begin()
        outbox.intake.enqueue(
            conn,
            Accepted("imap:box", "app@corp.example.com", (), "", "x", (outcome.request,)),
            ("box", uidvalidity, uid),
        )
        conn.execute("COMMIT")
        conn.close()
        async with running_bridge(config):
            await until_count(box, "Processed", 1)
            await eventually(lambda: len(sim.delivered) == 1, "the stored SMS")
            await box.append([sms_mail(2, "a later one")])
            await eventually(lambda: len(sim.delivered) == 2, "the later SMS")
    assert [d.text for d in sim.delivered] == ["committed once", "a later one"]


async def test_500_mails_waiting_at_start_up_are_all_taken(tmp_path: Path, dovecot: Dovecot, box: Mailbox) -> None:
    await box.append([sms_mail(i, "bulk") for i in range(500)])
    async with running_simulator(max_rate=0) as (sim, url), running_bridge(make(tmp_path, url, dovecot)) as bridge:
        await until_count(box, "Processed", 500, within=120)
        await eventually(lambda: sum(len(d.numbers) for d in sim.delivered) == 500, "500 numbers", within=60)
        assert len(bridge.rows()) == 500
    numbers = [n for d in sim.delivered for n in d.numbers]
    assert sorted(numbers) == sorted(f"9655{i:07d}" for i in range(500))


async def test_a_uidvalidity_change_does_not_send_again(tmp_path: Path, dovecot: Dovecot, box: Mailbox) -> None:
    msgs = [sms_mail(i, "resync") for i in range(3)]
    await box.append(msgs, folder="SMS")
    async with running_simulator(max_rate=0) as (sim, url), running_bridge(make(tmp_path, url, dovecot, folder="SMS")):
        await until_count(box, "Processed", 3)
        await eventually(lambda: sum(len(d.numbers) for d in sim.delivered) == 3, "three numbers")
        before = await box.uidvalidity("SMS")
        await box.delete("SMS")
        await box.append(msgs, folder="SMS")  # the same mails again, in a folder with a new UIDVALIDITY
        assert await box.uidvalidity("SMS") != before
        await until_count(box, "Processed", 6, within=30)
    assert sum(len(d.numbers) for d in sim.delivered) == 3


async def test_flag_mode_leaves_mail_in_place_and_takes_it_once(tmp_path: Path, dovecot: Dovecot, box: Mailbox) -> None:
    await box.append([sms_mail(1, "flagged")])
    async with (
        running_simulator(max_rate=0) as (sim, url),
        running_bridge(make(tmp_path, url, dovecot, after="flag", idle=False)),
    ):
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
        await box.append([sms_mail(2, "second")])
        await eventually(lambda: len(sim.delivered) == 2, "the second SMS")  # a poll later: the first is not re-taken
        assert await box.count("INBOX") == 2
    assert [d.text for d in sim.delivered] == ["flagged", "second"]


async def test_imap_check_reports_without_taking_anything(tmp_path: Path, dovecot: Dovecot, box: Mailbox) -> None:
    await box.append([sms_mail(1)])
    data = config_data(tmp_path, "http://127.0.0.1:9", extra={"imap": [imap_config(dovecot)], "clients": CLIENTS})
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(data))
    data["imap"][0]["password"] = "wrong"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))

    async def run(path: Path) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bridge", "imap-check", "-c", str(path),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await run(good)
    assert code == 0, out
    assert "box: OK" in out
    assert "IDLE" in out
    assert "INBOX: 1 message(s), 1 unseen" in out
    code, out = await run(bad)
    assert code == 1
    assert "box: FAILED: login as sms refused: [AUTHENTICATIONFAILED]" in out
    assert PASSWORD not in out
    assert await box.count("INBOX") == 1


async def test_two_bridges_on_one_postgresql_outbox_watch_a_mailbox_one_at_a_time(
    tmp_path: Path, dovecot: Dovecot, box: Mailbox, pg_url: str
) -> None:
    """Both bridges are configured with the mailbox; the one holding the database lock
    watches it. When it stops, the other takes over: every mail is sent once."""

    def bridge_config(name: str) -> Any:
        data = config_data(tmp_path / name, "", extra={"imap": [imap_config(dovecot)], "clients": CLIENTS})
        data["queue"] = queue_section(tmp_path / name) | {"url": pg_url, "instance": name, "lease": 4}
        return data

    async with running_simulator(max_rate=0) as (sim, url):

        def load(name: str) -> Any:
            data = bridge_config(name)
            data["accounts"]["kwt"]["url"] = url + "/API/"
            return load_text(yaml.safe_dump(data), env={})

        await box.append([sms_mail(0, "first")])
        async with contextlib.AsyncExitStack() as first:
            await first.enter_async_context(running_bridge(load("a")))
            await eventually(lambda: len(sim.delivered) == 1, "a taking the first mail")
            async with running_bridge(load("b")):
                await box.append([sms_mail(i, f"both up {i}") for i in range(1, 11)])
                await eventually(lambda: len(sim.delivered) == 11, "10 more, with both bridges up")
                await first.aclose()  # a stops: its lock is free, b takes the mailbox
                await box.append([sms_mail(i, f"a gone {i}") for i in range(11, 16)])
                await eventually(lambda: len(sim.delivered) == 16, "5 more, taken by b", within=30)
                await until_count(box, "Processed", 16)
    texts = [(tuple(item.numbers), item.text) for item in sim.delivered]
    assert len(set(texts)) == 16  # none twice
