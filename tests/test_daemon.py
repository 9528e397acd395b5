"""The daemon over real sockets: SMTP client → bridge → simulator (HTTP), notices → sink."""

from __future__ import annotations

import asyncio
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest

from bridge.outbox import Notice, notices, results
from tests.helpers import (
    SIM_PASSWORD,
    before_each_operation,
    eventually,
    free_port,
    mail,
    make_config,
    running_bridge,
    running_simulator,
    running_sink,
    submit,
)

#: every test here runs on each outbox backend (SQLite, PostgreSQL)
pytestmark = pytest.mark.usefixtures("backend")


async def test_valid_mail_gets_250_only_when_stored_and_becomes_an_sms(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url)
        async with running_bridge(config) as bridge:
            code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:Hello there"))
            assert code == 250
            assert text.startswith("2.0.0 queued as ")
            mail_id = text.split()[-1]
            (row,) = bridge.rows(mail_id)  # committed before the reply
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == "sent", "the SMS to be sent")
    assert [(d.numbers, d.text) for d in sim.delivered] == [(["96597119440"], "Hello there")]
    (row,) = bridge.rows(mail_id)
    assert row.delivery.provider_msg_id == sim.delivered[0].msg_id
    assert row.delivery.points_charged == 1
    assert row.delivery.attempts == 1


