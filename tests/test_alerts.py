"""Alert profiles, GSM folding and digests: the pure parts of the alert path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import Config
from bridge.core.digest import Item, Series, plan
from bridge.core.encoding import fold_to_gsm, measure
from bridge.core.formats import alerts
from bridge.core.intake import decide
from bridge.core.mail import parse_mail
from bridge.core.model import InboundMail

CORPUS = Path(__file__).parent / "alerts"

#: each tool's default-template mail → (profile, state it starts with, hosts and problem it names)
EXPECTED: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "zabbix_problem_base64.eml": ("zabbix", "PROBLEM", ("db01",), "Disk space is low"),
    "zabbix_resolved_in_base64.eml": ("zabbix", "RESOLVED", ("db01",), "Disk space is low"),
    "zabbix_html_base64.eml": ("zabbix", "PROBLEM", ("web03",), "Zabbix agent is not available"),
    "zabbix_typographic.eml": ("zabbix", "PROBLEM", ("backup01",), 'Backup job "nightly" failed - exit code 2'),
    "nagios_service_problem.eml": ("nagios", "PROBLEM", ("web01",), "HTTP"),
    "nagios_service_recovery.eml": ("nagios", "RESOLVED", ("web01",), "HTTP"),
    "nagios_host_down.eml": ("nagios", "PROBLEM", ("core-router-1",), "DOWN"),
    "icinga2_service_problem.eml": ("icinga2", "PROBLEM", ("db02",), "disk"),
    "icinga2_host_recovery.eml": ("icinga2", "RESOLVED", ("db02",), "UP"),
    "alertmanager_firing_grouped_html.eml": ("alertmanager", "FIRING", ("db01", "db02", "web03"), "InstanceDown"),
    "alertmanager_resolved_html.eml": ("alertmanager", "RESOLVED", ("db01",), "InstanceDown"),
    "alertmanager_mixed_html.eml": ("alertmanager", "2 alerts: FIRING", ("app07", "app08"), "HighMemory"),
    "grafana_firing_alternative.eml": ("grafana", "FIRING", ("api01", "api02"), "High CPU"),
    "grafana_resolved_html.eml": ("grafana", "RESOLVED", ("api01",), "High CPU"),
}


def read(name: str) -> InboundMail:
    return parse_mail((CORPUS / name).read_bytes())


def test_every_corpus_mail_has_an_expectation() -> None:
    assert {p.name for p in CORPUS.glob("*.eml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_default_template_mail_becomes_one_readable_gsm_page(name: str, config: Config) -> None:
    """State first, then the host and the problem; no URL; one GSM-7 page."""
    profile, state, hosts, problem = EXPECTED[name]
    mail = read(name)
    assert alerts.read(mail).profile == profile
    verdict = decide(mail, config)
    assert verdict.ok, verdict.problems
    (request,) = verdict.requests
    assert request.text.startswith(state), request.text
    for host in hosts:
        assert host in request.text
    assert problem in request.text
    assert not re.search(r"https?://|www\.", request.text)
    assert (request.encoding, request.pages) == ("gsm7", 1), request.text
    assert not any("no alert profile" in w for w in verdict.warnings)


def test_every_alert_of_a_grouped_mail_is_extracted() -> None:
    found = alerts.read(read("alertmanager_firing_grouped_html.eml"))
    assert [(a.state, a.host, a.name, a.severity) for a in found.alerts] == [
        ("FIRING", h, "InstanceDown", "critical") for h in ("db01", "db02", "web03")
    ]
    assert found.count == 3
    mixed = alerts.read(read("alertmanager_mixed_html.eml"))
    assert [(a.state, a.host) for a in mixed.alerts] == [("FIRING", "app07"), ("RESOLVED", "app08")]


def test_a_problem_and_its_resolution_share_a_key() -> None:
    problem = alerts.read(read("zabbix_problem_base64.eml")).alerts[0]
    resolved = alerts.read(read("zabbix_resolved_in_base64.eml")).alerts[0]
    assert problem.key == resolved.key != ""
    assert (problem.resolved, resolved.resolved) == (False, True)


def test_unrecognised_mail_falls_back_to_its_subject_with_a_warning(config: Config) -> None:
    mail = InboundMail("erp@corp.example", ("96597119440@alerts.bridge.test",), "Invoice 42 is due", "body")
    verdict = decide(mail, config)
    assert verdict.ok
    assert verdict.requests[0].text == "Invoice 42 is due"
    assert any("no alert profile recognised" in w for w in verdict.warnings)


def test_a_generic_subject_with_a_state_word_keeps_it_first() -> None:
    mail = InboundMail("x@y", ("1@z",), "CRITICAL: disk /var on files01 at 99% http://x/y", "")
    assert alerts.read(mail).text() == "CRITICAL: disk /var on files01 at 99%"


def test_a_named_profile_that_does_not_match_reads_the_subject() -> None:
    mail = InboundMail("x@y", ("1@z",), "Hello there", "")
    assert alerts.read(mail, "zabbix").text() == "Hello there"


def test_typographic_punctuation_is_folded_only_when_that_keeps_gsm7() -> None:
    assert fold_to_gsm("Backup “nightly” failed – exit 2…\u00a0now") == (
        'Backup "nightly" failed - exit 2... now',
        ["“", "”", "–", "…", "\u00a0"],
    )
    assert fold_to_gsm("الخادم – متوقف") == ("الخادم – متوقف", [])  # Arabic stays Arabic
    assert fold_to_gsm("plain") == ("plain", [])
    assert fold_to_gsm("Serviço indisponível – São Paulo") == ("Servico indisponivel - Sao Paulo", ["ç", "í", "–", "ã"])


def test_arabic_alert_stays_arabic(config: Config) -> None:
    mail = InboundMail("x@y", ("96597119440@alerts.bridge.test",), "تنبيه: الخادم web01 لا يستجيب", "")
    (request,) = decide(mail, config).requests
    assert request.text == "تنبيه: الخادم web01 لا يستجيب"
    assert request.encoding == "ucs2"


def test_emoji_in_an_alert_subject_is_removed_with_a_warning(config: Config) -> None:
    mail = InboundMail("g@grafana.example", ("96597119440@alerts.bridge.test",), "[FIRING:1] 🔥 High latency", "")
    verdict = decide(mail, config)
    assert verdict.requests[0].encoding == "gsm7"
    assert "🔥" not in verdict.requests[0].text
    assert any("emoji removed" in w for w in verdict.warnings)


# -- digests ----------------------------------------------------------------------


def items(n: int, text: str = "PROBLEM High db{i:02d}: Disk space is low - used 93%") -> list[Item]:
    return [Item(f"id{i}", text.format(i=i), f"PROBLEM db{i:02d} Disk low") for i in range(n)]


def test_one_waiting_alert_is_sent_as_it_is() -> None:
    (item,) = items(1)
    assert plan([item], 6) == plan([item], 6, None)
    assert plan([item], 6).text == item.text


def test_a_few_alerts_become_one_sms_listing_each() -> None:
    result = plan(items(3), 6)
    assert result.ids == ("id0", "id1", "id2")
    assert result.text.startswith("3 alerts: PROBLEM High db00")
    assert result.text.count(" | ") == 2
    assert result.series is None


def test_a_storm_is_split_into_digests_that_each_fit_the_budget() -> None:
    waiting = items(200)
    listed: list[str] = []
    series: Series | None = None
    digests = 0
    while waiting:
        result = plan(waiting, 6, series)
        assert measure(result.text).pages <= 6
        listed += result.ids
        waiting = [i for i in waiting if i.id not in result.ids]
        series = result.series
        digests += 1
    assert listed == [f"id{i}" for i in range(200)]  # each once, in order
    assert digests <= 9
    assert series is None


def test_the_first_digest_of_a_storm_says_how_many_and_which_part() -> None:
    first = plan(items(60), 2)
    assert re.match(r"60 alerts, 1/\d+: ", first.text)
    assert first.series is not None
    rest = [i for i in items(60) if i.id not in first.ids]
    second = plan(rest, 2, first.series)
    assert re.match(r"60 alerts, 2/\d+: ", second.text)


def test_a_resolution_travels_with_its_problem() -> None:
    waiting = [
        Item("p", "PROBLEM db01 disk", "PROBLEM db01 disk", key="db01|disk"),
        *items(40),
        Item("r", "RESOLVED db01 disk", "RESOLVED db01 disk", key="db01|disk", resolved=True),
    ]
    result = plan(waiting, 1)
    assert result.ids[:2] == ("p", "r")


def test_a_route_template_uses_the_extracted_fields(config: Config) -> None:
    route = config.routes["alerts"].model_copy(update={"template": "{state}/{severity}/{host}/{name}/{count}"})
    custom = config.model_copy(update={"routes": {**config.routes, "alerts": route}})
    (request,) = decide(read("zabbix_problem_base64.eml"), custom).requests
    assert request.text == "PROBLEM/Average/db01/Disk space is low (used > 90%)/1"


def test_a_template_naming_an_unknown_field_is_a_config_error() -> None:
    from bridge.config import ConfigError, load_text

    text = """
accounts: {a: {provider: opentech-http, uid: "1", username: u, password: p}}
routes: {r: {format: address, account: a, domain: x.test, template: "{state} {hostname}"}}
"""
    with pytest.raises(ConfigError) as caught:
        load_text(text, env={})
    assert [p.field for p in caught.value.problems] == ["routes.r.template"]
    assert "unknown field {hostname}" in caught.value.problems[0].message
