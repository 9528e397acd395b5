"""Who may send, as whom, at what cost: the relay closed, limits kept, secrets kept."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
import yaml

from bridge.config import load_text
from bridge.core.access import hash_password, verify_password
from tests.helpers import (
    SIM_PASSWORD,
    config_data,
    eventually,
    mail,
    make_config,
    run_cli,
    running_bridge,
    running_simulator,
    running_sink,
    sim_accounts,
    submit,
)

AUTH_SECRET = "auth-canary-8093"
PLAIN = [{"address": "127.0.0.1:0", "plaintext_auth": True}]


def clients(**scanner: Any) -> dict[str, Any]:
    """Loopback is *not* trusted here: 127.0.0.1 plays the outside world."""
    return {
        "lan": {"networks": ["10.0.0.0/8"]},
        "scanner": {"user": "scanner", "password": hash_password(AUTH_SECRET)} | scanner,
    }


def test_password_hashes_verify_and_plain_secrets_compare() -> None:
    stored = hash_password("s3cret-pass")
    assert stored.startswith("scrypt$")
    assert verify_password(stored, b"s3cret-pass")
    assert not verify_password(stored, b"s3cret-pasS")
    assert verify_password("from-env", b"from-env")
    assert not verify_password("scrypt$broken", b"x")


def test_hash_password_command_reads_standard_input() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "hash-password"],
        input="long-enough-pw\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0
    assert verify_password(result.stdout.strip(), b"long-enough-pw")
    assert "long-enough-pw" not in result.stdout


# -- the open-relay matrix, with real clients ---------------------------------------


async def test_no_auth_from_outside_is_refused_and_nothing_is_queued(tmp_path: Path) -> None:
    async with (
        running_simulator() as (sim, url),
        running_bridge(make_config(tmp_path, url, extra={"clients": clients()})) as bridge,
    ):
        code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:relay?"))
        assert (code, text.startswith("5.7.0")) == (530, True)
        assert bridge.rows() == []
    assert sim.requests == []


async def test_auth_before_tls_is_not_offered_and_refused(tmp_path: Path) -> None:
    async with (
        running_simulator() as (_, url),
        running_bridge(make_config(tmp_path, url, extra={"clients": clients()})) as bridge,
    ):
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.port, start_tls=False, timeout=10)
        await client.connect()
        await client.ehlo()
        assert not client.supports_extension("auth")
        response = await client.execute_command(b"AUTH", b"PLAIN", b"AHNjYW5uZXIAYXV0aC1jYW5hcnktODA5Mw==")
        assert response.code == 538
        await client.quit()
        assert bridge.rows() == []


async def test_a_forged_sender_is_refused_even_when_authenticated(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = make_config(
            tmp_path, url, smtp={"listen": PLAIN}, extra={"clients": clients(senders=["@corp.example.com"])}
        )
        async with running_bridge(config) as bridge:
            auth = {"username": "scanner", "password": AUTH_SECRET, "start_tls": False}
            forged = await submit(bridge.port, mail("mobile:96597119440\ntext:x", mail_from="ceo@evil.example"), **auth)
            assert forged[0] == 550
            assert forged[1].startswith("5.7.1")
            good = await submit(
                bridge.port, mail("mobile:96597119440\ntext:ok", mail_from="scan@corp.example.com"), **auth
            )
            assert good[0] == 250
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            assert len(bridge.rows()) == 1


async def test_a_route_the_client_may_not_use_is_refused_at_rcpt(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, smtp={"listen": PLAIN}, extra={"clients": clients(routes=["alerts"])})
        async with running_bridge(config) as bridge:
            auth = {"username": "scanner", "password": AUTH_SECRET, "start_tls": False}
            code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:x"), **auth)
            assert (code, text.startswith("5.7.1")) == (550, True)
            code, _ = await submit(bridge.port, mail("alert", to="96597119440@alerts.bridge.test"), **auth)
            assert code == 250


async def test_swaks_from_outside_is_refused(tmp_path: Path) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed (.ci/run installs it)")
    async with (
        running_simulator() as (_, url),
        running_bridge(make_config(tmp_path, url, extra={"clients": clients()})) as bridge,
    ):
        proc = await asyncio.create_subprocess_exec(
            swaks, "--server", f"127.0.0.1:{bridge.port}", "--from", "x@evil.example", "--to", "sms@bridge.test",
            "--body", "mobile:96597119440\ntext:relay",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 60)
        assert b"530 5.7.0 Authentication required" in out
        assert bridge.rows() == []


async def test_smtp_smuggling_with_bare_lf_dot_is_one_refused_message(tmp_path: Path) -> None:
    """``\\n.\\n`` does not end DATA; the whole thing is one message with bare LFs: refused, nothing queued."""
    async with (
        running_simulator() as (sim, url),
        running_bridge(make_config(tmp_path, url)) as bridge,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        replies: list[bytes] = [await reader.readline()]
        for line in [
            b"EHLO t\r\n",
            b"MAIL FROM:<a@corp.example.com>\r\n",
            b"RCPT TO:<sms@bridge.test>\r\n",
            b"DATA\r\n",
        ]:
            writer.write(line)
            reply = await reader.readline()
            while reply[3:4] == b"-":
                reply = await reader.readline()
            replies.append(reply)
        writer.write(
            b"Subject: x\r\n\r\nmobile:96597119440\r\ntext:first\n.\nMAIL FROM:<evil@evil.example>\r\n"
            b"RCPT TO:<sms@bridge.test>\r\nDATA\r\n\r\nmobile:96566074414\r\ntext:smuggled\r\n.\r\n"
        )
        final = await asyncio.wait_for(reader.readline(), 10)
        writer.write(b"QUIT\r\n")
        writer.close()
        assert final.startswith(b"550 5.6.0")
        assert bridge.rows() == []
    assert sim.requests == []


async def test_failed_auth_is_slowed_then_locked_out(tmp_path: Path) -> None:
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, smtp={"listen": PLAIN, "auth_failures": 3}, extra={"clients": clients()})
        async with running_bridge(config) as bridge:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=bridge.port, start_tls=False, timeout=30)
            await client.connect()
            loop = asyncio.get_running_loop()
            started = loop.time()
            await client.ehlo()
            for _ in range(3):  # one mechanism, so one failure per attempt
                with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                    await client.auth_plain("scanner", "wrong")
            # after each failure the session pauses a second longer before it reads the next command
            assert loop.time() - started >= 1 + 2 - 0.5
            with pytest.raises(aiosmtplib.SMTPResponseException) as caught:
                await client.auth_plain("scanner", AUTH_SECRET)  # locked: even the right password
            assert caught.value.code == 421
            client.close()


# -- limits --------------------------------------------------------------------------


async def test_limits_answer_451_or_550_and_survive_a_restart(tmp_path: Path) -> None:
    limits = {"messages_per_minute": 2, "points_per_day": 3}
    local = {"local": {"networks": ["127.0.0.0/8"], "limits": limits}}
    async with running_simulator() as (_, url):
        config = make_config(tmp_path, url, extra={"clients": local})
        async with running_bridge(config) as bridge:
            for i in range(2):
                code, _ = await submit(bridge.port, mail(f"mobile:9655000000{i}\ntext:ok"))
                assert code == 250
            code, text = await submit(bridge.port, mail("mobile:96550000009\ntext:too many"))
            assert code == 451
            assert "client local has reached its limit of 2 messages per minute" in text
        async with running_bridge(config) as bridge:  # restarted: the counts are still there
            code, text = await submit(bridge.port, mail("mobile:96550000009\ntext:still too many"))
            assert code == 451
            assert len(bridge.rows()) == 2
        day = {"local": {"networks": ["127.0.0.0/8"], "limits": {"points_per_day": 3}}}
        async with running_bridge(make_config(tmp_path, url, extra={"clients": day})) as bridge:
            code, _ = await submit(bridge.port, mail("mobile:96550000005\ntext:third point"))
            assert code == 250
            code, text = await submit(bridge.port, mail("mobile:96550000006\ntext:fourth point"))
            assert code == 550
            assert "3 points per day" in text


async def test_numbers_per_message_and_destinations_are_enforced(tmp_path: Path) -> None:
    local = {"local": {"networks": ["127.0.0.0/8"], "limits": {"numbers_per_message": 2, "destinations": ["9655"]}}}
    async with (
        running_simulator() as (_, url),
        running_bridge(make_config(tmp_path, url, extra={"clients": local})) as bridge,
    ):
        code, text = await submit(bridge.port, mail("mobile:96550000001,96550000002,96550000003\ntext:x"))
        assert code == 550
        assert "at most 2" in text
        code, text = await submit(bridge.port, mail("mobile:96597119440\ntext:x"))
        assert code == 550
        assert "may send only to 9655" in text
        code, _ = await submit(bridge.port, mail("mobile:96550000001\ntext:x"))
        assert code == 250


async def test_low_balance_is_warned_and_an_empty_account_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bridge")
    async with running_simulator(accounts=sim_accounts(balance=2)) as (sim, url), running_sink() as (sink, sink_port):
        config = make_config(
            tmp_path,
            url,
            sink_port=sink_port,
            account={"balance_warning": 1.5, "refuse_when_empty": True},
            extra={
                "notify": {"smarthost": f"127.0.0.1:{sink_port}", "tls": "none", "operator": "ops@corp.example.com"}
            },
        )
        async with running_bridge(config) as bridge:
            for i in range(2):
                code, _ = await submit(bridge.port, mail(f"mobile:9655000000{i}\ntext:x"))
                assert code == 250
                await eventually(lambda i=i: len(sim.delivered) == i + 1, "the SMS")
            code, text = await submit(bridge.port, mail("mobile:96550000009\ntext:no money"))
            assert code == 451
            assert "cannot pay" in text
            await asyncio.wait_for(sink.arrived.wait(), 20)
    assert any("low balance account=kwt: 1 points left" in r.getMessage() for r in caplog.records)
    assert sink.messages[0].rcpt_tos == ["ops@corp.example.com"]


# -- the secrets canary ----------------------------------------------------------------


async def test_a_daemon_that_cannot_start_prints_no_secret(tmp_path: Path) -> None:
    """A start-up failure (the outbox cannot be created) is reported in words, without the config's secrets."""
    data = config_data(tmp_path, "http://127.0.0.1:9", extra={"clients": clients()})
    data["queue"]["path"] = "/proc/no-such-place/outbox.sqlite3"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    code, out = await run_cli("serve", "-c", str(path))
    assert code == 1
    assert "cannot open the outbox" in out
    assert SIM_PASSWORD not in out
    assert AUTH_SECRET not in out


