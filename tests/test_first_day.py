"""A sysadmin's first day, as real processes: a second ``serve`` beside the service, ports
already taken, and what the operator sees of it."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import yaml

from tests.helpers import config_data, eventually, mail, running_simulator, running_sink, submit
from tests.ports import free_port
from tests.test_daemon_process import daemon, view, write_config


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
