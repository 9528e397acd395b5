"""Phone number normalisation."""

from __future__ import annotations

import pytest

from bridge.core.phone import mask, normalise


@pytest.mark.parametrize(
    "raw",
    [
        "+965 9711 9440",
        "0096597119440",
        "96597119440",
        "97119440",
        "٩٧١١٩٤٤٠",
        "+965-9711-9440",
        "(965) 97119440",
        "۹۷۱۱۹۴۴۰",
    ],
)
def test_every_common_spelling_becomes_e164_digits(raw: str) -> None:
    assert normalise(raw).number == "96597119440"


@pytest.mark.parametrize("raw", ["41234567", "51234567", "61234567", "91234567"])
def test_kuwait_mobile_ranges_are_accepted_by_rule(raw: str) -> None:
    result = normalise(raw)
    assert result.number == "965" + raw
    assert result.region == "KW"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("22223333", "landline"),
        ("12345", "not a Kuwait mobile"),
        ("abc", "not a phone number"),
        ("", "empty"),
        ("1" * 16, "too many digits"),
    ],
)
def test_bad_numbers_are_named(raw: str, words: str) -> None:
    result = normalise(raw)
    assert result.number is None
    assert result.problem is not None
    assert words in result.problem


def test_other_countries_keep_their_region() -> None:
    result = normalise("+966 50 123 4567")
    assert (result.number, result.region) == ("966501234567", "SA")


def test_non_strict_mode_admits_plausible_numbers() -> None:
    assert normalise("+966 59 999 9999", strict=False).number == "966599999999"


def test_mask_hides_the_middle() -> None:
    assert mask("96597119440") == "965971***40"
