"""Realistic mail from monitoring tools, mail clients and legacy senders, judged end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from bridge.config import Config
from bridge.core.intake import decide
from bridge.core.mail import parse_mail
from tests.conftest import CANARY, EML, TEST_CONFIG

K1, K2, K3 = "96597119440", "96566074414", "96597119220"

ACCEPTED: dict[str, dict[str, Any]] = {
    "zabbix_problem.eml": {
        "numbers": [K1],
        "text": "PROBLEM High web01: High CPU utilization (over 90% for 5m) - Current utilization: 97.3 %",
        "encoding": "gsm7",
        "pages": 1,
        "points": 1,
    },
    "nagios_host_down.eml": {"numbers": [K1, K2], "encoding": "gsm7", "pages": 1, "points": 2},
    "alertmanager_grouped_html.eml": {
        "numbers": [K2, K1],
        "text": "FIRING 2 alerts: db1, db2: InstanceDown - prod",
        "points": 2,
    },
    "grafana_alternative.eml": {"numbers": [K1], "text": "FIRING: High API latency", "encoding": "gsm7"},
    "kwtsms_seed_v099.eml": {"numbers": [K3, K2], "sender": "SenderID", "text": "Meet me at starbuck!", "points": 2},
    "kwtsms_seed_v41.eml": {"numbers": [K3, K2], "sender": "KWT-SMS", "text": "Meet me at Starbucks!"},
    "arabic_utf8_base64.eml": {
        "numbers": [K1],
        "sender": "MY-COMPANY",
        "text": "مرحبا، تم شحن طلبك رقم 5521 وسيصل غدا",
        "encoding": "ucs2",
        "pages": 1,
    },
    "arabic_windows1256_qp.eml": {"text": "تنبيه: انقطاع الكهرباء في المبنى ب", "encoding": "ucs2"},
    "arabic_iso8859_6.eml": {"text": "الخادم متوقف", "encoding": "ucs2"},
    "outlook_alternative.eml": {"numbers": [K1], "text": "Shipment 4471 left the warehouse"},
    "outlook_html_only.eml": {"numbers": [K1], "text": "Shipment 4471 & 4472 left"},
    "thunderbird_signature.eml": {"numbers": [K1, K2], "sender": "MY-COMPANY", "points": 2},
    "missing_charset_utf8.eml": {"text": "النسخ الاحتياطي اكتمل", "encoding": "ucs2"},
    "lying_charset_latin1.eml": {"text": "تم النسخ", "encoding": "ucs2"},
    "rfc2047_arabic_subject.eml": {"text": "تنبيه: الخادم web01 لا يستجيب", "encoding": "ucs2"},
    "mixed_with_attachment.eml": {"numbers": [K1], "text": "Your scan is ready (3 pages)"},
}

REJECTED: dict[str, set[str]] = {
    "invalid_lang1_arabic.eml": {"lang"},
    "invalid_number.eml": {"mobile"},
    "invalid_landline.eml": {"mobile"},
    "invalid_sender_too_long.eml": {"sender"},
    "invalid_sender_case.eml": {"sender"},
    "invalid_repeated_mobile.eml": {"mobile"},
    "invalid_missing_text.eml": {"text"},
    "invalid_too_long.eml": {"text"},
    "invalid_cp1256_digits.eml": {"lang"},
    "invalid_foreign_country.eml": {"mobile"},
    "invalid_unknown_recipient.eml": {"recipient"},
    "invalid_unknown_alias.eml": {"recipient"},
}


def test_every_corpus_file_has_an_expectation() -> None:
    assert {p.name for p in EML.glob("*.eml")} == set(ACCEPTED) | set(REJECTED)


@pytest.mark.parametrize("name", sorted(ACCEPTED))
def test_valid_mail_is_accepted_with_the_right_sms(name: str, config: Config) -> None:
    verdict = decide(parse_mail((EML / name).read_bytes()), config)
    assert verdict.ok, verdict.problems
    (request,) = verdict.requests
    got = {
        "numbers": list(request.numbers),
        "sender": request.sender,
        "text": request.text,
        "encoding": request.encoding,
        "pages": request.pages,
        "points": request.points,
    }
    expected = {"sender": "KWT-SMS", "encoding": "gsm7", "pages": 1} | ACCEPTED[name]
    assert {k: got[k] for k in expected} == expected
    assert request.points == request.pages * len(request.numbers)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_invalid_mail_is_rejected_naming_the_field(name: str, config: Config) -> None:
    verdict = decide(parse_mail((EML / name).read_bytes()), config)
    assert not verdict.ok
    assert {p.field for p in verdict.problems} == REJECTED[name]
    assert all(p.message for p in verdict.problems)


def _check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "check", "-c", str(TEST_CONFIG), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_check_json_prints_the_documented_object() -> None:
    result = _check(str(EML / "kwtsms_seed_v41.eml"), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "problems", "warnings", "sms"}
    assert data["ok"] is True
    assert data["sms"] == [
        {
            "account": "kwt",
            "provider": "kwtsms-http",
            "sender": "KWT-SMS",
            "numbers": [K3, K2],
            "text": "Meet me at Starbucks!",
            "encoding": "gsm7",
            "pages": 1,
            "points": 2,
        }
    ]
    assert CANARY not in result.stdout + result.stderr
    assert "xx3xxx" not in result.stdout + result.stderr


def test_check_exits_1_and_names_every_problem() -> None:
    result = _check(str(EML / "invalid_sender_too_long.eml"))
    assert result.returncode == 1
    assert "sender: 'MY-COMPANY-LTD' is 14 characters long" in result.stdout


def test_check_reads_standard_input_and_takes_envelope_recipients() -> None:
    raw = (EML / "zabbix_problem.eml").read_bytes()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bridge",
            "check",
            "-c",
            str(TEST_CONFIG),
            "-",
            "--json",
            "--rcpt",
            "oncall@alerts.bridge.test",
        ],
        input=raw,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["sms"][0]["numbers"] == [K1, K2]


def test_check_on_a_missing_file_says_so_without_a_traceback() -> None:
    result = _check("/nonexistent/mail.eml")
    assert result.returncode == 66
    assert "cannot be read" in result.stderr
    assert "Traceback" not in result.stderr
