"""No silent outcome: every end state after the 250 reaches a person, and every message keeps its history."""

from __future__ import annotations

import subprocess
import sys
import time
from email import message_from_bytes, policy
from pathlib import Path

import yaml

from bridge import outbox
from bridge.outbox import Notice, State
from tests.helpers import (
    SIM_PASSWORD,
    config_data,
    eventually,
    later,
    mail,
    make_config,
    run_cli,
    running_bridge,
    running_simulator,
    running_sink,
    submit,
)

OPERATOR = "noc@corp.example.com"


def notify_extra(sink_port: int, interval: float = 300, gather: float = 1.0) -> dict[str, object]:
    return {
        "notify": {
            "smarthost": f"127.0.0.1:{sink_port}",
            "tls": "none",
            "sender": "mailer-daemon@bridge.test",
            "operator": OPERATOR,
            "operator_interval": interval,
            "operator_gather": gather,
        }
    }


def texts(sink_messages: list[object], to: str) -> list[str]:
    out = []
    for envelope in sink_messages:
        if to in envelope.rcpt_tos:  # type: ignore[attr-defined]
            message = message_from_bytes(envelope.original_content, policy=policy.default)  # type: ignore[attr-defined]
            parts = [p.get_content() for p in message.walk() if p.get_content_type() == "text/plain"]
            out.append("\n".join([str(message["Subject"]), *parts, envelope.original_content.decode()]))  # type: ignore[attr-defined]
    return out


async def test_http_500_leaves_mail_unknown_tells_each_sender_and_the_operator_once(tmp_path: Path) -> None:
    """The independent transient check: five mails met by HTTP 500 are held as unknown, never resent;
    each sender gets a notice in plain words, and the operator one mail listing all five."""
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        sim.arm("http500", count=5)
        config = make_config(tmp_path, url, extra=notify_extra(sink_port))
        async with running_bridge(config) as bridge:
            senders = [f"app{i}@corp.example.com" for i in range(5)]
            for i, sender in enumerate(senders):
                code, _ = await submit(bridge.port, mail(f"mobile:96597119440\ntext:alert {i}", mail_from=sender))
                assert code == 250
            await eventually(
                lambda: (
                    all(r.delivery.notice == Notice.SENT for r in bridge.rows())
                    and all(r.delivery.operator == Notice.SENT for r in bridge.rows())
                ),
                "every notice to be sent",
            )
            # the provider recovers: a new mail is sent once, the unknown ones are not resent
            await submit(bridge.port, mail("mobile:96566074414\ntext:after recovery"))
            await eventually(lambda: len(sim.delivered) == 1, "the mail after recovery")
            rows = bridge.rows()
    assert sorted(r.delivery.state for r in rows) == [State.SENT] + [State.UNKNOWN] * 5
    assert [d.text for d in sim.delivered] == ["after recovery"]
    assert len([r for r in sim.requests if r["command"] == "send"]) == 6
    for sender in senders:
        (notice,) = texts(sink.messages, sender)
        assert notice.startswith("SMS may not have been sent")
        assert "may or may not have been sent" in notice
        assert "not resent automatically" in " ".join(notice.split())
        assert SIM_PASSWORD not in notice
    (operator,) = texts(sink.messages, OPERATOR)
    assert "5 message(s) need attention, 5 may or may not have been sent" in operator
    for row in rows:
        if row.delivery.state == State.UNKNOWN:
            assert row.id in operator


