"""Config loading: every problem at once, with its path, no secret echoed, exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import load_text
from bridge.errors import ConfigError

GOOD = """
accounts:
  kwt: {provider: kwtsms-http, username: u, password: "${PW}", sender: KWT-SMS}
routes:
  body: {format: kwtsms, account: kwt, recipients: [sms@b.test]}
"""

BAD = """
smtp:
  listen: "nohost"
  colour: blue
accounts:
  kwt:
    provider: kwtsms-carrier-pigeon
    password: TOPSECRET-canary-99
    max_pages: 9
  ot:
    provider: opentech-http
    username: u
    password: "${MISSING_PW}"
routes:
  body: {format: kwtsms, account: nope, recipients: [not-an-address]}
  alerts: {format: address, account: ot, domain: a.test, template: "{subject} {hostname}"}
"""


def test_env_substitution_fills_secrets_and_keeps_them_out_of_repr() -> None:
    config = load_text(GOOD, env={"PW": "hunter2-canary"})
    password = config.accounts["kwt"].password
    assert password is not None
    assert password.get_secret_value() == "hunter2-canary"
    assert "hunter2-canary" not in repr(config)
    assert "hunter2-canary" not in str(config)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    with pytest.raises(ConfigError) as caught:
        load_text(BAD, env={})
    paths = {p.field for p in caught.value.problems}
    assert {
        "smtp.listen.0.address",
        "smtp.colour",
        "accounts.kwt.provider",
        "accounts.kwt.max_pages",
        "accounts.ot.password",
        "routes.body.recipients",
        "routes.alerts.template",
    } <= paths
    text = caught.value.describe()
    assert "smtp.colour: unknown key" in text
    assert "environment variable MISSING_PW is not set" in text
    assert "TOPSECRET-canary-99" not in text


def test_cross_checks_run_when_the_shape_is_right() -> None:
    bad = GOOD.replace("account: kwt,", "account: nope,")
    with pytest.raises(ConfigError) as caught:
        load_text(bad, env={"PW": "x"})
    assert [p.field for p in caught.value.problems] == ["routes.body.account"]


def test_yaml_syntax_errors_give_a_line() -> None:
    with pytest.raises(ConfigError, match="line 3"):
        load_text("a: 1\nb: [\n", env={})


def test_ipv6_listeners_are_accepted() -> None:
    config = load_text(GOOD + "smtp: {listen: ['[::1]:2525', '127.0.0.1:2525']}\n", env={"PW": "x"})
    assert [listener.address for listener in config.smtp.listen] == ["[::1]:2525", "127.0.0.1:2525"]


def test_the_example_config_is_valid() -> None:
    from bridge.config import load

    load(Path(__file__).parent.parent / "config.example.yaml", env={})


def test_check_config_exits_78_listing_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD)
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78
    assert "accounts.kwt.max_pages" in result.stderr
    assert "routes.alerts.template" in result.stderr
    assert "Traceback" not in result.stderr
    assert "TOPSECRET-canary-99" not in result.stderr + result.stdout
