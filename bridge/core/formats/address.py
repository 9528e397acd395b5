"""The address format: the recipient names the number or an alias. Pure.

``96597119440@sms.example.com`` (also with ``+`` or ``00``) or
``oncall@sms.example.com`` with ``oncall`` a list of numbers in the config.
The text comes from the alert profile (:mod:`bridge.core.formats.alerts`), or from
the route's template when it has one, with white space collapsed; the body is
never read for directives.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from bridge.core.formats import alerts
from bridge.core.model import Draft, InboundMail, Problem

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
    template: str | None,
    sender: str | None,
    max_pages: int,
    profile: alerts.ProfileName = "auto",
    digest: bool = False,
    found: alerts.AlertMail | None = None,
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
    found = found or alerts.read(mail, profile)
    warnings: list[str] = []
    if not found.recognised:
        warnings.append("alert: no alert profile recognised this mail; the SMS is its subject (generic profile)")
    if template is None:
        text, brief = found.text(), found.text(brief=True)
    else:
        values = found.fields() | {"subject": mail.subject, "body": mail.body, "from": mail.from_header}
        text = collapse(template.format(**values))
        brief = text
    first = found.alerts[0] if len(found.alerts) == 1 else None
    return Draft(
        route=route,
        numbers=tuple(numbers),
        numbers_field="recipient",
        text=text,
        sender=sender,
        trim_pages=max_pages,
        fold_gsm=True,
        digest=digest,
        brief=collapse(brief) if brief != text else "",
        alert_key=first.key if first else "",
        resolved=first.resolved if first else False,
        problems=tuple(problems),
        warnings=tuple(warnings),
    )