async def test_operator_mail_is_batched_in_a_storm(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        sim.arm("http500", count=1)
        config = make_config(tmp_path, url, extra=notify_extra(sink_port, interval=3600, gather=0.2))
        async with running_bridge(config) as bridge:
            await submit(bridge.port, mail("mobile:96597119440\ntext:first"))
            await eventually(lambda: len(texts(sink.messages, OPERATOR)) == 1, "the first operator mail")
            sim.arm("http500", count=4)
            for i in range(4):
                await submit(bridge.port, mail(f"mobile:96597119440\ntext:more {i}"))
            await eventually(
                lambda: sum(r.delivery.state == State.UNKNOWN for r in bridge.rows()) == 5, "five unknown rows"
            )
            await eventually(lambda: len(sink.messages) >= 5 + 1, "the senders' notices")
            pending = [r for r in bridge.rows() if r.delivery.operator == Notice.PENDING]
    assert len(texts(sink.messages, OPERATOR)) == 1  # the other four wait for the next batch
    assert len(pending) == 4


async def test_a_webhook_or_null_sender_failure_goes_to_the_operator(tmp_path: Path) -> None:
    async with running_simulator() as (_sim, url), running_sink() as (sink, sink_port):
        config = make_config(tmp_path, url, account={"sender": "NOT-ALLOWED"}, extra=notify_extra(sink_port))
        async with running_bridge(config) as bridge:
            await submit(
                bridge.port, mail("mobile:96597119440\ntext:from nobody", mail_from="robot@corp.example.com"), sender=""
            )
            await eventually(lambda: len(texts(sink.messages, OPERATOR)) == 1, "the operator mail")
            (row,) = bridge.rows()
    assert row.delivery.state == State.FAILED
    assert row.delivery.notice == Notice.SKIPPED
    (operator,) = texts(sink.messages, OPERATOR)
    assert "no address to tell" in operator
    assert row.id in operator


def test_check_config_warns_that_notices_are_off_on_the_example_config() -> None:
    example = Path(__file__).parent.parent / "config.example.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "-c", str(example)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert "warning: notify.smarthost is not set" in result.stdout
    assert "only logged" in result.stdout


async def test_intake_warnings_and_history_appear_in_queue_show(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url)
        async with running_bridge(config) as bridge:
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:Server down 🔥 now"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == State.SENT, "the SMS")
    assert sim.delivered[0].text == "Server down now"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, url)))
    code, shown = await run_cli("queue", "-c", str(path), "show", mail_id)
    assert code == 0
    assert "warning:         text: emoji removed ('🔥' (U+1F525))" in shown
    assert "accepted: via smtp, client local, route body, account kwt" in shown
    assert "sent: attempt 1 (kwt, kwtsms-http): provider id" in shown


async def test_operator_actions_are_recorded_with_who_made_them(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        sim.arm("http500")
        config = make_config(tmp_path, url)
        async with running_bridge(config) as bridge:
            _, text = await submit(bridge.port, mail("mobile:96597119440\ntext:maybe"))
            mail_id = text.split()[-1]
            await eventually(lambda: bridge.rows(mail_id)[0].delivery.state == State.UNKNOWN, "unknown")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config_data(tmp_path, url)))
    assert (await run_cli("queue", "-c", str(path), "cancel", mail_id))[0] == 1  # not queued: nothing to cancel
    code, out = await run_cli("queue", "-c", str(path), "not-sent", mail_id)
    assert code == 0, out
    code, shown = await run_cli("queue", "-c", str(path), "show", mail_id)
    assert "state:           failed" in shown
    assert "failed (by cli:" in shown
    assert "marked as not sent by the operator" in shown


def test_final_rows_and_their_history_are_pruned_after_keep_days(tmp_path: Path) -> None:
    from tests.helpers import sms

    conn = outbox.connect(tmp_path / "o.sqlite3")
    conn.begin()
    accepted = outbox.Accepted("smtp", "a@b", ("x@y",), "", "s", requests=(sms(text="old"), sms(text="new")))
    done = later(-40 * 86400, outbox.intake.enqueue)(conn, accepted)
    old_id, new_id = done.ids
    later(-31 * 86400, outbox.results.finish)(
        conn,
        [old_id],
        state=State.FAILED,
        error="x",
        code="",
        raw="",
        notice=Notice.NONE,
        from_states=(State.QUEUED,),
    )
    assert outbox.upkeep.prune(conn, time.time() - 30 * 86400) == 1
    conn.execute("COMMIT")
    assert [r.id for r in outbox.views.listing(conn)] == [new_id]  # still queued: never pruned
    assert outbox.views.history(conn, old_id) == []
    assert outbox.views.history(conn, new_id) != []
