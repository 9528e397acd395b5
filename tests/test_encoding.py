"""GSM-7 / UCS-2 detection and page counting."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core import encoding


@pytest.mark.parametrize(
    ("text", "enc", "units", "pages"),
    [
        ("a" * 160, "gsm7", 160, 1),
        ("a" * 161, "gsm7", 161, 2),
        ("a" * 306, "gsm7", 306, 2),
        ("a" * 307, "gsm7", 307, 3),
        ("{" * 80, "gsm7", 160, 1),  # extension characters count two
        ("{" * 81, "gsm7", 162, 2),
        ("€", "gsm7", 2, 1),
        ("ب" * 70, "ucs2", 70, 1),
        ("ب" * 71, "ucs2", 71, 2),
        ("ب" * 134, "ucs2", 134, 2),
        ("ب" * 135, "ucs2", 135, 3),
        ("a" * 159 + "ب", "ucs2", 160, 3),  # one Arabic letter makes it all UCS-2
        ("", "gsm7", 0, 0),
    ],
)
def test_measure_counts_units_and_pages(text: str, enc: str, units: int, pages: int) -> None:
    assert encoding.measure(text) == encoding.Measure(enc, units, pages)  # type: ignore[arg-type]


def test_an_escape_sequence_is_never_split_across_parts() -> None:
    # 152 plain characters then '{': the escape cannot straddle parts 1 and 2.
    text = "a" * 152 + "{" + "a" * 10
    assert encoding.measure(text).pages == 2
    assert encoding.measure("a" * 152 + "{" + "a" * 152).pages == 3


def test_characters_outside_the_bmp_take_two_units() -> None:
    assert encoding.measure("ب😀").units == 3


def test_trim_to_pages_adds_a_marker_and_fits() -> None:
    text = "word " * 100
    cut = encoding.trim_to_pages(text, 1)
    assert cut.endswith("...")
    assert encoding.measure(cut).pages == 1
    assert len(cut) <= 160
    assert encoding.trim_to_pages("short", 1) == "short"


def test_trim_to_pages_respects_the_ucs2_limit() -> None:
    cut = encoding.trim_to_pages("مرحبا " * 40, 1)
    assert encoding.measure(cut) == encoding.Measure("ucs2", len(cut), 1)
    assert len(cut) <= 70


def test_windows_1256_cannot_carry_arabic_indic_digits() -> None:
    assert encoding.cp1256_unencodable("رقم ٤٥ و 45") == ["٤", "٥"]


def test_emoji_are_found_and_stripped() -> None:
    assert encoding.emoji_in("ok ✅ done 🔥") == ["✅", "🔥"]
    assert encoding.strip_emoji("ok ✅ done 🔥") == "ok done"


_ALPHABET = st.sampled_from([*sorted(encoding.GSM7_BASIC | encoding.GSM7_EXTENSION), "ب", "ت", "😀", "ő"])


@given(st.text(alphabet=_ALPHABET, max_size=1200))
def test_page_count_matches_the_per_part_limits(text: str) -> None:
    m = encoding.measure(text)
    single, multi = encoding.SINGLE_PAGE[m.encoding], encoding.MULTI_PAGE[m.encoding]
    if m.units == 0:
        assert m.pages == 0
    elif m.units <= single:
        assert m.pages == 1
    else:
        # never fewer pages than the plain division; at most one extra per page
        # for a two-unit character that moved to the next part
        assert math.ceil(m.units / multi) <= m.pages <= math.ceil(m.units / (multi - 1))


@given(st.text(alphabet=_ALPHABET, max_size=600), st.integers(min_value=1, max_value=6))
def test_trimmed_text_always_fits(text: str, pages: int) -> None:
    assert encoding.measure(encoding.trim_to_pages(text, pages)).pages <= pages
