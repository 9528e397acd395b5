"""One mail → a :class:`~bridge.core.model.Verdict`: routes, formats, validation. Pure."""

from __future__ import annotations

from dataclasses import replace

from bridge.config import Config, RouteConfig
from bridge.core import phone
from bridge.core.formats import address, kwtsms
from bridge.core.formats.alerts import AlertMail
from bridge.core.model import Draft, InboundMail, Problem, SmsRequest, Verdict
from bridge.core.routing import resolve, route_for
from bridge.core.validate import validate

DEFAULT_ADDRESS_PAGES = 1


def split_by_account(
    draft: Draft, route: RouteConfig, config: Config
) -> tuple[dict[tuple[str, tuple[str, ...]], Draft], list[Problem]]:
    """The draft's numbers by the route's routing rules: one draft per (account, fallbacks),
    and a problem for each number no rule takes. A number that is not valid goes with the
    first rule's account, whose validation then says what is wrong with it."""
    rules = route.rules()
    if len(rules) == 1 and rules[0].default:
        return {(rules[0].account, tuple(rules[0].fallback or ())): draft}, []
    groups: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    problems: list[Problem] = []
    for raw in draft.numbers:
        found = phone.normalise(raw, config.numbers.default_region, strict=config.numbers.strict)
        if found.number is None:
            rule = next((r for r in rules if r.default), rules[0])
        else:
            matched = next((r for r in rules if r.matches(found.number, found.region)), None)
            if matched is None:
                problems.append(
                    Problem(
                        draft.numbers_field,
                        f"{raw!r} matches no routing rule of route {draft.route}, which has no default",
                    )
                )
                continue
            rule = matched
        groups.setdefault((rule.account, tuple(rule.fallback or ())), []).append(raw)
    return {key: replace(draft, numbers=tuple(numbers)) for key, numbers in groups.items()}, problems


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
            by_route.setdefault(served[0], []).append(resolve(rcpt, config))
    for name, rcpts in by_route.items():
        route = config.routes[name]
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
        groups, unrouted = split_by_account(draft, route, config)
        problems.extend(unrouted)
        for (account_name, fallbacks), part in groups.items():
            outcome = validate(
                part,
                account_name=account_name,
                account=config.accounts[account_name],
                route=route,
                numbers=config.numbers,
            )
            named = len(groups) > 1
            problems.extend(
                Problem(p.field, f"{p.message} (account {account_name})") if named else p for p in outcome.problems
            )
            warnings.extend(w for w in outcome.warnings if w not in warnings)
            if outcome.request is not None:
                requests.append(replace(outcome.request, fallbacks=fallbacks))
    if problems:
        return Verdict((), tuple(problems), tuple(warnings))
    return Verdict(tuple(requests), (), tuple(warnings))
