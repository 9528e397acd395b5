"""Cron and other local senders: cron's own mail through ``sendmail``, local users mapped to
an alias, and texts with angle brackets that the bridge and the provider must judge alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bridge.config import load_text
from bridge.core.formats import alerts
from bridge.core.mail import parse_mail
from bridge.simulator import HTML_TAG
from tests.helpers import SIM_PASSWORD, eventually, free_port, mail, run_cli, running_bridge, running_simulator, submit
from tests.test_sendmail import sendmail, write_config

#: what Debian's cron (cron 3.0pl1) pipes into ``/usr/sbin/sendmail -FCronDaemon -i -B8BITMIME -oem root``
DEBIAN_CRON_MAIL = (
    "From: root (Cron Daemon)\n"
    "To: root\n"
    "Subject: Cron <root@db1> /usr/local/bin/backup.sh\n"
    "MIME-Version: 1.0\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Content-Transfer-Encoding: 8bit\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "X-Cron-Env: <PATH=/usr/bin:/bin>\n"
    "X-Cron-Env: <LOGNAME=root>\n"
    "\n"
    "\n"
    "pg_dump: error: connection to server failed: No such file or directory\n"
    "backup.sh: pg_dump failed, exit 1\n"
)

#: what cronie (Fedora, RHEL) pipes into ``/usr/sbin/sendmail -FCronDaemon -i -odi -oem -oi -t -f root``
CRONIE_MAIL = (
    'From: "(Cron Daemon)" <root@web2>\n'
    "To: root\n"
    "Subject: Cron <root@web2> cd / && run-parts --report /etc/cron.daily\n"
    "Content-Type: text/plain; charset=UTF-8\n"
    "Auto-Submitted: auto-generated\n"
    "Precedence: bulk\n"
    "X-Cron-Env: <XDG_SESSION_ID=42>\n"
    "X-Cron-Env: <LANG=en_US.UTF-8>\n"
    "X-Cron-Env: <SHELL=/bin/sh>\n"
    "X-Cron-Env: <HOME=/root>\n"
    "X-Cron-Env: <LOGNAME=root>\n"
    "X-Cron-Env: <USER=root>\n"
    "\n"
    "/etc/cron.daily/logrotate:\n"
    'error: skipping "/var/log/app.log" because parent directory has insecure permissions\n'
)

ONCALL = ["96566074414", "96597119440"]


def cron_config(tmp_path: Path, url: str, port: int) -> Path:
    path = write_config(tmp_path, url, port)
    data = yaml.safe_load(path.read_text())
    data["local_users"] = {"root": "oncall"}
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_cron_profile_reads_host_command_and_output() -> None:
    found = alerts.read(parse_mail(DEBIAN_CRON_MAIL.replace("\n", "\r\n").encode(), rcpt_tos=["root"]))
    assert found.profile == "cron"
    assert found.text() == (
        "CRON db1 backup.sh: pg_dump: error: connection to server failed: No such file or directory"
        " | backup.sh: pg_dump failed, exit 1"
    )
    cronie = alerts.read(parse_mail(CRONIE_MAIL.encode(), rcpt_tos=["root"]))
    assert cronie.text().startswith("CRON web2 run-parts cron.daily: /etc/cron.daily/logrotate: | error: skipping")


def test_cron_mail_is_known_by_its_headers_when_the_subject_was_changed() -> None:
    raw = DEBIAN_CRON_MAIL.replace("Subject: Cron <root@db1> /usr/local/bin/backup.sh", "Subject: nightly backup")
    found = alerts.read(parse_mail(raw.encode(), rcpt_tos=["root"]))
    assert found.profile == "cron"
    assert found.text().startswith("CRON nightly backup: pg_dump: error")


@pytest.mark.parametrize(
    ("mail_text", "args", "expected"),
    [
        (DEBIAN_CRON_MAIL, ("-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root"), "CRON db1 backup.sh: pg_dump: error"),
        (CRONIE_MAIL, ("-FCronDaemon", "-i", "-odi", "-oem", "-oi", "-t", "-f", "root"), "CRON web2 run-parts"),
    ],
    ids=["debian", "cronie"],
)
async def test_cron_mail_to_root_through_sendmail_reaches_the_oncall_alias(
    tmp_path: Path, mail_text: str, args: tuple[str, ...], expected: str
) -> None:
    port = free_port()
    async with running_simulator() as (sim, url):
        path = cron_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})) as bridge:
            code, out = await sendmail(path, *args, stdin=mail_text.encode())
            assert code == 0, out
            await eventually(lambda: len(sim.delivered) == 1, "the SMS")
            (row,) = bridge.rows()
            await eventually(lambda: bridge.rows()[0].delivery.state == "sent", "sent")
    assert sorted(sim.delivered[0].numbers) == ONCALL
    assert sim.delivered[0].text.startswith(expected)
    assert "<" not in sim.delivered[0].text
    assert row.origin.rcpts == ("root",)


async def test_a_local_user_with_no_mapping_is_refused_naming_local_users(tmp_path: Path) -> None:
    port = free_port()
    async with running_simulator() as (_, url):
        path = cron_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})):
            code, out = await sendmail(path, "-i", "www-data", stdin=DEBIAN_CRON_MAIL.encode())
    assert code == 65
    assert "www-data" in out


#: texts a provider may take for HTML: the bridge must clean them (or refuse them) before it says 250
TRICKY = [
    "Cron <root@db1> /usr/local/bin/backup.sh",
    "From Ali <ali@corp.example> about the invoice",
    "<db01:9100> is down",
    "load < high and mem > 90",
    "<b>bold</b> and x<3 y>2",
    "< p >spaced tag",
]


async def test_check_send_smtp_and_the_simulator_agree_on_angle_brackets(tmp_path: Path) -> None:
    """Each tricky text: ``check`` says it would send a cleaned text, SMTP answers 250, ``send``
    succeeds, and the simulator (which reads KwtSMS's rule independently) accepts the very same text."""
    port = free_port()
    async with running_simulator() as (sim, url):
        path = write_config(tmp_path, url, port)
        async with running_bridge(load_text(path.read_text(), env={})) as bridge:
            for i, text in enumerate(TRICKY):
                number = f"9659711{i:04d}"
                eml = tmp_path / f"tricky{i}.eml"
                eml.write_bytes(mail(f"mobile:{number}\ntext:{text}").as_bytes())
                code, out = await run_cli("check", "-c", str(path), str(eml), "--json")
                assert code == 0, out
                verdict = json.loads(out[out.index("{") :])
                checked = verdict["sms"][0]["text"]
                assert not HTML_TAG.search(checked), checked  # the simulator's own rule, read from KwtSMS's
                assert any("HTML" in w for w in verdict["warnings"]), verdict

                code, reply = await submit(bridge.port, mail(f"mobile:{number}\ntext:{text}"))
                assert code == 250, reply
                ident = reply.split()[-1]
                await eventually(lambda ident=ident: bridge.rows(ident)[0].delivery.state != "queued", "an attempt")
                await eventually(lambda ident=ident: bridge.rows(ident)[0].delivery.state == "sent", "sent")
                assert sim.delivered[-1].text == checked

                code, out = await run_cli(
                    "send", "-c", str(path), "--account", "kwt", "--to", f"9656607{i:04d}", "--text", text
                )
                assert code == 0, out
                assert "sent:" in out
                assert sim.delivered[-1].text == checked
    assert SIM_PASSWORD not in out


def test_the_readme_cron_recipe_is_what_the_bridge_does() -> None:
    """The documented recipe: its config maps root to an alias, and its SMS line is what the
    cron profile writes for Debian's cron mail."""
    readme = (Path(__file__).parent.parent / "docs" / "integrations.md").read_text(encoding="utf-8")
    recipe = readme[readme.index("**Cron.**") : readme.index("**LMTP for Postfix.**")]
    snippet = yaml.safe_load(recipe.split("```yaml\n", 1)[1].split("```", 1)[0])
    assert snippet["local_users"] == {"root": "oncall"}
    assert "oncall" in snippet["aliases"]
    # with an account beside it, the recipe is a config the bridge loads
    account = {"kwt": {"provider": "kwtsms-http", "username": "u", "password": "p", "sender": "KWT-SMS"}}
    loaded = load_text(yaml.safe_dump({**snippet, "accounts": account}))
    assert loaded.local_users == {"root": "oncall"}
    sms_line = recipe.split("```\nCRON ", 1)[1].split("\n", 1)[0]
    found = alerts.read(parse_mail(DEBIAN_CRON_MAIL.replace("\n", "\r\n").encode(), rcpt_tos=["root"]))
    assert found.text() == "CRON " + sms_line
