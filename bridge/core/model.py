"""Frozen values that flow through the pipeline. No I/O here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Encoding = Literal["gsm7", "ucs2"]


@dataclass(frozen=True)
class Problem:
    """One reason a message or a config cannot be used, named by its field."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class InboundMail:
    """A mail as the bridge reads it: envelope, headers and one text body."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    subject: str
    body: str
    from_header: str = ""
    message_id: str = ""
    #: how the body was found ("text/plain", "text/html", "" if there was none)
    body_source: str = ""
    #: things that were odd but not fatal (bad charset, unreadable part, ...)
    notes: tuple[str, ...] = ()
    #: the ``X-Cron-Env`` headers cron writes (``<SHELL=/bin/sh>``, ...): the mail is cron's
    cron_env: tuple[str, ...] = ()


@dataclass(frozen=True)
class Credentials:
    """Provider credentials that came in a mail body. Never printed."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"


@dataclass(frozen=True)
class SmsRequest:
    """A validated SMS, ready for the outbox: what will be sent and what it costs."""

    route: str
    account: str
    provider: str
    sender: str
    numbers: tuple[str, ...]
    text: str
    #: KwtSMS ``lang``: 1 English, 2 Arabic (Windows-1256), 3 Arabic (UTF-8), 4 Unicode
    lang: int
    encoding: Encoding
    pages: int
    points: int
    credentials: Credentials | None = None
    #: may be merged with other alerts to the same phones into one SMS (a digest)
    digest: bool = False
    #: the alert's line in a digest (state, host, name); "" for the text itself
    brief: str = ""
    #: pairs a problem with its resolution in a digest ("" for none)
    alert_key: str = ""
    resolved: bool = False
    #: accounts to try next, in order, if this one definitely does not send
    fallbacks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What the bridge decided about one mail: the SMS to send, or every problem."""

    requests: tuple[SmsRequest, ...] = ()
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems and bool(self.requests)


@dataclass(frozen=True)
class Draft:
    """What an input format read from a mail, before validation."""

    route: str
    numbers: tuple[str, ...]
    #: the field numbers came from: ``mobile`` (KwtSMS body) or ``recipient``
    numbers_field: str
    text: str | None
    sender: str | None = None
    lang: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    #: cut the text to this many pages instead of rejecting it (address format)
    trim_pages: int | None = None
    #: fold typographic punctuation to GSM look-alikes when that keeps the text GSM-7
    fold_gsm: bool = False
    digest: bool = False
    brief: str = ""
    alert_key: str = ""
    resolved: bool = False
    problems: tuple[Problem, ...] = ()
    warnings: tuple[str, ...] = ()
