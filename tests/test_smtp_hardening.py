"""SMTP as the internet and old scripts speak it: bare line feeds, smuggling, STARTTLS, sizes, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import smtplib
import ssl
import threading
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.ingress.lineends import LineEnds
from tests.helpers import eventually, make_config, running_bridge, running_simulator

K1 = "96597119440"


async def session(port: int, *lines: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]:
    """Connect, send each line and read its whole reply; (reader, writer, last reply lines)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reply = [await asyncio.wait_for(reader.readline(), 10)]
    for line in lines:
        writer.write(line)
        reply = await read_reply(reader)
    return reader, writer, reply


async def read_reply(reader: asyncio.StreamReader) -> list[bytes]:
    lines = [await asyncio.wait_for(reader.readline(), 10)]
    while lines[-1][3:4] == b"-":
        lines.append(await asyncio.wait_for(reader.readline(), 10))
    return lines


ENVELOPE = (b"EHLO t\r\n", b"MAIL FROM:<a@corp.example.com>\r\n", b"RCPT TO:<sms@bridge.test>\r\n", b"DATA\r\n")


def test_python_smtplib_sendmail_with_bare_lf_is_accepted_for_a_2kb_message(tmp_path: Path) -> None:
    """``smtplib.sendmail(from, to, msg.as_bytes())`` sends bare LF line ends; Postfix 3.9 takes them."""

    async def main() -> tuple[str, Any]:
        async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = "cron@corp.example.com", "sms@bridge.test", "nightly"
            padding = "\n".join(f"# log line {i:03d} " + "x" * 40 for i in range(36))
            msg.set_content(f"mobile:{K1}\ntext:backup done\n\n{padding}\n")
            raw = msg.as_bytes()
            assert 2000 <= len(raw) < 4096
            assert b"\r\n" not in raw
            reply = await asyncio.to_thread(smtplib_send, bridge.port, raw)
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            return reply, sim.delivered[0].text

    reply, text = asyncio.run(main())
    assert reply == "ok"
    assert text == "backup done"


def smtplib_send(port: int, raw: bytes) -> str:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        refused = client.sendmail("cron@corp.example.com", ["sms@bridge.test"], raw)
    return "ok" if not refused else str(refused)


@pytest.mark.parametrize("end", [b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r\n", b"\n.\r\r\n"])
async def test_smuggling_sequences_are_refused_whole(tmp_path: Path, end: bytes) -> None:
    """A second message hidden behind a non-standard end of data is never accepted."""
    async with running_simulator() as (sim, url), running_bridge(make_config(tmp_path, url)) as bridge:
        reader, writer, reply = await session(bridge.port, *ENVELOPE)
        assert reply[-1].startswith(b"354")
        smuggled = (
            f"Subject: x\r\n\r\nmobile:{K1}\r\ntext:first".encode()
            + end
            + b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<sms@bridge.test>\r\nDATA\r\n"
            + f"Subject: y\r\n\r\nmobile:{K1}\r\ntext:smuggled\r\n".encode()
            + b"\r\n.\r\n"
        )
        writer.write(smuggled)
        final = await read_reply(reader)
        writer.write(b"QUIT\r\n")
        after = await read_reply(reader)
        writer.close()
        assert bridge.rows() == []
    assert final[-1].startswith(b"550 5.6.0"), final
    assert after[-1].startswith(b"221")  # nothing else was read as a command
    assert sim.delivered == []


async def test_a_listener_may_refuse_bare_lf(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, smtp={"listen": [{"address": "127.0.0.1:0", "bare_lf": "reject"}]})
        async with running_bridge(config) as bridge:
            reader, writer, _ = await session(bridge.port, *ENVELOPE)
            writer.write(f"Subject: x\n\nmobile:{K1}\ntext:lf\r\n.\r\n".encode())
            final = await read_reply(reader)
            writer.close()
            assert bridge.rows() == []
    assert final[-1].startswith(b"550 5.6.0 Bare CR or LF")


async def test_a_route_may_refuse_bare_lf(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, body_route={"bare_lf": "reject"})
        async with running_bridge(config) as bridge:
            reader, writer, _ = await session(bridge.port, *ENVELOPE)
            writer.write(f"Subject: x\n\nmobile:{K1}\ntext:lf\r\n.\r\n".encode())
            final = await read_reply(reader)
            writer.close()
    assert final[-1].startswith(b"550 5.6.0 Bare LF in the message")


def test_line_ends_hold_at_most_two_bytes_and_keep_the_standard_end() -> None:
    ends = LineEnds()
    out = b"".join(ends.feed(bytes([b])) for b in b"a\nb\r\n.\r\n")  # one byte at a time
    assert out == b"a\r\nb\r\n.\r\n"
    assert ends.normalised
    assert not ends.smuggling
    ends = LineEnds()
    assert ends.feed(b"x\n.") == b"x\r\n"  # the dot waits
    assert ends.feed(b"\n") == b"..\r\n"
    assert ends.smuggling


@given(st.lists(st.sampled_from([b"a", b".", b"\r", b"\n", b"\r\n", b".\r\n", b"\n.\n"]), max_size=40), st.data())
def test_line_ends_do_not_depend_on_how_the_input_is_cut(parts: list[bytes], data: st.DataObject) -> None:
    """The same bytes give the same output and the same verdict, however the reads split them."""
    raw = b"".join(parts)
    whole = LineEnds()
    expected = whole.feed(raw) + whole.feed(b"\r\n")
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=6)))
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    chunked = LineEnds()
    got = b"".join(chunked.feed(p) for p in pieces) + chunked.feed(b"\r\n")
    assert got == expected
    assert (chunked.smuggling, chunked.normalised) == (whole.smuggling, whole.normalised)
    assert b"\n" not in got.replace(b"\r\n", b"")  # every LF now has its CR


