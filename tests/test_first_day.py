"""A sysadmin's first day, as real processes: a second ``serve`` beside the service, ports
already taken, and what the operator sees of it."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path

import httpx
import yaml

from tests.helpers import config_data, eventually, mail, running_simulator, running_sink, submit
from tests.ports import free_port
from tests.test_daemon_process import Daemon, daemon, view, write_config

ROOT = Path(__file__).parent.parent


async def serve_once(config_path: Path) -> tuple[int, str]:
    """``sms-bridge serve`` that is expected to stop by itself: (exit status, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "-c", str(config_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, err.decode("utf-8", "replace")


async def test_a_second_serve_on_the_same_sqlite_outbox_exits_at_once_and_changes_nothing(tmp_path: Path) -> None:
    """The service is handing an SMS to a slow provider when the sysadmin runs ``serve`` again:
    the second process names the outbox and the process holding it, exits 1, and the first
    bridge's SMS still ends ``sent`` with no notice mailed."""
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        path = write_config(tmp_path, url, sink_port=sink_port, account={"timeout": 30})
        async with daemon(path) as first:
            port = await first.port
            sim.arm("slow", 1, delay=8)  # the provider takes the SMS, then answers late
            code, reply = await submit(port, mail("mobile:96597119440\ntext:in flight"))
            assert code == 250
            ident = reply.split()[-1]
            await eventually(lambda: len(sim.delivered) == 1, "the SMS to reach the provider")
            assert view(tmp_path).rows(ident)[0].delivery.state == "sending"

            status, err = await serve_once(path)
            assert status == 1
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1, err
            assert str((tmp_path / "outbox.sqlite3").absolute()) in lines[0]
            assert f"process {first.proc.pid}" in lines[0]
            assert "Traceback" not in err
            assert "recovered" not in err
            assert view(tmp_path).rows(ident)[0].delivery.state == "sending"  # untouched

            await eventually(lambda: view(tmp_path).rows(ident)[0].delivery.state == "sent", "the late answer")
            history = view(tmp_path).history(ident)
            assert not any("stopped while" in event.detail for event in history)
            first.proc.terminate()
            assert await asyncio.wait_for(first.proc.wait(), 30) == 0
    assert len(sim.delivered) == 1
    assert sink.messages == []  # no notice: nothing went wrong


async def test_queue_commands_work_beside_a_running_bridge(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        path = write_config(tmp_path, url)
        async with daemon(path) as d:
            code, _ = await submit(await d.port, mail("mobile:96597119440\ntext:listed"))
            assert code == 250
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bridge", "queue", "-c", str(path), "list",
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(proc.communicate(), 30)
            assert proc.returncode == 0, out
            assert b"965971***40" in out


def _taken() -> tuple[socket.socket, str]:
    """A listening socket on 127.0.0.1 holding a port, and that port as host:port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", free_port()))
    sock.listen()
    return sock, f"127.0.0.1:{sock.getsockname()[1]}"


async def test_each_listener_that_cannot_be_had_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """SMTP, LMTP, admin and simulator ports already taken, TLS files missing, an outbox that
    cannot be opened: one line naming what and where, exit 1, never a traceback."""
    sock, taken = _taken()
    try:
        base = config_data(tmp_path, "http://127.0.0.1:9")
        cases = {
            "smtp.listen": {"smtp": base["smtp"] | {"listen": [taken]}},
            "lmtp.listen": {"lmtp": {"listen": taken}},
            "admin.listen": {"admin": {"listen": taken}},
            "simulator.listen": {"simulator": {"enabled": True, "listen": taken}},
            "smtp.tls_cert": {
                "smtp": base["smtp"] | {"tls_cert": str(tmp_path / "no.crt"), "tls_key": str(tmp_path / "no.key")}
            },
            "outbox": {"queue": {"path": str(tmp_path / "a-directory")}},
        }
        (tmp_path / "a-directory").mkdir()
        for what, change in cases.items():
            path = tmp_path / f"{what}.yaml"
            path.write_text(yaml.safe_dump(base | change))
            status, err = await serve_once(path)
            lines = [line for line in err.splitlines() if " ERROR " in line or " CRITICAL " in line]
            assert status == 1, (what, err)
            assert len(lines) == 1, (what, err)
            assert "Traceback" not in err
            if what == "outbox":
                assert "a-directory" in lines[0]
            elif what == "smtp.tls_cert":
                assert "no.crt" in lines[0]
                assert "smtp.tls_cert" in lines[0]
            else:
                assert taken in lines[0], (what, err)
                assert "Address already in use" in lines[0]
                assert what in lines[0], (what, err)
    finally:
        sock.close()


async def spawn_serve(config_path: Path, cwd: Path) -> Daemon:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "serve", "-c", str(config_path), cwd=cwd,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    running = Daemon(proc)
    await asyncio.wait_for(asyncio.shield(running.port), 30)
    return running


async def stop(d: Daemon) -> None:
    d.proc.terminate()
    await asyncio.wait_for(d.proc.wait(), 30)
    await d.reader


async def cli_in(cwd: Path, *args: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, cwd=cwd, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


async def test_an_unknown_alias_is_answered_with_the_aliases_logged_once_and_shown_on_the_page(tmp_path: Path) -> None:
    """A typo in Zabbix's media (nobody@alerts…): the 550 names the domain's aliases, the bridge's
    log says it once for two such mails, and the status page lists it with its reason."""
    admin = free_port()
    async with running_simulator() as (_, url):
        path = write_config(tmp_path, url, extra={"admin": {"listen": f"127.0.0.1:{admin}"}})
        d = await spawn_serve(path, tmp_path)
        try:
            port = await d.port
            for _ in range(2):
                code, reply = await submit(port, mail("disk full", to="nobody@alerts.bridge.test"))
                assert code == 550
                assert "'nobody' is neither a phone number nor an alias here (aliases: oncall)" in reply
            async with httpx.AsyncClient() as client:
                page = await client.get(f"http://127.0.0.1:{admin}/")
        finally:
            await stop(d)
    lines = [line for line in d.log if "refused via=smtp at=rcpt" in line]
    assert len(lines) == 1, d.log
    assert "address=nobody@alerts.bridge.test" in lines[0]
    assert "aliases: oncall" in lines[0]
    assert 'id="refusals"' in page.text
    assert "nobody@alerts.bridge.test" in page.text
    assert "neither a phone number nor an alias" in page.text.replace("&#39;", "'")


async def test_a_token_client_beside_the_local_one_keeps_local_mail_working(tmp_path: Path) -> None:
    """The README's webhook client added next to ``local``: swaks-like local mail still gets 250.
    Added instead of it, check-config warns that local mail will be refused (and it is)."""
    token = {"token": "t0ken-for-prometheus-0123456789"}
    local = {"networks": ["127.0.0.0/8", "::1/128"]}
    async with running_simulator() as (sim, url):
        beside = write_config(tmp_path, url, extra={"clients": {"local": local, "prometheus": token}})
        code, out = await cli_in(tmp_path, "check-config", "-c", str(beside))
        assert code == 0, out
        assert "implicit local client" not in out
        d = await spawn_serve(beside, tmp_path)
        try:
            code, _ = await submit(await d.port, mail("mobile:96597119440\ntext:from cron on this host"))
            assert code == 250
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
        finally:
            await stop(d)

        instead = write_config(tmp_path, url, extra={"clients": {"prometheus": token}})
        code, out = await cli_in(tmp_path, "check-config", "-c", str(instead))
        assert code == 0, out
        assert "replaces the implicit local client, so mail from this machine" in out
        assert "clients.local" in out
        assert token["token"] not in out
        d = await spawn_serve(instead, tmp_path)
        try:
            code, reply = await submit(await d.port, mail("mobile:96597119440\ntext:refused"))
        finally:
            await stop(d)
    assert (code, "may not send through this bridge" in reply) == (550, True)


async def test_queue_from_another_directory_names_the_path_it_looked_at_and_the_running_outbox(
    tmp_path: Path,
) -> None:
    """``queue.path`` relative, the bridge started in its directory, ``queue list`` run from /:
    check-config warns of the relative path; the error names both outboxes, absolute."""
    admin = free_port()
    async with running_simulator() as (_, url):
        data = yaml.safe_load(write_config(tmp_path, url).read_text())
        data["queue"]["path"] = "state/outbox.sqlite3"
        data["admin"] = {"listen": f"127.0.0.1:{admin}"}
        path = tmp_path / "relative.yaml"
        path.write_text(yaml.safe_dump(data))
        code, out = await cli_in(tmp_path, "check-config", "-c", str(path))
        assert "queue.path state/outbox.sqlite3 is relative" in out
        d = await spawn_serve(path, tmp_path)
        try:
            code, out = await cli_in(Path("/"), "queue", "-c", str(path), "list")
            code_here, out_here = await cli_in(tmp_path, "queue", "-c", str(path), "list")
        finally:
            await stop(d)
    assert code == 1
    assert "no outbox at /state/outbox.sqlite3 (queue.path state/outbox.sqlite3, relative to" in out
    assert f"the running bridge's outbox is sqlite {tmp_path / 'state' / 'outbox.sqlite3'}" in out
    assert code_here == 0, out_here


async def test_cli_help_usage_errors_and_sendmail_help() -> None:
    code, out = await cli_in(ROOT, "sendmail", "--help")
    assert code == 0
    assert "usage: sms-bridge sendmail" in out
    assert "exit status" in out
    code, out = await cli_in(ROOT, "sendmail", "-h")
    assert code == 0
    for command in ("serve", "check-config", "check", "send", "balance", "senders", "hash-password", "imap-check"):
        code, out = await cli_in(ROOT, command, "--help")
        assert code == 0, command
        assert "examples:" in out, command
        assert f"sms-bridge {command}" in out.split("examples:")[1], command
    code, out = await cli_in(ROOT, "queue", "--help")
    assert "examples:" in out
    code, out = await cli_in(
        ROOT,
        "send",
        "-c",
        str(ROOT / "config.example.yaml"),
        "--account",
        "nosuch",
        "--to",
        "96597119440",
        "--text",
        "x",
    )
    assert code == 2
    assert "no account named 'nosuch'" in out
    assert "Traceback" not in out


async def test_an_sms_sent_by_the_cli_paces_the_next_mail_to_that_number(tmp_path: Path) -> None:
    """``send`` then a mail to the same number: the bridge waits out the provider's repeat rule
    (here 3 s) instead of meeting its refusal (ERR028); the reverse, ``send`` waits."""
    async with running_simulator(repeat_window=3) as (sim, url):
        path = write_config(tmp_path, url, account={"repeat_interval": 3})
        d = await spawn_serve(path, tmp_path)
        try:
            code, out = await cli_in(
                tmp_path, "send", "-c", str(path), "--account", "kwt", "--to", "96597119440", "--text", "by hand"
            )
            assert code == 0, out
            code, reply = await submit(await d.port, mail("mobile:96597119440\ntext:right after"))
            assert code == 250
            ident = reply.split()[-1]
            bridge = view(tmp_path)
            await eventually(lambda: bridge.rows(ident)[0].delivery.state == "sent", "the mail's SMS")
            row = bridge.rows(ident)[0]
            code, out = await cli_in(
                tmp_path, "send", "-c", str(path), "--account", "kwt", "--to", "96597119440", "--text", "again"
            )
        finally:
            await stop(d)
    assert row.delivery.attempts == 1  # not refused with ERR028 first
    assert code == 0, out
    assert "waiting" in out
    assert [m.text for m in sim.delivered] == ["by hand", "right after", "again"]
    gaps = [b.at - a.at for a, b in zip(sim.delivered, sim.delivered[1:], strict=False)]
    assert all(gap >= 3 for gap in gaps), gaps
