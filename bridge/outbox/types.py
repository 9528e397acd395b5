"""The outbox's value types and the :class:`Outbox` protocol every backend implements."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from bridge.core.encoding import measure
from bridge.core.model import SmsRequest
from bridge.outbox.states import Notice, State

MAX_GROUP_NUMBERS = 200

#: an IMAP message's identity: (mailbox name, UIDVALIDITY, UID)
ImapKey = tuple[str, int, int]


@dataclass(frozen=True)
class Origin:
    """Where a mail came from, as the outbox records it for logs, notices and ``queue show``."""

    via: str
    mail_from: str
    rcpts: tuple[str, ...]
    message_id: str
    subject: str
    #: the client (``clients.<name>``) it came from
    client: str = field(default="", kw_only=True)
    #: what was odd but not fatal at intake (emoji removed, lines ignored, ...)
    warnings: tuple[str, ...] = field(default=(), kw_only=True)


@dataclass(frozen=True)
class Accepted(Origin):
    """A mail the bridge decided to send: what the outbox stores in one transaction."""

    requests: tuple[SmsRequest, ...]
    #: identifies a resubmission of the same mail (None: do not deduplicate)
    fingerprint: str | None = None
    #: seconds only the accepting bridge may send these SMS: its SMTP session waits for their
    #: first outcome (``ack: delivered``); then any bridge sharing the outbox may
    keep: float = 0.0


@dataclass(frozen=True)
class Rejection(Origin):
    """A mail taken from a mailbox and refused: its sender is told why by notice."""

    problems: tuple[tuple[str, str], ...]
    notify: bool


@dataclass(frozen=True)
class Refusal:
    """Mail refused on the spot (a 5xx at RCPT, MAIL or DATA): who, what, why. Repeats of the
    same address and reason are one row, counted (``times``), seen first and last at."""

    via: str
    stage: str
    peer: str
    client: str
    mail_from: str
    address: str
    reason: str
    first_at: float = 0.0
    last_at: float = 0.0
    times: int = 1


@dataclass(frozen=True)
class RejectionRow:
    id: str
    created: float
    origin: Origin
    problems: tuple[tuple[str, str], ...]
    notice: Notice
    operator: Notice


@dataclass(frozen=True)
class Delivery:
    """What became of one SMS so far."""

    state: State
    attempts: int
    next_attempt: float
    last_error: str
    last_code: str
    provider_reply: str
    provider_msg_id: str
    points_charged: int | None
    balance_after: float | None
    confirmed: bool | None
    notice: Notice
    #: the id of the row whose SMS carried this one in a digest ("" when it went alone)
    carrier: str
    #: the operator's notice (``notify.operator``), batched: unknown outcomes, and
    #: failures whose sender cannot be answered
    operator: Notice
    #: accounts that definitely did not send it, before the one it is on now
    tried: tuple[str, ...]
    #: the instance that claimed it, and until when that claim holds unless renewed
    claimed_by: str = ""
    lease_until: float | None = None
    #: goes up by one at each claim: only the holder of the current value may send it
    fence: int = 0


@dataclass(frozen=True)
class Row:
    """One SMS in the outbox: where its mail came from, what to send, and how it went."""

    id: str
    mail_id: str
    created: float
    updated: float
    origin: Origin
    request: SmsRequest
    delivery: Delivery


@dataclass(frozen=True)
class Search:
    """A filter over the outbox, for the status page; every value is bound as a parameter."""

    state: State | None = None
    route: str | None = None
    client: str | None = None
    #: accepted at or after / before (Unix time)
    since: float | None = None
    until: float | None = None
    #: an id (or its start), a Message-ID, a sender address, or words of the SMS text
    text: str = ""
    #: digits of a phone number (``96597119440``, or a part of one): any SMS to a number holding them
    number: str = ""
    limit: int = 100


@dataclass(frozen=True)
class Event:
    """One line of a message's history."""

    at: float
    event: str
    detail: str
    actor: str


@dataclass(frozen=True)
class Enqueued:
    mail_id: str
    ids: tuple[str, ...]
    duplicate: bool = False


@dataclass
class Group:
    """Rows the dispatcher sends in one provider call: the same text to disjoint
    numbers (combined), or several alerts to the same numbers in one text (a digest)."""

    rows: list[Row] = field(default_factory=list)
    #: the digest's text, when the rows are alerts merged into one SMS
    digest: str | None = None

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    def request(self) -> SmsRequest:
        """One provider call for every row."""
        first = self.rows[0].request
        if self.digest is not None:
            size = measure(self.digest)
            lang = 1 if size.encoding == "gsm7" else (first.lang if first.lang in (2, 3, 4) else 3)
            return replace(
                first,
                text=self.digest,
                lang=lang,
                encoding=size.encoding,
                pages=size.pages,
                points=size.pages * len(first.numbers),
            )
        numbers = tuple(n for r in self.rows for n in r.request.numbers)
        return replace(first, numbers=numbers, points=first.pages * len(numbers))

    def charges(self) -> dict[str, int]:
        """Points each row is charged: a digest's all on the row that led it."""
        if self.digest is not None:
            return {r.id: self.request().points if i == 0 else 0 for i, r in enumerate(self.rows)}
        return {r.id: r.request.pages * len(r.request.numbers) for r in self.rows}


@dataclass(frozen=True)
class Pacing:
    """How an account spaces SMS to one number, and how large its digests may be."""

    #: seconds between two SMS to the same number (0: no spacing)
    interval: float = 0.0
    #: pages a digest may use, by route (routes not listed: ``default_pages``)
    digest_pages: Mapping[str, int] = field(default_factory=dict)
    default_pages: int = 6


class Leadership:
    """One instance at a time does this (watches a mailbox, sends notices): ``held``
    is set while this instance does, ``lost`` when it stopped being sure it does."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.held = asyncio.Event()
        self.lost = asyncio.Event()

    def take(self) -> None:
        self.lost.clear()
        self.held.set()

    def drop(self) -> None:
        if self.held.is_set():
            self.held.clear()
            self.lost.set()


def new_mail_id() -> str:
    """Time-ordered, 22 characters: milliseconds in hex, then 40 random bits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


def batch_key(request: SmsRequest) -> str:
    raw = "\x00".join([request.sender, str(request.lang), request.text])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]