async def test_oversized_mail_gets_552_5_3_4(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, smtp={"max_message_size": 2048})
        async with running_bridge(config) as bridge:
            reader, writer, _ = await session(bridge.port, *ENVELOPE)
            writer.write(b"Subject: x\r\n\r\n" + (b"y" * 70 + b"\r\n") * 60 + b".\r\n")
            final = await read_reply(reader)
            writer.close()
    assert final[-1].startswith(b"552 5.3.4")


async def test_sessions_open_at_shutdown_are_told_421(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        async with running_bridge(make_config(tmp_path, url, dispatch={"grace": 0.2})) as bridge:
            reader, writer, reply = await session(bridge.port, b"EHLO t\r\n")
            assert reply[-1].startswith(b"250")
        farewell = await asyncio.wait_for(reader.readline(), 10)
        writer.close()
    assert farewell.startswith(b"421 4.3.2")


# -- STARTTLS ------------------------------------------------------------------------


def tls_config(tmp_path: Path, url: str) -> Any:
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return make_config(tmp_path, url, smtp={"tls_cert": str(cert_file), "tls_key": str(key_file)}), ca


async def test_starttls_before_ehlo_and_twice_get_503(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config, ca = tls_config(tmp_path, url)
        async with running_bridge(config) as bridge:
            _, writer, early = await session(bridge.port, b"STARTTLS\r\n")
            writer.close()
            reader, writer, ready = await session(bridge.port, b"EHLO t\r\n", b"STARTTLS\r\n")
            assert ready[-1].startswith(b"220")
            context = ssl.create_default_context()
            ca.configure_trust(context)
            await writer.start_tls(context, server_hostname="127.0.0.1")
            writer.write(b"EHLO t\r\n")
            await read_reply(reader)
            writer.write(b"STARTTLS\r\n")
            again = await read_reply(reader)
            writer.close()
    assert early[-1].startswith(b"503 5.5.1")
    assert again[-1].startswith(b"503 5.5.1")


async def test_a_fuzz_over_starttls_leaves_no_traceback(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Garbage instead of a TLS handshake, a handshake cut short, commands in the wrong order:
    each is one quiet line at most, never an ERROR with a traceback."""
    rng = random.Random(5150)  # noqa: S311  (fuzz input, not a secret)
    caplog.set_level(logging.INFO)
    async with running_simulator() as (_, url):
        config, _ = tls_config(tmp_path, url)
        async with running_bridge(config) as bridge:
            for round_ in range(40):
                reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
                await reader.readline()
                choice = round_ % 4
                if choice == 0:  # garbage handshake
                    writer.write(b"EHLO f\r\nSTARTTLS\r\n" + rng.randbytes(rng.randint(1, 600)))
                elif choice == 1:  # a ClientHello cut short
                    writer.write(
                        b"EHLO f\r\nSTARTTLS\r\n\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(40)
                    )
                elif choice == 2:  # random commands and bytes
                    writer.write(
                        rng.choice([b"STARTTLS\r\n", b"AUTH PLAIN\r\n", b"DATA\r\n", b"\r\n"])
                        + rng.randbytes(50)
                        + b"\r\n"
                    )
                else:  # STARTTLS twice in a row before the handshake
                    writer.write(b"EHLO f\r\nSTARTTLS\r\nSTARTTLS\r\n")
                await writer.drain()
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await asyncio.wait_for(reader.read(4096), 2)
                writer.close()
            # the bridge still serves a proper client afterwards
            reader, writer, reply = await session(bridge.port, b"EHLO ok\r\n")
            writer.close()
            assert reply[-1].startswith(b"250")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]
    assert any("TLS handshake failed" in r.getMessage() for r in caplog.records)


async def test_scrypt_runs_off_the_event_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bridge.core.access import hash_password
    from bridge.ingress.smtp import handler as smtp_module

    threads: list[str] = []
    real = smtp_module.verify_password

    def recording(stored: str, given: bytes) -> bool:
        threads.append(threading.current_thread().name)
        return real(stored, given)

    monkeypatch.setattr(smtp_module, "verify_password", recording)
    clients = {"scanner": {"user": "scanner", "password": hash_password("right-one"), "networks": ["127.0.0.0/8"]}}
    async with running_simulator() as (_, url):
        smtp = {"listen": [{"address": "127.0.0.1:0", "plaintext_auth": True}]}
        async with running_bridge(make_config(tmp_path, url, smtp=smtp, extra={"clients": clients})) as bridge:
            import aiosmtplib

            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.port, start_tls=False, timeout=10)
            await client.connect()
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await client.login("scanner", "wrong")
            await client.quit()
    assert threads
    assert all(name != "MainThread" for name in threads)
