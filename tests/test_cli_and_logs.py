"""The command line as an administrator uses it, and log lines for journald and for people."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bridge.app.logs import HumanFormatter, JournalFormatter
from bridge.ingress.smtp import peer_text

CONFIG = """
accounts:
  kwt: {provider: kwtsms-http, username: corp, password: "${KWTSMS_PASSWORD}", sender: KWT-SMS}
routes:
  body: {format: kwtsms, account: kwt, recipients: [sms@bridge.test]}
queue: {path: QUEUE}
"""


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("KWTSMS_PASSWORD", "SMS_BRIDGE_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean | (env or {}),
        cwd=cwd,
    )


def production_config(tmp_path: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("QUEUE", str(tmp_path / "outbox.sqlite3")))
    return path


def test_c_is_taken_before_or_after_the_command(tmp_path: Path) -> None:
    path = production_config(tmp_path)
    env = {"KWTSMS_PASSWORD": "x"}
    before = cli("-c", str(path), "check-config", env=env)
    after = cli("check-config", "-c", str(path), env=env)
    nested = cli("queue", "list", "-c", str(path), env=env)
    assert (before.returncode, after.returncode) == (0, 0), before.stderr + after.stderr
    assert nested.returncode == 1  # no outbox yet: said plainly, not a usage error
    assert "no outbox at" in nested.stderr


def test_the_config_comes_from_sms_bridge_config(tmp_path: Path) -> None:
    path = production_config(tmp_path)
    result = cli("check-config", env={"SMS_BRIDGE_CONFIG": str(path), "KWTSMS_PASSWORD": "x"})
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout


def test_commands_that_need_no_secret_only_warn_of_a_missing_one(tmp_path: Path) -> None:
    path = production_config(tmp_path)
    (tmp_path / "outbox.sqlite3").touch()
    queue = cli("queue", "list", "-c", str(path), "--env-file", "")
    strict = cli("check-config", "-c", str(path), "--env-file", "")
    relaxed = cli("check-config", "--no-env", "-c", str(path), "--env-file", "")
    assert queue.returncode == 0, queue.stderr
    assert "warning: accounts.kwt.password: environment variable KWTSMS_PASSWORD is not set" in queue.stderr
    assert strict.returncode == 78
    assert "accounts.kwt.password: environment variable KWTSMS_PASSWORD is not set" in strict.stderr
    assert relaxed.returncode == 0, relaxed.stderr


def test_the_env_file_gives_cli_commands_the_services_secrets(tmp_path: Path) -> None:
    path = production_config(tmp_path)
    env_file = tmp_path / "env"
    env_file.write_text('# secrets for sms-bridge\nexport KWTSMS_PASSWORD="env-file-canary-31"\n; a comment\n')
    result = cli("check-config", "-c", str(path), "--env-file", str(env_file))
    assert result.returncode == 0, result.stderr
    assert "env-file-canary-31" not in result.stdout + result.stderr


def record(level: int, message: str) -> logging.LogRecord:
    return logging.LogRecord("bridge.dispatch", level, __file__, 1, message, None, None)


def test_journald_lines_carry_their_syslog_priority() -> None:
    fmt = JournalFormatter("%(name)s: %(message)s")
    assert fmt.format(record(logging.ERROR, "boom")) == "<3>bridge.dispatch: boom"
    assert fmt.format(record(logging.WARNING, "retry id=1")) == "<4>bridge.dispatch: retry id=1"
    assert fmt.format(record(logging.INFO, "sent id=1")) == "<6>bridge.dispatch: sent id=1"
    assert fmt.format(record(logging.DEBUG, "x")) == "<7>bridge.dispatch: x"
    assert fmt.format(record(logging.WARNING, "two\nlines")) == "<4>bridge.dispatch: two\n<4>lines"


def test_other_lines_start_with_an_iso_timestamp() -> None:
    line = HumanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s").format(record(logging.INFO, "hi"))
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d INFO bridge\.dispatch: hi", line), line


def test_the_journal_format_is_chosen_when_stderr_is_the_journal_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """systemd sets JOURNAL_STREAM to the device and inode of the stream it gave as stderr."""
    from bridge.app import logs

    with (tmp_path / "stderr.txt").open("w") as err, (tmp_path / "other.txt").open("w") as other:
        monkeypatch.setattr(sys, "stderr", err)
        st = os.fstat(err.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        assert logs.under_journald()
        assert isinstance(logs.formatter(logs.under_journald()), JournalFormatter)
        st = os.fstat(other.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")  # stderr redirected elsewhere
        assert not logs.under_journald()
        monkeypatch.delenv("JOURNAL_STREAM")
        assert not logs.under_journald()


def test_peers_print_as_host_and_port() -> None:
    assert peer_text(("127.0.0.1", 40624)) == "127.0.0.1:40624"
    assert peer_text(("::1", 25, 0, 0)) == "[::1]:25"