async def test_secret_values_appear_nowhere(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The account password (v0.99: it travels in the URL), an AUTH secret and a body password,
    through SMTP, AUTH, a provider error, a failure notice, queue show, check --json and the database."""
    caplog.set_level(logging.DEBUG)
    body_secret = "body-canary-4417"
    async with running_simulator() as (sim, url), running_sink() as (sink, sink_port):
        data = config_data(
            tmp_path,
            url,
            sink_port=sink_port,
            account={"api": "0.99"},
            smtp={"listen": PLAIN},
            extra={"clients": clients()},
        )
        data["routes"]["legacy"] = {
            "format": "kwtsms",
            "account": "kwt",
            "recipients": ["legacy@bridge.test"],
            "body_credentials": "passthrough",
        }
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(data))
        config = load_text(path.read_text(), env={})
        auth = {"username": "scanner", "password": AUTH_SECRET, "start_tls": False}
        async with running_bridge(config) as bridge:
            code, _ = await submit(bridge.port, mail("mobile:96597119440\ntext:fine"), **auth)
            assert code == 250
            bad_login = f"username:corp\npassword:{body_secret}\nmobile:96566074414\ntext:wrong password"
            code, _ = await submit(
                bridge.port, mail(bad_login, to="legacy@bridge.test", mail_from="erp@corp.example.com"), **auth
            )
            assert code == 250
            await eventually(
                lambda: len([r for r in bridge.rows() if r.delivery.state in ("sent", "failed")]) == 2, "both outcomes"
            )
            await eventually(lambda: bool(sink.messages), "the failure notice")
            failed = next(r for r in bridge.rows() if r.delivery.state == "failed")
            assert failed.delivery.last_code == "ERR003"
            show = await run_cli("queue", "-c", str(path), "show", failed.id)
    eml = tmp_path / "with-password.eml"
    eml.write_bytes(bytes(mail(f"username:u\npassword:{body_secret}\nmobile:96597119440\ntext:x")))
    check = await run_cli("check", "-c", str(path), str(eml), "--json", "--rcpt", "legacy@bridge.test")
    assert json.loads(check[1])["ok"] is True
    places = {
        "logs": caplog.text,
        "queue show": show[1],
        "check --json": check[1],
        "notices": "".join(m.original_content.decode("utf-8", "replace") for m in sink.messages),
        "database": Path(config.queue.path).read_bytes().decode("latin-1"),
        "simulator records": json.dumps(sim.requests),
    }
    for secret in (SIM_PASSWORD, AUTH_SECRET, body_secret):
        found = [where for where, text in places.items() if secret in text]
        assert found == [], f"{secret} found in {found}"


async def test_auth_over_starttls_with_a_real_certificate(tmp_path: Path) -> None:
    """The production path: STARTTLS with a certificate, then AUTH, then a mail that becomes an SMS."""
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "bridge.test")
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    async with running_simulator() as (sim, url):
        smtp = {"tls_cert": str(cert_file), "tls_key": str(key_file)}
        async with running_bridge(make_config(tmp_path, url, smtp=smtp, extra={"clients": clients()})) as bridge:
            client = aiosmtplib.SMTP(
                hostname="127.0.0.1", port=bridge.port, start_tls=False, tls_context=client_context, timeout=10
            )
            await client.connect()
            await client.ehlo()
            assert client.supports_extension("starttls")
            assert not client.supports_extension("auth")
            await client.starttls()
            await client.ehlo()  # the extensions are offered anew over TLS
            assert client.supports_extension("auth")
            await client.login("scanner", AUTH_SECRET)
            errors, response = await client.send_message(mail("mobile:96597119440\ntext:over TLS"))
            assert errors == {}
            assert response.startswith("2.0.0 queued as")
            await client.quit()
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
    assert sim.delivered[0].text == "over TLS"
