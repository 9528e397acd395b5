"""Validation rules, one behaviour each."""

from __future__ import annotations

from typing import Any

import pytest

from bridge.config import NumbersConfig, RouteConfig, account_config
from bridge.core.model import Draft
from bridge.core.validate import Outcome, validate


def run(
    draft: dict[str, Any] | None = None, account: dict[str, Any] | None = None, route: dict[str, Any] | None = None
) -> Outcome:
    acc = account_config(
        {"provider": "kwtsms-http", "username": "corp", "password": "pw-canary", "sender": "KWT-SMS"} | (account or {})
    )
    rt = RouteConfig.model_validate({"format": "kwtsms", "account": "kwt", "recipients": ["s@b.test"]} | (route or {}))
    d = Draft(
        **({"route": "r", "numbers": ("96597119440",), "numbers_field": "mobile", "text": "hello"} | (draft or {}))
    )
    return validate(d, account_name="kwt", account=acc, route=rt, numbers=NumbersConfig())


def fields(outcome: Outcome) -> list[str]:
    return [p.field for p in outcome.problems]


def test_numbers_are_deduplicated_after_normalising() -> None:
    out = run({"numbers": ("96597119440", "+965 9711 9440", "97119440", "66074414")})
    assert out.request is not None
    assert out.request.numbers == ("96597119440", "96566074414")
    assert out.request.points == 2


def test_every_problem_is_reported_not_just_the_first() -> None:
    out = run({"numbers": ("123",), "text": None, "sender": "WAY-TOO-LONG-SENDER", "lang": "9"})
    assert sorted(set(fields(out))) == ["mobile", "sender", "text"]


def test_too_many_numbers_is_refused() -> None:
    numbers = tuple(f"9{i:07d}" for i in range(1, 6))
    assert fields(run({"numbers": numbers}, {"max_numbers": 4})) == ["mobile"]


def test_any_country_when_the_account_allows_it() -> None:
    out = run({"numbers": ("+966501234567",)}, {"countries": ["*"]})
    assert out.request is not None
    assert out.request.numbers == ("966501234567",)


def test_language_is_detected_when_absent() -> None:
    arabic = run({"text": "مرحبا"}).request
    english = run({"text": "hello"}).request
    assert arabic is not None
    assert english is not None
    assert (arabic.lang, arabic.encoding) == (3, "ucs2")
    assert (english.lang, english.encoding) == (1, "gsm7")


def test_lang_4_keeps_unicode_and_bad_lang_is_named() -> None:
    out = run({"text": "Ünïcødé ő", "lang": "4"})
    assert out.request is not None
    assert out.request.lang == 4
    assert fields(run({"lang": "arabic"})) == ["lang"]


def test_lang_1_with_non_gsm_latin_names_the_characters() -> None:
    out = run({"text": "naïve ő", "lang": "1"})
    assert fields(out) == ["lang"]
    assert "'ő' (U+0151)" in out.problems[0].message


def test_no_sender_anywhere_is_a_problem() -> None:
    assert fields(run(account={"sender": None})) == ["sender"]


def test_emoji_are_stripped_with_a_warning_by_default_or_rejected() -> None:
    out = run({"text": "deploy done 🚀"})
    assert out.request is not None
    assert out.request.text == "deploy done"
    assert any("emoji" in w for w in out.warnings)
    assert fields(run({"text": "deploy done 🚀"}, {"emoji": "reject"})) == ["text"]


def test_html_tags_are_stripped_by_default_or_rejected() -> None:
    out = run({"text": "<b>bold</b> move"})
    assert out.request is not None
    assert out.request.text == "bold move"
    assert fields(run({"text": "<b>bold</b>"}, {"html": "reject"})) == ["text"]
    kept = run({"text": "x < 5 and y > 3"}).request
    assert kept is not None
    assert kept.text == "x < 5 and y > 3"  # no letter after <: nothing a provider takes for a tag
    # "< b and c >" has a tag's shape to KwtSMS (ERR027): written in parentheses, with a warning
    defused = run({"text": "a < b and c > d"})
    assert defused.request is not None
    assert defused.request.text == "a ( b and c ) d"
    assert any("angle brackets" in w for w in defused.warnings)


def test_angle_bracketed_addresses_and_ports_are_not_html_but_are_cleaned() -> None:
    out = run({"text": "Cron <root@db1> /usr/local/bin/backup.sh"}, {"html": "reject"})
    assert out.request is not None  # not refused as HTML
    assert out.request.text == "Cron (root@db1) /usr/local/bin/backup.sh"
    assert run({"text": "<db01:9100> down"}).request.text == "(db01:9100) down"  # type: ignore[union-attr]


def test_text_of_only_emoji_is_empty() -> None:
    assert fields(run({"text": "🔥🔥"})) == ["text"]


def test_address_text_is_cut_to_the_route_page_limit() -> None:
    out = run({"text": "x " * 200, "trim_pages": 1})
    assert out.request is not None
    assert out.request.pages == 1
    assert out.request.text.endswith("...")


@pytest.mark.parametrize(
    ("mode", "draft", "problem_fields", "has_credentials"),
    [
        ("account", {"username": "x", "password": "y"}, [], False),
        ("forbid", {"password": "y"}, ["password"], False),
        ("forbid", {}, [], False),
        ("verify", {"username": "corp", "password": "pw-canary"}, [], False),
        ("verify", {"username": "corp", "password": "wrong"}, ["password"], False),
        ("verify", {}, ["username", "password"], False),
        ("passthrough", {"username": "u2", "password": "p2"}, [], True),
        ("passthrough", {"username": "u2"}, ["password"], False),
    ],
)
def test_body_credentials_modes(
    mode: str, draft: dict[str, Any], problem_fields: list[str], has_credentials: bool
) -> None:
    out = run(draft, route={"body_credentials": mode})
    assert fields(out) == problem_fields
    if not problem_fields:
        assert out.request is not None
        assert (out.request.credentials is not None) == has_credentials
    for p in out.problems:
        assert "pw-canary" not in p.message
        assert "wrong" not in p.message


def test_passthrough_credentials_never_print() -> None:
    out = run({"username": "u2", "password": "p2-canary"}, route={"body_credentials": "passthrough"})
    assert "p2-canary" not in repr(out)
