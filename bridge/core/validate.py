"""Validation: a :class:`~bridge.core.model.Draft` → an :class:`SmsRequest` or every problem. Pure.

Each problem names its field (``mobile``, ``recipient``, ``sender``,
``lang``, ``text``, ``username``, ``password``) and says in plain words what
is wrong and, where it can, what to do instead.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass

from bridge.config import AccountConfig, NumbersConfig, RouteConfig
from bridge.core import encoding, phone
from bridge.core.model import Credentials, Draft, Problem, SmsRequest

_SENDER_CHARS = re.compile(r"[A-Za-z0-9 .\-_&]+")
LANG_NAMES = {1: "English", 2: "Arabic (Windows-1256)", 3: "Arabic (UTF-8)", 4: "Unicode"}


@dataclass(frozen=True)
class Outcome:
    request: SmsRequest | None
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]


def _numbers(draft: Draft, account: AccountConfig, numbers: NumbersConfig, problems: list[Problem]) -> list[str]:
    field = draft.numbers_field
    if not draft.numbers:
        hint = "add a line like mobile:96597119440" if field == "mobile" else "address the mail to <number>@..."
        problems.append(Problem(field, f"no phone number given; {hint}"))
        return []
    out: dict[str, None] = {}
    for raw in draft.numbers:
        result = phone.normalise(raw, numbers.default_region, strict=numbers.strict)
        if result.number is None:
            problems.append(Problem(field, f"{raw!r} {result.problem}"))
            continue
        if "*" not in account.countries and result.region not in account.countries:
            allowed = ", ".join(account.countries)
            problems.append(
                Problem(
                    field,
                    f"{raw!r} is a number in {result.region or 'an unknown country'}; this account sends only to {allowed}",
                )
            )
            continue
        out.setdefault(result.number)
    if len(out) > account.max_numbers:
        problems.append(
            Problem(field, f"{len(out)} numbers given; at most {account.max_numbers} are allowed in one message")
        )
    return list(out)


def _clean_text(draft: Draft, account: AccountConfig, problems: list[Problem], warnings: list[str]) -> str | None:
    text = draft.text
    if text is None:
        problems.append(Problem("text", "missing; add a line like text:your message"))
        return None
    tags = encoding.html_tags_in(text)
    if tags:
        if account.html == "reject":
            problems.append(
                Problem("text", f"contains HTML tags ({tags[0]}), which the provider refuses; send plain text")
            )
        else:
            text = encoding.strip_html_tags(text)
            warnings.append(f"text: HTML tags removed ({tags[0]}...)")
    text, angled = encoding.defuse_angles(text)
    if angled:
        warnings.append(
            f"text: angle brackets written as parentheses ({angled[0]}...): the provider refuses text that looks like HTML"
        )
    emoji = encoding.emoji_in(text)
    if emoji:
        if account.emoji == "reject":
            problems.append(
                Problem("text", f"contains emoji ({encoding.describe_chars(emoji, 3)}), which SMS cannot carry here")
            )
        else:
            text = encoding.strip_emoji(text)
            warnings.append(f"text: emoji removed ({encoding.describe_chars(emoji, 3)}): SMS cannot carry them")
    text = text.strip()
    if not text:
        problems.append(Problem("text", "is empty; write the message after text:"))
        return None
    return text


def _lang(draft: Draft, text: str, problems: list[Problem]) -> int:
    gsm = encoding.is_gsm7(text)
    detected = 1 if gsm else 3
    if draft.lang is None or not draft.lang.strip():
        return detected
    raw = draft.lang.strip()
    if raw not in ("1", "2", "3", "4"):
        problems.append(
            Problem(
                "lang",
                f"{raw!r} is not a language; use 1 (English), 2 (Arabic, Windows), 3 (Arabic, UTF-8) or 4 (Unicode), or leave lang out",
            )
        )
        return detected
    lang = int(raw)
    if lang == 1 and not gsm:
        if encoding.has_arabic(text):
            problems.append(Problem("lang", "is 1 (English) but the text is in Arabic; use lang:3, or leave lang out"))
        else:
            bad = encoding.describe_chars(encoding.non_gsm7_chars(text))
            problems.append(
                Problem(
                    "lang",
                    f"is 1 (English) but the text has characters English SMS cannot carry: {bad}; use lang:4 or remove them",
                )
            )
    if lang == 2:
        bad_chars = encoding.cp1256_unencodable(text)
        if bad_chars:
            problems.append(
                Problem(
                    "lang",
                    f"is 2 (Arabic, Windows-1256), which cannot carry {encoding.describe_chars(bad_chars)}; use lang:3",
                )
            )
    if gsm:
        return 1  # plain GSM text travels cheapest as English, whatever lang said
    return lang if lang in (2, 4) else 3


def _sender(draft: Draft, route: RouteConfig, account: AccountConfig, problems: list[Problem]) -> str:
    sender = draft.sender or route.sender or account.sender
    if not sender:
        problems.append(Problem("sender", "missing; add a line like sender:YOUR-ID (no default sender is configured)"))
        return ""
    if len(sender) > 11:
        problems.append(Problem("sender", f"{sender!r} is {len(sender)} characters long; a sender ID has at most 11"))
    if not _SENDER_CHARS.fullmatch(sender):
        problems.append(Problem("sender", f"{sender!r} may use only English letters, digits, spaces and - . _ &"))
    if account.senders is not None and sender not in account.senders:
        same = [s for s in account.senders if s.lower() == sender.lower()]
        if same:
            problems.append(
                Problem(
                    "sender", f"{sender!r} is not allowed; sender IDs are case sensitive: did you mean {same[0]!r}?"
                )
            )
        else:
            problems.append(
                Problem("sender", f"{sender!r} is not one of this account's sender IDs ({', '.join(account.senders)})")
            )
    return sender


def _credentials(
    draft: Draft, route: RouteConfig, account: AccountConfig, problems: list[Problem], warnings: list[str]
) -> Credentials | None:
    mode = route.body_credentials
    given = draft.username is not None or draft.password is not None
    if mode == "account":
        if given:
            warnings.append(
                "username/password lines ignored: this bridge sends with its own account; remove them from your mail"
            )
        return None
    if mode == "forbid":
        if draft.password is not None:
            problems.append(
                Problem(
                    "password",
                    "passwords are not accepted in mail here; remove the password line (the bridge uses its own account)",
                )
            )
        elif draft.username is not None:
            warnings.append("username line ignored: this bridge sends with its own account")
        return None
    for key in ("username", "password"):
        if not getattr(draft, key):
            problems.append(Problem(key, f"missing; this route needs the account's {key} in the mail"))
    if not draft.username or not draft.password:
        return None
    if mode == "verify":
        want_user = account.username or ""
        want_pass = account.password.get_secret_value() if account.password else ""
        user_ok = hmac.compare_digest(draft.username.encode(), want_user.encode())
        pass_ok = hmac.compare_digest(draft.password.encode(), want_pass.encode())
        if not (user_ok and pass_ok):
            problems.append(Problem("password", "the username and password in the mail do not match the account"))
        return None
    return Credentials(draft.username, draft.password)


def validate(
    draft: Draft,
    *,
    account_name: str,
    account: AccountConfig,
    route: RouteConfig,
    numbers: NumbersConfig,
) -> Outcome:
    """Every problem with ``draft``, or the request it becomes."""
    problems = list(draft.problems)
    warnings = list(draft.warnings)
    found = _numbers(draft, account, numbers, problems)
    text = _clean_text(draft, account, problems, warnings)
    sender = _sender(draft, route, account, problems)
    credentials = _credentials(draft, route, account, problems, warnings)
    if text is None:
        return Outcome(None, tuple(problems), tuple(warnings))
    brief = draft.brief
    if draft.fold_gsm:
        text, folded = encoding.fold_to_gsm(text)
        if folded:
            warnings.append(
                f"text: typographic characters replaced by plain ones to keep the SMS at 160 characters a page "
                f"({encoding.describe_chars(folded, 4)})"
            )
            brief = encoding.fold_to_gsm(encoding.strip_emoji(brief))[0]
    lang = _lang(draft, text, problems)
    if draft.trim_pages is not None:
        trimmed = encoding.trim_to_pages(text, draft.trim_pages)
        if trimmed != text:
            warnings.append(f"text cut to {draft.trim_pages} page(s), ending in '...'")
            text = trimmed
    measured = encoding.measure(text)
    if measured.pages > account.max_pages:
        kind = "English (GSM)" if measured.encoding == "gsm7" else "Unicode/Arabic"
        per = encoding.MULTI_PAGE[measured.encoding]
        problems.append(
            Problem(
                "text",
                f"is {measured.pages} pages long ({measured.units} {kind} characters, {per} per page); "
                f"at most {account.max_pages} pages are allowed",
            )
        )
    if problems:
        return Outcome(None, tuple(problems), tuple(warnings))
    request = SmsRequest(
        route=draft.route,
        account=account_name,
        provider=account.provider,
        sender=sender,
        numbers=tuple(found),
        text=text,
        lang=lang,
        encoding=measured.encoding,
        pages=measured.pages,
        points=measured.pages * len(found),
        credentials=credentials,
        digest=draft.digest and credentials is None,
        brief=brief,
        alert_key=draft.alert_key,
        resolved=draft.resolved,
    )
    return Outcome(request, (), tuple(warnings))
