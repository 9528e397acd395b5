"""The address format: the recipient names the number or an alias. Pure.

``96597119440@sms.example.com`` (also with ``+`` or ``00``) or
``oncall@sms.example.com`` with ``oncall`` a list of numbers in the config.
The text comes from the route's template (``{subject}`` by default), with
white space collapsed; the body is never read for directives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bridge.model import Draft, InboundMail, Problem

_NUMBERISH = re.compile(r"\+?[0-9\u0660-\u0669\u06f0-\u06f9][0-9\u0660-\u0669\u06f0-\u06f9.\-]*")


def is_number_local_part(local: str) -> bool:
    return _NUMBERISH.fullmatch(local) is not None


def collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse(
    mail: InboundMail,
    route: str,
    recipients: Sequence[str],
    *,
    aliases: Mapping[str, Sequence[str]],
    template: str,
    sender: str | None,
    max_pages: int,
) -> Draft:
    numbers: list[str] = []
    problems: list[Problem] = []
    for rcpt in recipients:
        local = rcpt.rpartition("@")[0]
        alias = aliases.get(local.lower())
        if alias is not None:
            numbers.extend(str(n) for n in alias)
        elif is_number_local_part(local):
            numbers.append(local)
        else:
            problems.append(Problem("recipient", f"{rcpt}: {local!r} is neither a phone number nor a known alias"))
    text = collapse(template.format(subject=mail.subject, body=mail.body, **{"from": mail.from_header}))
    return Draft(
        route=route,
        numbers=tuple(numbers),
        numbers_field="recipient",
        text=text,
        sender=sender,
        trim_pages=max_pages,
        problems=tuple(problems),
    )
