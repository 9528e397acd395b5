"""Config loading: every problem at once, with its path, no secret echoed, exit 78."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

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


def problems_of(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_text(text, env=env or {})
    return [f"{p.field}: {p.message}" for p in caught.value.problems]


def test_schema_and_cross_reference_problems_come_in_one_round() -> None:
    """A bad provider, an unknown key, a dangling account reference, a bad alias number and a
    client naming a route that does not exist: all at once, with no false companion."""
    found = problems_of(
        """
accounts:
  demo: {provider: kwtsms-htp, username: u, password: p}
  kwt: {provider: kwtsms-http, username: u, password: p, colour: blue}
routes:
  body: {format: kwtsms, recipients: [s@b.test], account: demo}
  other: {format: kwtsms, recipients: [t@b.test], account: nosuch}
aliases: {oncall: ["123"]}
clients: {x: {networks: [10.0.0.0/8], routes: [nope]}}
"""
    )
    assert "accounts.demo.provider: must be one of kwtsms-http, opentech-http, kwtsms-smtp" in found
    assert "accounts.kwt.colour: unknown key" in found
    assert any(p.startswith("routes.other.account: no account named 'nosuch'") for p in found)
    assert any(p.startswith("aliases.oncall.0:") for p in found)
    assert "clients.x.routes: no route named 'nope'" in found
    assert not any("'demo'" in p for p in found)  # demo exists, only its provider is wrong
    assert len(found) == 5, found


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        (
            '{prefix: "965", acount: kwt}',
            ["routes.body.account.0.account: is required", "routes.body.account.0.acount: unknown key"],
        ),
        (
            '{prefix: "965", region: KW, account: kwt}',
            ["routes.body.account.0: give exactly one of prefix, region or default: true"],
        ),
        ("{account: kwt}", ["routes.body.account.0: give exactly one of prefix, region or default: true"]),
        (
            '{prefix: "+965", account: kwt}',
            ["routes.body.account.0: prefix: digits only, country code first (965, 9655)"],
        ),
        ("{region: XX, account: kwt}", ["routes.body.account.0: region: 'XX' is not a region code (such as KW or LB)"]),
    ],
    ids=["misspelled-key", "prefix-and-region", "no-selector", "plus-prefix", "unknown-region"],
)
def test_a_routing_rule_error_names_the_path_as_written(rule: str, expected: list[str]) -> None:
    """``routes.<name>.account`` is a name or a list of rules: an error names the file's path,
    never the schema's union members (``tuple[function-after[...]]``, ``str``)."""
    found = problems_of(
        "accounts: {kwt: {provider: kwtsms-http, username: u, password: p}}\n"
        f"routes:\n  body: {{format: kwtsms, recipients: [s@b.test], account: [{rule}]}}\n"
    )
    assert found == expected
    assert not any("[" in p.split(":")[0] or ".str" in p for p in found)


def _unions(model: type, seen: set[type] | None = None) -> set[str]:
    """``Model.field`` for every field of the schema (from ``Config`` down) whose type is a
    union of two or more non-None types."""
    import types
    import typing

    from pydantic import BaseModel

    seen = seen if seen is not None else set()
    found: set[str] = set()
    if model in seen:
        return found
    seen.add(model)

    def walk(owner: str, hint: Any) -> None:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin is typing.Annotated:
            walk(owner, args[0])
            return
        if origin in (typing.Union, types.UnionType):
            members = [a for a in args if a is not type(None)]
            if len(members) > 1:
                found.add(owner)
            for member in members:
                walk(owner, member)
            return
        for arg in args:
            walk(owner, arg)
        if isinstance(hint, type) and issubclass(hint, BaseModel):
            found.update(_unions(hint, seen))

    for name, info in model.model_fields.items():  # type: ignore[attr-defined]
        walk(
            f"{model.__name__}.{name}",
            info.annotation if not info.metadata else typing.Annotated[info.annotation, *info.metadata],
        )
    return found


def test_every_union_in_the_schema_reports_one_branch() -> None:
    """The schema's unions (an account by provider; a route's account by name or rules): a
    wrong value in each is named at the file's path, with no error from the other branch. A
    new union fails the first assertion until it gets a case here."""
    from bridge.config import Config

    assert _unions(Config) == {"Config.accounts", "RouteConfig.account"}
    found = problems_of(
        "accounts: {kwt: {provider: kwtsms-http, username: u, password: p, uid: '7'}}\n"
        "routes:\n  body: {format: kwtsms, recipients: [s@b.test], account: 5}\n"
    )
    assert "accounts.kwt.uid: belongs to opentech-http accounts, not this one's provider; remove it" in found
    assert "routes.body.account: must be a valid string" in found
    assert len(found) == 2, found