async def test_address_format_alias_reaches_every_number(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
        code, _ = await submit(
            bridge.port,
            mail("Host: db1\nState: PROBLEM", to="oncall@alerts.bridge.test", subject="PROBLEM: db1 down"),
        )
        assert code == 250
        await eventually(lambda: len(sim.delivered) == 1, "the alert SMS")
    assert sim.delivered[0].numbers == ["96597119440", "96566074414"]
    assert sim.delivered[0].text == "PROBLEM: db1 down"


async def test_invalid_body_gets_550_naming_every_field_and_nothing_is_queued(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
        code, text = await submit(bridge.port, mail("mobile:123\nlang:1\ntext:مرحبا"))
        assert code == 550
        lines = text.splitlines()
        assert any(line.startswith("5.6.0 mobile: '123'") for line in lines)
        assert any(line.startswith("5.6.0 lang: is 1 (English)") for line in lines)
        assert bridge.rows() == []
    assert sim.requests == []


async def test_unknown_recipient_is_refused_at_rcpt(tmp_path: Path) -> None:
    async with running_simulator() as (_, url), running_bridge(make_config(tmp_path, url)) as bridge:
        code, text = await submit(bridge.port, mail("text:x", to="someone@elsewhere.example"))
    assert code == 550
    assert text.startswith("5.1.1")


async def test_too_large_a_message_gets_552(tmp_path: Path) -> None:
    async with (
        running_simulator() as (_, url),
        running_bridge(make_config(tmp_path, url, smtp={"max_message_size": 2048})) as bridge,
    ):
        code, _ = await submit(bridge.port, mail("mobile:96597119440\ntext:x\n" + "y" * 5000))
    assert code == 552


async def test_a_resubmitted_mail_is_not_sent_twice(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
        msg = mail("mobile:96597119440\ntext:once only", message_id="<retry-1@corp.example.com>")
        first = await submit(bridge.port, msg)
        second = await submit(bridge.port, msg)
        assert first[0] == second[0] == 250
        assert second[1] == first[1].replace("queued as", "already queued as")
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
        other = await submit(bridge.port, mail("mobile:96566074414\ntext:another"))
        assert other[0] == 250
        await eventually(lambda: len(sim.delivered) == 2, "the second mail's SMS")
    assert [d.text for d in sim.delivered] == ["once only", "another"]


async def test_a_permanent_failure_fails_the_row_and_mails_a_notice(tmp_path: Path) -> None:
    async with running_simulator() as (_sim, url), running_sink() as (sink, sink_port):
        config = make_config(tmp_path, url, sink_port=sink_port, account={"sender": "NOT-ALLOWED"})
        async with running_bridge(config) as bridge:
            code, text = await submit(
                bridge.port,
                mail("mobile:96597119440\ntext:x", mail_from="erp@corp.example.com", message_id="<m1@corp>"),
            )
            assert code == 250
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.notice == "sent", "the notice to be recorded")
            (row,) = bridge.rows(mail_id)
    assert (row.delivery.state, row.delivery.last_code, row.delivery.notice) == ("failed", "ERR008", "sent")
    (envelope,) = sink.messages
    assert envelope.mail_from == "<>"  # the null reverse-path: a notice never causes a notice
    assert envelope.rcpt_tos == ["erp@corp.example.com"]
    notice = message_from_bytes(envelope.original_content, policy=policy.default)
    assert notice.get_content_type() == "multipart/report"
    assert notice["In-Reply-To"] == "<m1@corp>"
    raw = envelope.original_content.decode("utf-8", "replace")
    assert "sender ID is banned or unknown" in raw
    assert "Action: failed" in raw
    assert SIM_PASSWORD not in raw


@pytest.mark.parametrize("fault", ["drop", "http500", "slow"])
async def test_an_ambiguous_outcome_is_unknown_and_not_resent(tmp_path: Path, fault: str) -> None:
    async with running_simulator() as (sim, url):
        sim.arm(fault, delay=3)
        async with running_bridge(make_config(tmp_path, url, account={"timeout": 0.5})) as bridge:
            _code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:maybe"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == "unknown", "the row to become unknown")
            # a later mail goes through; the unknown one was not tried again meanwhile
            await submit(bridge.port, mail("mobile:96566074414\ntext:later"))
            await eventually(lambda: any(d.text == "later" for d in sim.delivered), "the later SMS")
    sends = [r for r in sim.requests if r["params"].get("message") == "maybe"]
    assert len(sends) == 1


async def test_at_least_once_accounts_resend_after_an_ambiguous_outcome(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        sim.arm("drop")
        config = make_config(tmp_path, url, account={"at_least_once": True})
        async with running_bridge(config) as bridge:
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:twice is fine"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == "sent", "the resend")
    assert [d.text for d in sim.delivered] == ["twice is fine", "twice is fine"]
    assert bridge.rows(mail_id)[0].delivery.attempts == 2


async def test_a_transient_failure_is_retried(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        sim.arm("http503", count=2)
        async with running_bridge(make_config(tmp_path, url)) as bridge:
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:third time"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == "sent", "the third attempt")
    assert bridge.rows(mail_id)[0].delivery.attempts == 3
    assert len(sim.delivered) == 1


async def test_a_transient_failure_past_max_age_expires_with_a_notice(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        sim.arm("http503", count=0)  # every request
        config = make_config(tmp_path, url, sink_port=sink_port, dispatch={"retry_schedule": [0.3], "max_age": 0.5})
        async with running_bridge(config) as bridge:
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:too late"))
            await asyncio.wait_for(sink.arrived.wait(), 20)
            (row,) = bridge.rows(text.split()[-1])
    assert row.delivery.state == "expired"
    assert "not sent within" in row.delivery.last_error


async def test_ack_delivered_reports_the_provider_outcome_in_the_reply(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        config = make_config(tmp_path, url, sink_port=sink_port, body_route={"ack": "delivered"})
        async with running_bridge(config) as bridge:
            code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:confirmed"))
            assert code == 250
            assert f"sent as {sim.delivered[0].msg_id}" in text
            code, text = await submit(bridge.port, mail("mobile:96566074414\nsender:NOPE\ntext:refused"))
            assert code == 550
            assert "ERR008" in text
            failed = [r for r in bridge.rows() if r.delivery.state == "failed"]
    assert [r.delivery.notice for r in failed] == ["replied"]  # told by 550: no notice as well
    assert sink.messages == []


async def test_ack_delivered_answers_a_refusal_only_once_its_outcome_is_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session's ``replied`` must come after the dispatcher's ``held``, however slow the store."""
    calls: list[str] = []

    async def slow_finish_recorded_set_notice(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if op is results.finish:
            await asyncio.sleep(0.3)  # fault injection: a slow database, not synchronisation
            calls.append(f"finish {kwargs['notice']}")
        elif op is notices.set_notice:
            notice: Notice = kwargs["notice"] if "notice" in kwargs else args[1]
            calls.append(f"set_notice {notice}")

    before_each_operation(monkeypatch, slow_finish_recorded_set_notice)
    async with running_simulator() as (_, url), running_sink() as (sink, sink_port):
        config = make_config(tmp_path, url, sink_port=sink_port, body_route={"ack": "delivered"})
        async with running_bridge(config) as bridge:
            code, text = await submit(bridge.port, mail("mobile:96566074414\nsender:NOPE\ntext:refused"))
            assert code == 550
            (row,) = bridge.rows(text.split("(")[1].split(")")[0])
    assert calls == ["finish held", "set_notice replied"]
    assert row.delivery.notice == "replied"
    assert sink.messages == []


async def test_a_refusal_stored_after_the_session_stopped_waiting_gets_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The session gives up (``ack_timeout``) while the refusal is being stored for it: the
    dispatcher finds nobody took it, and the sender is told by mail instead."""
    replied = asyncio.Event()
    told: list[str] = []

    async def finish_after_the_reply(op: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if op is results.finish:
            told.append(str(kwargs["notice"]))
            async with asyncio.timeout(30):
                await replied.wait()

    before_each_operation(monkeypatch, finish_after_the_reply)
    async with running_simulator() as (_, url), running_sink() as (sink, sink_port):
        route = {"ack": "delivered", "ack_timeout": 2}
        config = make_config(tmp_path, url, sink_port=sink_port, body_route=route)
        async with running_bridge(config) as bridge:
            code, text = await submit(bridge.port, mail("mobile:96566074414\nsender:NOPE\ntext:refused"))
            replied.set()
            assert (code, text.split(" as ")[0]) == (250, "2.0.0 queued")
            await asyncio.wait_for(sink.arrived.wait(), 20)
            (row,) = bridge.rows(text.split()[-1])
            await eventually(lambda: bridge.rows(row.id)[0].delivery.notice == "sent", "the notice recorded")
    assert told == ["held"]  # stored for the session, which had gone by then
    assert "ERR008" in message_from_bytes(sink.messages[0].content, policy=policy.default).get_body().get_content()


async def test_identical_texts_are_combined_into_one_provider_call(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url, account={"rate": 0.5})  # one call per 2 s: the rest pile up
        async with running_bridge(config) as bridge:
            replies = await asyncio.gather(
                *(submit(bridge.port, mail(f"mobile:965500000{i:02d}\ntext:storm")) for i in range(12))
            )
            assert all(code == 250 for code, _ in replies)
            await eventually(lambda: sum(len(d.numbers) for d in sim.delivered) == 12, "all 12 numbers", within=30)
    assert len(sim.requests) <= 3
    assert all(r.delivery.state == "sent" for r in bridge.rows())


async def test_auth_is_not_offered_before_tls_and_outsiders_must_authenticate(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        clients = {"lan": {"networks": ["10.0.0.0/8"]}, "scanner": {"user": "scanner", "password": "scanner-canary-pw"}}
        async with running_bridge(make_config(tmp_path, url, extra={"clients": clients})) as bridge:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.port, start_tls=False, timeout=10)
            await client.connect()
            await client.ehlo()
            assert not client.supports_extension("auth")
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await client.sendmail("a@corp.example.com", ["sms@bridge.test"], b"Subject: x\r\n\r\ntext:x\r\n")
            assert caught.value.code == 530
            await client.quit()
            assert bridge.rows() == []


async def test_plaintext_auth_listener_accepts_a_configured_user(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        smtp = {"listen": [{"address": "127.0.0.1:0", "plaintext_auth": True}]}
        clients = {"lan": {"networks": ["10.0.0.0/8"]}, "scanner": {"user": "scanner", "password": "scanner-canary-pw"}}
        async with running_bridge(make_config(tmp_path, url, smtp=smtp, extra={"clients": clients})) as bridge:
            msg = mail("mobile:96597119440\ntext:authed")
            bad = await submit(bridge.port, msg, username="scanner", password="wrong", start_tls=False)
            assert bad[0] == 535
            code, _ = await submit(bridge.port, msg, username="scanner", password="scanner-canary-pw", start_tls=False)
            assert code == 250
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")


async def test_a_client_over_the_connection_limit_gets_421(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        smtp = {"max_connections_per_client": 2}
        async with running_bridge(make_config(tmp_path, url, smtp=smtp)) as bridge:
            held = [await asyncio.open_connection("127.0.0.1", bridge.port) for _ in range(2)]
            for reader, _ in held:
                assert (await reader.readline()).startswith(b"220")
            reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
            assert (await asyncio.wait_for(reader.readline(), 10)).startswith(b"421 4.7.0")
            writer.close()
            for _, w in held:
                w.close()
                await w.wait_closed()
            # the slots come free once the server has seen the two connections close
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            code = 0
            while code != 250 and loop.time() < deadline:
                code, _ = await submit(bridge.port, mail("mobile:96597119440\ntext:x"))
            assert code == 250


async def test_passthrough_credentials_are_used_then_erased(tmp_path: Path, backend: str) -> None:
    async with running_simulator() as (_sim, url):
        config = make_config(tmp_path, url, body_route={"body_credentials": "passthrough"})
        async with running_bridge(config) as bridge:
            body = f"username:corp\npassword:{SIM_PASSWORD}\nmobile:96597119440\ntext:legacy"
            _, text = await submit(bridge.port, mail(body))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == "sent", "the SMS")
            [row] = bridge.rows(mail_id)
            assert row.request.credentials is not None
            assert row.request.credentials.password == ""
    if backend != "sqlite":
        return
    # stopped cleanly: the WAL is checkpointed away, and secure_delete zeroed the erased value
    assert not Path(config.queue.path + "-wal").exists()
    assert SIM_PASSWORD.encode() not in Path(config.queue.path).read_bytes()


async def test_the_provider_s_retry_after_sets_the_next_attempt(tmp_path: Path) -> None:
    """ERR028 says: this number again in 15 s. The retry comes after 15 s, not after the schedule's step."""
    async with running_simulator(repeat_window=15) as (_, url):
        config = make_config(tmp_path, url, dispatch={"retry_schedule": [300], "jitter": 0.2})
        async with running_bridge(config) as bridge:
            await submit(bridge.port, mail("mobile:96597119440\ntext:first"))
            await eventually(lambda: any(r.delivery.state == "sent" for r in bridge.rows()), "the first SMS")
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:second"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.last_code == "ERR028", "the ERR028 reply")
            (row,) = bridge.rows(mail_id)
    assert 15 <= row.delivery.next_attempt - row.updated <= 15 * 1.2 + 0.01


async def test_swaks_as_an_administrator_types_it(tmp_path: Path) -> None:
    """The README's swaks command, against the real server."""
    import shutil

    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (.ci/run installs it)")
    async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
        proc = await asyncio.create_subprocess_exec(
            swaks, "--server", f"127.0.0.1:{bridge.port}", "--from", "you@example.com", "--to", "sms@bridge.test",
            "--body", "mobile:96597119440\ntext:Hello from swaks",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, out.decode()
        assert b"250 2.0.0 queued as" in out
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
    assert sim.delivered[0].text == "Hello from swaks"


async def test_health_and_metrics_over_http(tmp_path: Path, backend: str) -> None:
    """/metrics is Prometheus' text format that ``promtool check metrics`` accepts."""
    import shutil
    import socket

    import httpx

    admin_port = free_port()
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url, extra={"admin": {"listen": f"127.0.0.1:{admin_port}"}})
        async with running_bridge(config) as bridge, httpx.AsyncClient() as client:
            await submit(bridge.port, mail("mobile:96597119440\ntext:counted"))
            refused, _ = await submit(bridge.port, mail("x", to="nobody@elsewhere.example"))
            assert refused == 550
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            await eventually(lambda: bridge.rows()[0].delivery.state == "sent", "the sent state")
            health = await client.get(f"http://127.0.0.1:{admin_port}/healthz")
            metrics = await client.get(f"http://127.0.0.1:{admin_port}/metrics")
    assert health.status_code == 200
    assert health.json()["status"] == "ok"
    assert health.json()["queue"]["sent"] == 1
    database = health.json()["database"]
    assert database["reachable"] is True
    assert database["backend"].startswith(backend)
    assert health.json()["instance"] == (socket.gethostname() if backend == "postgresql" else "local")
    assert "pg-canary" not in health.text  # the database password
    text = metrics.text
    assert 'sms_bridge_messages{state="sent"} 1.0' in text
    assert 'sms_bridge_mail_accepted_total{via="smtp"} 1.0' in text
    assert 'sms_bridge_provider_calls_total{account="kwt",code="OK",result="sent"} 1.0' in text
    assert 'sms_bridge_sms_total{account="kwt",provider="kwtsms-http",state="sent"} 1.0' in text
    assert 'sms_bridge_points_spent_total{account="kwt"} 1.0' in text
    assert 'sms_bridge_balance_points{account="kwt"} 999.0' in text
    assert 'sms_bridge_provider_latency_seconds_count{account="kwt"} 1.0' in text
    assert "sms_bridge_queue_oldest_seconds 0.0" in text
    assert 'sms_bridge_mail_refused_total{reason="relay",stage="rcpt",via="smtp"} 1.0' in text
    assert "96597119440" not in text + health.text
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")
    lint = await asyncio.create_subprocess_exec(
        promtool,
        "check",
        "metrics",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    said, _ = await lint.communicate(metrics.content)
    assert lint.returncode == 0, said.decode()


def test_the_readme_alerting_rules_pass_promtool(tmp_path: Path) -> None:
    import re
    import shutil
    import subprocess

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs Debian's prometheus package)")
    readme = (Path(__file__).parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    match = re.search(r"```yaml\n(# sms-bridge alerting rules\n.*?)```", readme, re.S)
    assert match, "docs/operations.md has its alerting rules block"
    rules = tmp_path / "rules.yml"
    rules.write_text(match.group(1))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout
