"""One mail → a :class:`~bridge.model.Verdict`: routes, formats, validation. Pure."""

from __future__ import annotations

from dataclasses import replace

from bridge.config import Config
from bridge.formats import address, kwtsms
from bridge.formats.alerts import AlertMail
from bridge.model import Draft, InboundMail, Problem, SmsRequest, Verdict
from bridge.routing import route_for
from bridge.validate import validate

DEFAULT_ADDRESS_PAGES = 1


def decide(mail: InboundMail, config: Config, found: AlertMail | None = None) -> Verdict:
    """Every SMS ``mail`` asks for, or every problem with it. ``found``: alerts already
    read (from a webhook), used instead of reading the mail with the route's profile."""
    problems: list[Problem] = []
    warnings: list[str] = list(mail.notes)
    requests: list[SmsRequest] = []
    if not mail.rcpt_tos:
        problems.append(Problem("recipient", "the mail has no recipient"))
    by_route: dict[str, list[str]] = {}
    for rcpt in mail.rcpt_tos:
        served = route_for(rcpt, config)
        if served is None:
            problems.append(Problem("recipient", f"{rcpt} is not an address this bridge serves"))
        else:
            by_route.setdefault(served[0], []).append(rcpt)
    for name, rcpts in by_route.items():
        route = config.routes[name]
        account = config.accounts[route.account]
        draft: Draft
        if route.format == "kwtsms":
            if not mail.body.strip():
                problems.append(
                    Problem("body", "the mail has no text body; write the KwtSMS fields (mobile:, text:, ...) in it")
                )
                continue
            draft = replace(kwtsms.parse(mail.body, name, plus_as_space=route.plus_as_space), digest=route.digests())
        else:
            draft = address.parse(
                mail,
                name,
                rcpts,
                aliases=config.aliases,
                template=route.template,
                sender=route.sender,
                max_pages=route.max_pages or DEFAULT_ADDRESS_PAGES,
                profile=route.profile,
                digest=route.digests(),
                found=found,
            )
        outcome = validate(draft, account_name=route.account, account=account, route=route, numbers=config.numbers)
        problems.extend(outcome.problems)
        warnings.extend(outcome.warnings)
        if outcome.request is not None:
            requests.append(outcome.request)
    if problems:
        return Verdict((), tuple(problems), tuple(warnings))
    return Verdict(tuple(requests), (), tuple(warnings))