SIMULATED = """
accounts:
  demo: {provider: kwtsms-http, url: "http://127.0.0.1:8800/API/", username: demo, password: "${PW:-demo-password}"}
routes:
  body: {format: kwtsms, account: demo, recipients: [sms@b.test]}
queue: {path: /var/lib/sms-bridge/outbox.sqlite3}
"""


def test_a_password_fallback_is_a_warning_unless_the_account_is_on_the_bridges_simulator() -> None:
    from bridge.config import warnings

    on_sim = load_text(SIMULATED + "simulator: {enabled: true}\n", env={})
    assert not [w for w in warnings(on_sim) if "fallback" in w]
    real = load_text(SIMULATED.replace("http://127.0.0.1:8800/API/", "https://www.kwtsms.com/API/"), env={})
    (said,) = [w for w in warnings(real) if "fallback" in w]
    assert said.startswith("accounts.demo.password: ${PW} is not set")
    assert "demo-password" not in said
    assert not [w for w in warnings(load_text(SIMULATED, env={"PW": "real"})) if "fallback" in w]


def test_a_url_on_the_simulators_address_with_the_simulator_off_is_a_warning() -> None:
    from bridge.config import warnings

    off = load_text(SIMULATED, env={"PW": "x"})
    assert any(
        w.startswith("accounts.demo.url points at the simulator's address (127.0.0.1:8800)") for w in warnings(off)
    )
    on = load_text(SIMULATED + "simulator: {enabled: true}\n", env={"PW": "x"})
    assert not any("simulator's address" in w for w in warnings(on))


def test_a_relative_queue_path_keeps_its_meaning_and_is_a_warning() -> None:
    from bridge.config import warnings

    config = load_text(
        SIMULATED.replace("/var/lib/sms-bridge/outbox.sqlite3", "./state/outbox.sqlite3"), env={"PW": "x"}
    )
    assert config.queue.path == "./state/outbox.sqlite3"
    assert any(w.startswith("queue.path ./state/outbox.sqlite3 is relative") for w in warnings(config))
    assert not any(w.startswith("queue.path") for w in warnings(load_text(SIMULATED, env={"PW": "x"})))


def test_no_loopback_client_is_a_warning() -> None:
    from bridge.config import warnings

    assert not any(w.startswith("clients:") for w in warnings(load_text(SIMULATED, env={"PW": "x"})))  # the default
    lan = load_text(SIMULATED + "clients: {lan: {networks: [192.168.1.0/24]}}\n", env={"PW": "x"})
    assert any("no client has networks that include 127.0.0.1" in w for w in warnings(lan))


def test_local_users_must_name_an_alias_a_number_or_a_served_address() -> None:
    base = GOOD + "  alerts: {format: address, account: kwt, domain: a.test}\naliases: {oncall: ['96597119440']}\n"
    load_text(base + "local_users: {root: oncall, backup: '96566074414', ops: oncall@a.test}\n", env={"PW": "x"})
    found = problems_of(base + "local_users: {root: nobody, www: x@elsewhere.test}\n", {"PW": "x"})
    assert found == [
        "local_users.root: 'nobody' is neither an alias (aliases: oncall) nor a phone number",
        "local_users.www: x@elsewhere.test is not an address any route serves",
    ]


def test_the_production_example_config_is_valid_with_its_secrets_set() -> None:
    from bridge.config import load, warnings

    env = {"KWTSMS_USERNAME": "u", "KWTSMS_PASSWORD": "p", "SMARTHOST_PASSWORD": "s"}
    config = load(Path(__file__).parent.parent / "config.production.yaml", env=env)
    assert not config.simulator.enabled
    assert config.accounts["kwtsms"].base_url() == "https://www.kwtsms.com/API/"
    assert "local" in config.clients
    assert warnings(config) == []
    with pytest.raises(ConfigError) as caught:  # no demo-password fallback: a missing secret is an error
        load(Path(__file__).parent.parent / "config.production.yaml", env={})
    assert "accounts.kwtsms.password: environment variable KWTSMS_PASSWORD is not set" in str(caught.value)
