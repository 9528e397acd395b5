"""The KwtSMS SMTP API body: ``key:value`` lines. Pure.

Keys (case does not matter): ``username``, ``password``, ``sender``,
``mobile``, ``lang``, ``text`` (``message`` is another name for it). Several
pairs may share a line, as the v0.99 document prints them; the value of
``text`` runs to the end of its line, other values to the next key. A key
counts only at the start of a line or after white space, and a line counts
only when it starts with a key: signatures, disclaimers and quoted replies
are ignored and reported as warnings. A repeated key is an error.
"""

from __future__ import annotations

import difflib
import re

from bridge.core.model import Draft, Problem

KEYS = ("username", "password", "sender", "mobile", "lang", "text", "message")
_KEY = re.compile(r"(?:^|(?<=\s))(username|password|sender|mobile|lang|text|message)[ \t]*:", re.IGNORECASE)
_KEY_LIKE = re.compile(r"[ \t]*([A-Za-z][A-Za-z_-]{1,19})[ \t]*:")
_INVISIBLE = dict.fromkeys(map(ord, "\ufeff\u200b\u200c\u200e\u200f\u2060"), None)


def _ignored_warning(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
    noun = "line is not a KwtSMS field and was" if len(lines) == 1 else "lines are not KwtSMS fields and were"
    return f"{len(lines)} {noun} ignored ({'line' if len(lines) == 1 else 'lines'} {shown})"


def parse(body: str, route: str, *, plus_as_space: bool = True) -> Draft:
    values: dict[str, str] = {}
    where: dict[str, int] = {}
    problems: list[Problem] = []
    warnings: list[str] = []
    ignored: list[int] = []
    lines = body.translate(_INVISIBLE).split("\n")
    for number, line in enumerate(lines, start=1):
        if line.rstrip() == "--":
            if any(rest.strip() for rest in lines[number:]):
                warnings.append(f"the signature after line {number} was ignored")
            break
        if not line.strip():
            continue
        stripped = line.lstrip()
        matches = list(_KEY.finditer(stripped))
        if not matches or matches[0].start() != 0:
            like = _KEY_LIKE.match(line)
            close = difflib.get_close_matches(like.group(1).lower(), KEYS, n=1, cutoff=0.75) if like else []
            if like and close and like.group(1).lower() not in KEYS:
                warnings.append(f"line {number}: {like.group(1)!r} is not a KwtSMS field; did you mean {close[0]!r}?")
            else:
                ignored.append(number)
            continue
        for i, match in enumerate(matches):
            key = match.group(1).lower()
            key = "text" if key == "message" else key
            if key == "text":
                value = stripped[match.end() :]
            else:
                end = matches[i + 1].start() if i + 1 < len(matches) else len(stripped)
                value = stripped[match.end() : end]
            if key in values:
                problems.append(Problem(key, f"is given twice (lines {where[key]} and {number}); give it once"))
            else:
                values[key] = value.strip()
                where[key] = number
            if key == "text":
                break
    if ignored:
        warnings.append(_ignored_warning(ignored))
    text = values.get("text")
    if text is not None and plus_as_space:
        text = text.replace("+", " ").strip()
    sender = values.get("sender")
    if sender is not None:
        sender = sender.replace("+", " ").strip()
    mobile = values.get("mobile")
    numbers = tuple(n.strip() for n in re.split(r"[,;\u060c]", mobile) if n.strip()) if mobile else ()
    return Draft(
        route=route,
        numbers=numbers,
        numbers_field="mobile",
        text=text,
        sender=sender or None,
        lang=values.get("lang"),
        username=values.get("username"),
        password=values.get("password"),
        problems=tuple(problems),
        warnings=tuple(warnings),
    )
