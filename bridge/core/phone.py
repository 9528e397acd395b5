"""Phone numbers: whatever a person typed → E.164 digits without ``+``. Pure.

``+965 9711 9440``, ``0096597119440``, ``96597119440``, ``97119440`` and the
same in Arabic-Indic digits all become ``96597119440``. Kuwait mobile numbers
(8 digits starting 4, 5, 6 or 9) are accepted by that rule alone, because
the library's range data lags new allocations; other countries go through
``phonenumbers`` (full validity when ``strict``, plausible length otherwise).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

import phonenumbers

_SEPARATORS = re.compile(r"[\s\-.()/\u00a0\u200e\u200f\u202a-\u202e]+")
_KUWAIT_MOBILE = re.compile(r"[4569]\d{7}")


@dataclass(frozen=True)
class NumberResult:
    number: str | None = None  # digits with country code
    region: str | None = None  # ISO region of the number
    problem: str | None = None


def _ascii_digits(text: str) -> str:
    out = []
    for ch in text:
        if ch.isdigit() and not ch.isascii():
            out.append(str(unicodedata.digit(ch, 0)))
        else:
            out.append(ch)
    return "".join(out)


def _judge(parsed: phonenumbers.PhoneNumber, strict: bool) -> NumberResult:
    national = str(parsed.national_number)
    if parsed.country_code == 965:
        if _KUWAIT_MOBILE.fullmatch(national):
            return NumberResult(f"965{national}", "KW")
        if len(national) == 8 and national[0] == "2":
            return NumberResult(problem="is a Kuwait landline; SMS need a mobile number")
        return NumberResult(problem="is not a Kuwait mobile number (8 digits starting with 4, 5, 6 or 9)")
    good = phonenumbers.is_valid_number(parsed) if strict else phonenumbers.is_possible_number(parsed)
    if not good:
        return NumberResult(problem="is not a valid mobile number")
    region = phonenumbers.region_code_for_number(parsed)
    if region is None:
        regions = phonenumbers.region_codes_for_country_code(parsed.country_code or 0)
        region = regions[0] if regions else None
    return NumberResult(f"{parsed.country_code}{national}", region)


@functools.lru_cache(maxsize=8192)
def normalise(raw: str, default_region: str = "KW", *, strict: bool = True) -> NumberResult:
    """Normalise one number, or say in plain words what is wrong with it (cached: pure)."""
    text = _SEPARATORS.sub("", _ascii_digits(raw.strip()))
    if not text:
        return NumberResult(problem="is empty")
    if text.startswith("00"):
        text = "+" + text[2:]
    if not re.fullmatch(r"\+?\d+", text):
        return NumberResult(problem="is not a phone number (digits only, with the country code)")
    digits = text.lstrip("+")
    if len(digits) > 15:
        return NumberResult(problem="has too many digits for a phone number")
    candidates = [text] if text.startswith("+") else [text, "+" + text]
    first: NumberResult | None = None
    for candidate in candidates:
        try:
            parsed = phonenumbers.parse(candidate, default_region)
        except phonenumbers.NumberParseException:
            continue
        result = _judge(parsed, strict)
        if result.number:
            return result
        first = first or result
    return first or NumberResult(problem="is not a phone number (digits only, with the country code)")


def mask(number: str) -> str:
    """``96597119440`` → ``965971***40`` for logs."""
    if len(number) <= 6:
        return "***"
    return number[:6] + "*" * (len(number) - 8) + number[-2:]


def numbers_for_log(numbers: tuple[str, ...]) -> str:
    shown = ",".join(mask(n) for n in numbers[:3])
    return shown + (f",+{len(numbers) - 3}" if len(numbers) > 3 else "")
