"""SMS encodings and page counting (GSM 03.38 7-bit and UCS-2). Pure.

A message is GSM-7 when every character is in the GSM 03.38 default
alphabet or its extension table; extension characters (``^ { } \\ [ ] ~ |``,
``€`` and form feed) take two septets. Anything else makes the whole message
UCS-2, where characters outside the Basic Multilingual Plane take two units.

One page holds 160 septets (GSM-7) or 70 units (UCS-2); a message longer
than one page is split into parts of 153 or 67, and a part never splits an
escape sequence or a surrogate pair (the unit moves to the next part, as
real SMSCs do).

Emoji rule (documented in the README): KwtSMS does not deliver emoji and
OpenTech cannot express characters outside the BMP, so :func:`strip_emoji`
removes every character outside the BMP, variation selectors, zero-width
joiners, keycap marks and the pictographs of the Miscellaneous Symbols and
Dingbats blocks. Routes choose to strip them (with a warning) or reject.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from bridge.core.model import Encoding

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[]~|€\f")

SINGLE_PAGE = {"gsm7": 160, "ucs2": 70}
MULTI_PAGE = {"gsm7": 153, "ucs2": 67}

# Arabic letters and digits, including presentation forms.
_ARABIC = re.compile("[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_EMOJI_BMP = re.compile("[\u200d\u20e3\ufe0e\ufe0f\u2600-\u27bf\u2b00-\u2bff]")
_HTML_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")


@dataclass(frozen=True)
class Measure:
    """How a text travels as SMS."""

    encoding: Encoding
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    pages: int


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def non_gsm7_chars(text: str) -> list[str]:
    """The distinct characters of ``text`` that GSM-7 cannot carry, in order."""
    seen: dict[str, None] = {}
    for ch in text:
        if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION:
            seen.setdefault(ch)
    return list(seen)


def _unit_sizes(text: str, encoding: Encoding) -> list[int]:
    if encoding == "gsm7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _count_pages(sizes: list[int], encoding: Encoding) -> int:
    total = sum(sizes)
    if total == 0:
        return 0
    if total <= SINGLE_PAGE[encoding]:
        return 1
    limit = MULTI_PAGE[encoding]
    pages, used = 1, 0
    for size in sizes:
        if used + size > limit:
            pages += 1
            used = 0
        used += size
    return pages


def measure(text: str) -> Measure:
    """Encoding, length in units and number of pages of ``text``."""
    encoding: Encoding = "gsm7" if is_gsm7(text) else "ucs2"
    sizes = _unit_sizes(text, encoding)
    return Measure(encoding, sum(sizes), _count_pages(sizes, encoding))


def trim_to_pages(text: str, max_pages: int, marker: str = "...") -> str:
    """``text`` cut so that it fits ``max_pages``, ending in ``marker`` if cut."""
    if measure(text).pages <= max_pages:
        return text
    lo, hi = 0, len(text)
    while lo < hi:  # the longest prefix that fits with the marker
        mid = (lo + hi + 1) // 2
        if measure(text[:mid].rstrip() + marker).pages <= max_pages:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + marker


def has_arabic(text: str) -> bool:
    return _ARABIC.search(text) is not None


def emoji_in(text: str) -> list[str]:
    """The distinct emoji-like characters of ``text`` (see the module rule)."""
    seen: dict[str, None] = {}
    for ch in text:
        if ord(ch) > 0xFFFF or _EMOJI_BMP.match(ch):
            seen.setdefault(ch)
    return list(seen)


def strip_emoji(text: str) -> str:
    out = "".join(ch for ch in text if not (ord(ch) > 0xFFFF or _EMOJI_BMP.match(ch)))
    return re.sub(r"[ \t]{2,}", " ", out).strip()


def html_tags_in(text: str) -> list[str]:
    return _HTML_TAG.findall(text)


def strip_html_tags(text: str) -> str:
    return _HTML_TAG.sub("", text)


#: what a provider may take for a tag: ``<`` then (spaces, ``/``) a letter, and a later ``>``.
#: KwtSMS documents only "no HTML" (ERR027), so anything of that shape is read as a tag.
_TAG_LIKE = re.compile(r"<\s*/?\s*[A-Za-z][^>]*>")


def defuse_angles(text: str) -> tuple[str, list[str]]:
    """``text`` with every angle-bracketed span a provider may take for an HTML tag written
    in parentheses instead (``Cron <root@db1>`` → ``Cron (root@db1)``), and the spans changed."""
    changed: list[str] = []
    while (match := _TAG_LIKE.search(text)) is not None:
        changed.append(match.group(0))
        start, end = match.start(), match.end() - 1
        text = f"{text[:start]}({text[start + 1 : end]}){text[end + 1 :]}"
    return text, changed


def cp1256_unencodable(text: str) -> list[str]:
    """The distinct characters Windows-1256 (KwtSMS ``lang=2``) cannot carry."""
    seen: dict[str, None] = {}
    for ch in text:
        try:
            ch.encode("cp1256")
        except UnicodeEncodeError:
            seen.setdefault(ch)
    return list(seen)


def describe_chars(chars: list[str], limit: int = 8) -> str:
    """``'ő' (U+0151), '٣' (U+0663)`` for messages a person reads."""
    shown = ", ".join(f"'{ch}' (U+{ord(ch):04X})" for ch in chars[:limit])
    more = len(chars) - limit
    return shown + (f" and {more} more" if more > 0 else "")


# Typographic characters that word processors and templates put in place of plain
# ones. Any one of them makes a whole message UCS-2 (70 characters a page, not
# 160), so address-format text is folded to these GSM look-alikes when that
# keeps the whole text in GSM-7.
GSM_LOOKALIKES = {
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043\ufe58\ufe63\uff0d", "-"),
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2032\u00b4\u0060\u02bc", "'"),
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb", '"'),
    **dict.fromkeys("\u00a0\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000", " "),
    **dict.fromkeys("\u200b\u200c\u2060\ufeff\u00ad", ""),
    "\u2026": "...",
    "\u2022": "*",
    "\u00b7": "*",
    "\u2122": "TM",
    "\u00a9": "(c)",
    "\u00ae": "(R)",
    "\u00d7": "x",
    "\u2192": "->",
    "\u2190": "<-",
    "\u2264": "<=",
    "\u2265": ">=",
    "\u2260": "!=",
    "\u00b0": " deg",
    "\t": " ",
}
_LOOKALIKE_TABLE = str.maketrans(GSM_LOOKALIKES)


def _plain_letter(ch: str) -> str:
    """``ê`` → ``e``, ``ﬁ`` → ``fi``, ``Ａ`` → ``A``: the compatibility decomposition
    without its accents, when that is GSM-7; else ``ch`` itself."""
    if ch in GSM7_BASIC or ch in GSM7_EXTENSION:
        return ch
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return base if base and is_gsm7(base) else ch


def fold_to_gsm(text: str) -> tuple[str, list[str]]:
    """``text`` with typographic characters replaced by GSM-7 look-alikes (and accented
    Latin letters by their plain ones), and the characters replaced, when that makes the
    whole text GSM-7; else ``text`` as it is (Arabic stays Arabic)."""
    if is_gsm7(text):
        return text, []
    folded = "".join(_plain_letter(ch) for ch in text.translate(_LOOKALIKE_TABLE))
    if not is_gsm7(folded):
        return text, []
    return folded, [ch for ch in dict.fromkeys(text) if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION]
