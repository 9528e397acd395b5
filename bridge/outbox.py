"""The outbox: every accepted SMS, durably, with its state and history.

SQLite in WAL mode with ``synchronous=FULL``: a message is acknowledged only
after its rows are committed and the WAL is synced. Every database operation
runs on one writer thread; operations that arrive while a transaction is being
committed are grouped into the next one, so one fsync serves many SMTP
sessions (group commit) and nothing blocks the event loop.

States::

    queued ──► claimed ──► sending ──► sent
       ▲          │           ├──────► failed     (permanent; notice to sender)
       └──────────┘           ├──────► unknown    (may have been sent; not resent)
     (retry, or restart)      └──► queued (transient: retry later) ──► expired

``claimed`` rows are reserved by a dispatcher but not yet handed to a
provider; a restart puts them back to ``queued``. ``sending`` rows were handed
over; a restart makes them ``unknown`` (or ``queued`` for accounts that opted
in to at-least-once). Body credentials (``passthrough``) are erased as soon as
a row reaches a final state.

The operations are plain functions of a connection (``op_*``) so that the
``sms-bridge queue`` commands use exactly the same SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from bridge.errors import BridgeError
from bridge.model import Credentials, SmsRequest

T = TypeVar("T")

#: erasing body credentials leaves an empty user name as a mark that there were some
ERASED = "cred_user = CASE WHEN cred_user IS NULL THEN NULL ELSE '' END, cred_pass = NULL"
FINAL_STATES = ("sent", "failed", "unknown", "expired", "cancelled")
STATES = ("queued", "claimed", "sending", *FINAL_STATES)
MAX_GROUP_NUMBERS = 200

SCHEMA = """
CREATE TABLE IF NOT EXISTS sms (
    id TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    route TEXT NOT NULL,
    account TEXT NOT NULL,
    provider TEXT NOT NULL,
    sender TEXT NOT NULL,
    numbers TEXT NOT NULL,
    text TEXT NOT NULL,
    lang INTEGER NOT NULL,
    encoding TEXT NOT NULL,
    pages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    batch_key TEXT NOT NULL,
    cred_user TEXT,
    cred_pass TEXT,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error TEXT NOT NULL DEFAULT '',
    last_code TEXT NOT NULL DEFAULT '',
    provider_reply TEXT NOT NULL DEFAULT '',
    provider_msg_id TEXT NOT NULL DEFAULT '',
    points_charged INTEGER,
    balance_after REAL,
    confirmed INTEGER,
    notice TEXT NOT NULL DEFAULT 'none'
);
CREATE INDEX IF NOT EXISTS sms_due ON sms(account, next_attempt) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sms_batch ON sms(account, batch_key, next_attempt) WHERE state = 'queued';
CREATE INDEX IF NOT EXISTS sms_mail ON sms(mail_id);
CREATE INDEX IF NOT EXISTS sms_state ON sms(state, updated);
CREATE INDEX IF NOT EXISTS sms_notice ON sms(notice) WHERE notice = 'pending';
CREATE TABLE IF NOT EXISTS seen (
    fingerprint TEXT PRIMARY KEY,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS imap_seen (
    mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    mail_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (mailbox, uidvalidity, uid)
);
CREATE TABLE IF NOT EXISTS rejections (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,
    via TEXT NOT NULL,
    mail_from TEXT NOT NULL,
    rcpts TEXT NOT NULL,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    problems TEXT NOT NULL,
    notice TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rejections_notice ON rejections(notice) WHERE notice = 'pending';
CREATE TABLE IF NOT EXISTS usage (
    scope TEXT NOT NULL,
    window TEXT NOT NULL,
    bucket INTEGER NOT NULL,
    messages INTEGER NOT NULL,
    points INTEGER NOT NULL,
    PRIMARY KEY (scope, window, bucket)
);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    balance REAL NOT NULL,
    at REAL NOT NULL
);
"""

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}

#: an IMAP message's identity: (mailbox name, UIDVALIDITY, UID)
ImapKey = tuple[str, int, int]


class OutboxError(BridgeError):
    """The outbox cannot store or read messages (disk full, database broken)."""


class LimitExceeded(BridgeError):
    """A client or account has used up a limit; nothing was stored."""

    def __init__(self, scope: str, what: str, limit: int, window: str) -> None:
        self.scope = scope
        self.hard = window == "day"
        super().__init__(f"{scope} has reached its limit of {limit} {what} per {window}")


@dataclass(frozen=True)
class Origin:
    """Where a mail came from, as the outbox records it for logs, notices and ``queue show``."""

    via: str
    mail_from: str
    rcpts: tuple[str, ...]
    message_id: str
    subject: str


@dataclass(frozen=True)
class Accepted(Origin):
    """A mail the bridge decided to send: what the outbox stores in one transaction."""

    requests: tuple[SmsRequest, ...]
    #: identifies a resubmission of the same mail (None: do not deduplicate)
    fingerprint: str | None = None


@dataclass(frozen=True)
class Row:
    id: str
    mail_id: str
    created: float
    updated: float
    via: str
    mail_from: str
    rcpts: tuple[str, ...]
    message_id: str
    subject: str
    route: str
    account: str
    provider: str
    sender: str
    numbers: tuple[str, ...]
    text: str
    lang: int
    encoding: str
    pages: int
    points: int
    credentials: Credentials | None
    state: str
    attempts: int
    next_attempt: float
    last_error: str
    last_code: str
    provider_reply: str
    provider_msg_id: str
    points_charged: int | None
    balance_after: float | None
    confirmed: bool | None
    notice: str

    def request(self) -> SmsRequest:
        return SmsRequest(
            route=self.route,
            account=self.account,
            provider=self.provider,
            sender=self.sender,
            numbers=self.numbers,
            text=self.text,
            lang=self.lang,
            encoding=self.encoding,  # type: ignore[arg-type]  # stored from an Encoding
            pages=self.pages,
            points=self.points,
            credentials=self.credentials,
        )


@dataclass(frozen=True)
class Enqueued:
    mail_id: str
    ids: tuple[str, ...]
    duplicate: bool = False


@dataclass
class Group:
    """Rows the dispatcher sends in one provider call (same text, disjoint numbers)."""

    rows: list[Row] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [r.id for r in self.rows]

    def request(self) -> SmsRequest:
        """One provider call for every row: the first row's SMS, with all the rows' numbers."""
        numbers = tuple(n for r in self.rows for n in r.numbers)
        first = self.rows[0].request()
        return replace(first, numbers=numbers, points=first.pages * len(numbers))


def new_mail_id() -> str:
    """Time-ordered, 22 characters: milliseconds in hex, then 40 random bits."""
    return f"{int(time.time() * 1000):012x}{secrets.token_hex(5)}"


def batch_key(request: SmsRequest) -> str:
    raw = "\x00".join([request.sender, str(request.lang), request.text])
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:32]


def _row(rec: sqlite3.Row) -> Row:
    # an empty user name marks credentials that were erased (see ERASED)
    creds = Credentials(rec["cred_user"], rec["cred_pass"] or "") if rec["cred_user"] is not None else None
    return Row(
        id=rec["id"],
        mail_id=rec["mail_id"],
        created=rec["created"],
        updated=rec["updated"],
        via=rec["via"],
        mail_from=rec["mail_from"],
        rcpts=tuple(filter(None, rec["rcpts"].split(","))),
        message_id=rec["message_id"],
        subject=rec["subject"],
        route=rec["route"],
        account=rec["account"],
        provider=rec["provider"],
        sender=rec["sender"],
        numbers=tuple(rec["numbers"].split(",")),
        text=rec["text"],
        lang=rec["lang"],
        encoding=rec["encoding"],
        pages=rec["pages"],
        points=rec["points"],
        credentials=creds,
        state=rec["state"],
        attempts=rec["attempts"],
        next_attempt=rec["next_attempt"],
        last_error=rec["last_error"],
        last_code=rec["last_code"],
        provider_reply=rec["provider_reply"],
        provider_msg_id=rec["provider_msg_id"],
        points_charged=rec["points_charged"],
        balance_after=rec["balance_after"],
        confirmed=None if rec["confirmed"] is None else bool(rec["confirmed"]),
        notice=rec["notice"],
    )


def connect(path: str | Path) -> sqlite3.Connection:
    """A connection with the outbox's pragmas and schema."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA secure_delete=ON")  # erased body credentials are overwritten, not left in free space
    conn.executescript(SCHEMA)
    return conn


# -- operations (each runs inside a transaction the caller owns) ---------------


def op_imap_outcome(conn: sqlite3.Connection, key: ImapKey) -> tuple[str, str] | None:
    """(outcome, mail id) of an IMAP message already taken, or None."""
    rec = conn.execute(
        "SELECT outcome, mail_id FROM imap_seen WHERE mailbox = ? AND uidvalidity = ? AND uid = ?", key
    ).fetchone()
    return None if rec is None else (rec[0], rec[1])


def _mark_imap(conn: sqlite3.Connection, key: ImapKey | None, outcome: str, mail_id: str, now: float) -> None:
    if key is not None:
        conn.execute(
            "INSERT OR IGNORE INTO imap_seen (mailbox, uidvalidity, uid, outcome, mail_id, at) VALUES (?, ?, ?, ?, ?, ?)",
            (*key, outcome, mail_id, now),
        )


@dataclass(frozen=True)
class Rejection(Origin):
    """A mail taken from a mailbox and refused: its sender is told why by notice."""

    problems: tuple[tuple[str, str], ...]
    notify: bool


@dataclass(frozen=True)
class RejectionRow:
    id: str
    created: float
    via: str
    mail_from: str
    rcpts: tuple[str, ...]
    message_id: str
    subject: str
    problems: tuple[tuple[str, str], ...]
    notice: str


def op_reject(conn: sqlite3.Connection, rejection: Rejection, now: float, key: ImapKey | None = None) -> str:
    """Record a refused mail (and its IMAP identity) in one transaction; its id."""
    rejection_id = new_mail_id()
    conn.execute(
        """INSERT INTO rejections (id, created, via, mail_from, rcpts, message_id, subject, problems, notice)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (
            rejection_id,
            now,
            rejection.via,
            rejection.mail_from,
            ",".join(rejection.rcpts),
            rejection.message_id,
            rejection.subject[:500],
            json.dumps([list(p) for p in rejection.problems]),
            "pending" if rejection.notify else "skipped",
        ),
    )
    _mark_imap(conn, key, "rejected", rejection_id, now)
    return rejection_id


def op_pending_rejections(conn: sqlite3.Connection, limit: int = 50) -> list[RejectionRow]:
    recs = conn.execute("SELECT * FROM rejections WHERE notice = 'pending' ORDER BY created LIMIT ?", (limit,))
    return [
        RejectionRow(
            id=r["id"],
            created=r["created"],
            via=r["via"],
            mail_from=r["mail_from"],
            rcpts=tuple(filter(None, r["rcpts"].split(","))),
            message_id=r["message_id"],
            subject=r["subject"],
            problems=tuple((str(f), str(m)) for f, m in json.loads(r["problems"])),
            notice=r["notice"],
        )
        for r in recs
    ]


def op_set_rejection_notice(conn: sqlite3.Connection, ids: Sequence[str], notice: str) -> None:
    conn.executemany("UPDATE rejections SET notice = ? WHERE id = ?", [(notice, i) for i in ids])


def op_use(conn: sqlite3.Connection, scopes: Sequence[tuple[str, Any]], messages: int, points: int, now: float) -> None:
    """Count ``messages`` and ``points`` against each scope's limits (a ``LimitsConfig``),
    or raise :class:`LimitExceeded` without counting anything."""
    counted = []
    for scope, limits in scopes:
        for window, size in WINDOWS.items():
            bucket = int(now // size)
            rec = conn.execute(
                "SELECT messages, points FROM usage WHERE scope = ? AND window = ? AND bucket = ?",
                (scope, window, bucket),
            ).fetchone()
            used = {"messages": rec[0] if rec else 0, "points": rec[1] if rec else 0}
            for what, amount in (("messages", messages), ("points", points)):
                limit = getattr(limits, f"{what}_per_{window}")
                if limit is not None and used[what] + amount > limit:
                    raise LimitExceeded(scope, what, limit, window)
            counted.append((scope, window, bucket))
    conn.executemany(
        """INSERT INTO usage (scope, window, bucket, messages, points) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (scope, window, bucket) DO UPDATE
           SET messages = messages + excluded.messages, points = points + excluded.points""",
        [(scope, window, bucket, messages, points) for scope, window, bucket in counted],
    )


def op_prune_usage(conn: sqlite3.Connection, now: float) -> int:
    return (
        conn.execute("DELETE FROM usage WHERE window != 'day' AND bucket < ?", (int(now // 3600) - 2,)).rowcount
        + conn.execute("DELETE FROM usage WHERE window = 'day' AND bucket < ?", (int(now // 86400) - 2,)).rowcount
    )


def op_record_balance(conn: sqlite3.Connection, account: str, balance: float, now: float) -> float | None:
    """Store the balance a provider reported; the one known before."""
    rec = conn.execute("SELECT balance FROM balances WHERE account = ?", (account,)).fetchone()
    conn.execute(
        "INSERT INTO balances (account, balance, at) VALUES (?, ?, ?) "
        "ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, at = excluded.at",
        (account, balance, now),
    )
    return None if rec is None else float(rec[0])


def op_balances(conn: sqlite3.Connection) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute("SELECT account, balance FROM balances")}


def op_enqueue(
    conn: sqlite3.Connection,
    accepted: Accepted,
    now: float,
    dedupe_window: float,
    key: ImapKey | None = None,
    usage: Sequence[tuple[str, Any]] = (),
) -> Enqueued:
    """Store the mail's rows (and its IMAP identity) in one transaction, unless it was seen."""
    if key is not None:
        seen = op_imap_outcome(conn, key)
        if seen is not None:
            known = tuple(r[0] for r in conn.execute("SELECT id FROM sms WHERE mail_id = ? ORDER BY id", (seen[1],)))
            return Enqueued(seen[1], known, duplicate=True)
    if accepted.fingerprint is not None:
        rec = conn.execute(
            "SELECT mail_id FROM seen WHERE fingerprint = ? AND at > ?", (accepted.fingerprint, now - dedupe_window)
        ).fetchone()
        if rec is not None:
            known = tuple(r[0] for r in conn.execute("SELECT id FROM sms WHERE mail_id = ? ORDER BY id", (rec[0],)))
            _mark_imap(conn, key, "duplicate", rec[0], now)
            return Enqueued(rec[0], known, duplicate=True)
    if usage:
        messages = sum(len(r.numbers) for r in accepted.requests)
        op_use(conn, usage, messages, sum(r.points for r in accepted.requests), now)
    mail_id = new_mail_id()
    while conn.execute("SELECT 1 FROM sms WHERE mail_id = ? LIMIT 1", (mail_id,)).fetchone():
        mail_id = new_mail_id()  # a collision is astronomically rare; never fail a commit for it
    ids: list[str] = []
    for n, request in enumerate(accepted.requests, start=1):
        row_id = mail_id if len(accepted.requests) == 1 else f"{mail_id}.{n}"
        creds = request.credentials
        conn.execute(
            """INSERT INTO sms (id, mail_id, created, updated, via, mail_from, rcpts, message_id, subject, route,
                   account, provider, sender, numbers, text, lang, encoding, pages, points, batch_key,
                   cred_user, cred_pass, state, next_attempt)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)""",
            (
                row_id,
                mail_id,
                now,
                now,
                accepted.via,
                accepted.mail_from,
                ",".join(accepted.rcpts),
                accepted.message_id,
                accepted.subject[:500],
                request.route,
                request.account,
                request.provider,
                request.sender,
                ",".join(request.numbers),
                request.text,
                request.lang,
                request.encoding,
                request.pages,
                request.points,
                batch_key(request),
                creds.username if creds else None,
                creds.password if creds else None,
                now,
            ),
        )
        ids.append(row_id)
    if accepted.fingerprint is not None:
        conn.execute(
            "INSERT OR REPLACE INTO seen (fingerprint, mail_id, at) VALUES (?, ?, ?)",
            (accepted.fingerprint, mail_id, now),
        )
    _mark_imap(conn, key, "queued", mail_id, now)
    return Enqueued(mail_id, tuple(ids))


def op_claim(conn: sqlite3.Connection, account: str, now: float, combine: bool = True) -> Group:
    """Reserve the most overdue row of ``account`` and, when ``combine``, others with
    the same sender, language and text whose numbers do not overlap (≤ 200 numbers)."""
    first = conn.execute(
        "SELECT * FROM sms WHERE state = 'queued' AND account = ? AND next_attempt <= ? ORDER BY next_attempt LIMIT 1",
        (account, now),
    ).fetchone()
    if first is None:
        return Group()
    group = Group([_row(first)])
    numbers = set(group.rows[0].numbers)
    if combine and first["cred_user"] is None and len(numbers) < MAX_GROUP_NUMBERS:
        for rec in conn.execute(
            """SELECT * FROM sms WHERE state = 'queued' AND account = ? AND batch_key = ? AND next_attempt <= ?
               AND id != ? ORDER BY next_attempt LIMIT 400""",
            (account, first["batch_key"], now, first["id"]),
        ):
            row = _row(rec)
            if row.credentials is not None or row.sender != group.rows[0].sender or row.text != group.rows[0].text:
                continue
            if numbers.intersection(row.numbers) or len(numbers) + len(row.numbers) > MAX_GROUP_NUMBERS:
                continue
            group.rows.append(row)
            numbers.update(row.numbers)
            if len(numbers) >= MAX_GROUP_NUMBERS:
                break
    conn.executemany("UPDATE sms SET state = 'claimed', updated = ? WHERE id = ?", [(now, i) for i in group.ids])
    return group


def op_mark_sending(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> None:
    conn.executemany(
        "UPDATE sms SET state = 'sending', attempts = attempts + 1, updated = ? WHERE id = ?", [(now, i) for i in ids]
    )


def op_unclaim(conn: sqlite3.Connection, ids: Sequence[str], now: float) -> None:
    conn.executemany(
        "UPDATE sms SET state = 'queued', updated = ? WHERE id = ? AND state = 'claimed'", [(now, i) for i in ids]
    )


def op_sent(
    conn: sqlite3.Connection,
    rows: Sequence[Row],
    now: float,
    *,
    msg_id: str,
    raw: str,
    balance_after: float | None,
    confirmed: bool,
) -> None:
    conn.executemany(
        f"""UPDATE sms SET state = 'sent', updated = ?, provider_msg_id = ?, provider_reply = ?, points_charged = ?,
               balance_after = ?, confirmed = ?, last_error = '', last_code = '',
               {ERASED}
           WHERE id = ?""",  # noqa: S608  (a constant, no input)
        [(now, msg_id, raw[:2000], r.pages * len(r.numbers), balance_after, int(confirmed), r.id) for r in rows],
    )


def op_retry_later(
    conn: sqlite3.Connection, schedule: Sequence[tuple[str, float]], now: float, *, error: str, code: str, raw: str
) -> None:
    """Back to the queue: each ``(id, when)`` is tried again at ``when``."""
    conn.executemany(
        """UPDATE sms SET state = 'queued', updated = ?, next_attempt = ?, last_error = ?, last_code = ?,
               provider_reply = ? WHERE id = ?""",
        [(now, when, error, code, raw[:2000], i) for i, when in schedule],
    )


def op_finish(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    now: float,
    *,
    state: str,
    error: str,
    code: str,
    raw: str,
    notice: str,
) -> None:
    """A final state other than sent; body credentials are erased."""
    conn.executemany(
        f"""UPDATE sms SET state = ?, updated = ?, last_error = ?, last_code = ?, provider_reply = ?, notice = ?,
               {ERASED} WHERE id = ?""",  # noqa: S608  (a constant, no input)
        [(state, now, error, code, raw[:2000], notice, i) for i in ids],
    )


def op_recover(conn: sqlite3.Connection, now: float, at_least_once: Sequence[str]) -> dict[str, int]:
    """At start-up: claimed rows go back to the queue; rows left ``sending`` by a crash
    become ``unknown``, or are queued again for accounts that opted in to at-least-once."""
    counts = {"requeued": 0, "unknown": 0, "resent": 0}
    counts["requeued"] = conn.execute(
        "UPDATE sms SET state = 'queued', updated = ? WHERE state = 'claimed'", (now,)
    ).rowcount
    marks = ",".join("?" * len(at_least_once))
    if at_least_once:
        counts["resent"] = conn.execute(
            f"UPDATE sms SET state = 'queued', updated = ?, next_attempt = ? WHERE state = 'sending' AND account IN ({marks})",  # noqa: S608  (placeholders only)
            (now, now, *at_least_once),
        ).rowcount
    counts["unknown"] = conn.execute(
        f"""UPDATE sms SET state = 'unknown', updated = ?, {ERASED},
               last_error = 'the bridge stopped while this SMS was being handed to the provider; it may have been sent'
           WHERE state = 'sending'""",  # noqa: S608  (a constant, no input)
        (now,),
    ).rowcount
    return counts


def op_release_held_notices(conn: sqlite3.Connection) -> int:
    """At start-up: notices held for an SMTP session that is gone are sent after all."""
    return conn.execute("UPDATE sms SET notice = 'pending' WHERE notice = 'held'").rowcount


def op_next_due(conn: sqlite3.Connection, account: str) -> float | None:
    rec = conn.execute(
        "SELECT min(next_attempt) FROM sms WHERE state = 'queued' AND account = ?", (account,)
    ).fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def op_get(conn: sqlite3.Connection, ident: str) -> list[Row]:
    recs = conn.execute("SELECT * FROM sms WHERE id = ? OR mail_id = ? ORDER BY id", (ident, ident)).fetchall()
    return [_row(r) for r in recs]


def op_list(conn: sqlite3.Connection, state: str | None = None, limit: int = 100) -> list[Row]:
    if state:
        recs = conn.execute("SELECT * FROM sms WHERE state = ? ORDER BY updated DESC LIMIT ?", (state, limit))
    else:
        recs = conn.execute("SELECT * FROM sms ORDER BY updated DESC LIMIT ?", (limit,))
    return [_row(r) for r in recs]


def op_counts(conn: sqlite3.Connection) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM sms GROUP BY state"):
        counts[state] = count
    return counts


def op_requeue(conn: sqlite3.Connection, ident: str, now: float) -> list[str]:
    """``queue retry``: a failed, unknown, expired or cancelled row goes back to the queue."""
    ids = [r.id for r in op_get(conn, ident) if r.state in ("failed", "unknown", "expired", "cancelled")]
    conn.executemany(
        "UPDATE sms SET state = 'queued', next_attempt = ?, updated = ?, notice = 'none' WHERE id = ?",
        [(now, now, i) for i in ids],
    )
    return ids


def op_cancel(conn: sqlite3.Connection, ident: str, now: float) -> list[str]:
    """``queue cancel``: a queued row is not sent."""
    ids = [r.id for r in op_get(conn, ident) if r.state == "queued"]
    op_finish(conn, ids, now, state="cancelled", error="cancelled by the operator", code="", raw="", notice="none")
    return ids


def op_pending_notices(conn: sqlite3.Connection, limit: int = 50) -> list[Row]:
    recs = conn.execute("SELECT * FROM sms WHERE notice = 'pending' ORDER BY updated LIMIT ?", (limit,))
    return [_row(r) for r in recs]


def op_set_notice(conn: sqlite3.Connection, ids: Sequence[str], notice: str) -> None:
    conn.executemany("UPDATE sms SET notice = ? WHERE id = ?", [(notice, i) for i in ids])


def op_prune_seen(conn: sqlite3.Connection, before: float) -> int:
    return conn.execute("DELETE FROM seen WHERE at < ?", (before,)).rowcount


# -- the asynchronous outbox ------------------------------------------------------


class SqliteOutbox:
    """The outbox, for async code: every operation runs on one writer thread.

    Use as ``async with SqliteOutbox(path) as outbox``.
    """

    def __init__(self, path: str | Path, *, dedupe_window: float = 86400.0, max_group: int = 256) -> None:
        self.path = Path(path)
        self.dedupe_window = dedupe_window
        self.max_group = max_group
        self._jobs: queue.SimpleQueue[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self.commits = 0  # transactions committed (for metrics and the benchmark)

    def __repr__(self) -> str:
        return f"SqliteOutbox({str(self.path)!r})"

    async def __aenter__(self) -> SqliteOutbox:
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, self._ready), name="outbox-writer", daemon=True
        )
        self._thread.start()
        await self._ready
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _settle(self, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
        if future.cancelled():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            error = OutboxError(f"cannot open the outbox {self.path}: {exc}")
            loop.call_soon_threadsafe(self._settle, ready, None, error)
            return
        loop.call_soon_threadsafe(self._settle, ready, None, None)
        try:
            while True:
                job = self._jobs.get()
                if job is None:
                    return
                batch = [job]
                while len(batch) < self.max_group:
                    try:
                        more = self._jobs.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._jobs.put(None)  # finish this batch, then stop
                        break
                    batch.append(more)
                self._run_batch(loop, conn, batch)
        finally:
            conn.close()

    def _run_batch(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: sqlite3.Connection,
        batch: list[tuple[Callable[[sqlite3.Connection], Any], asyncio.Future[Any]]],
    ) -> None:
        results: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for fn, future in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = fn(conn)
                except Exception as exc:  # noqa: BLE001  (handed to the caller of this one job)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((future, None, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((future, result, None))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = OutboxError(f"the outbox could not commit: {exc}")
            results = [(future, None, error) for _, future in batch]
        settled = [
            (future, result, OutboxError(f"outbox operation failed: {err}") if isinstance(err, sqlite3.Error) else err)
            for future, result, err in results
        ]
        loop.call_soon_threadsafe(self._settle_all, settled)  # one wake-up of the loop per batch

    def _settle_all(self, settled: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        for future, result, err in settled:
            self._settle(future, result, err)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(conn)`` in a committed (and synced) transaction; its result."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            raise OutboxError("the outbox is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((fn, future))
        return await future

    # -- the Outbox operations ----------------------------------------------

    async def enqueue(
        self, accepted: Accepted, key: ImapKey | None = None, usage: Sequence[tuple[str, Any]] = ()
    ) -> Enqueued:
        window = self.dedupe_window
        return await self.run(lambda c: op_enqueue(c, accepted, time.time(), window, key, usage))

    async def claim(self, account: str, *, combine: bool = True) -> Group:
        return await self.run(lambda c: op_claim(c, account, time.time(), combine))

    async def next_due(self, account: str) -> float | None:
        return await self.run(lambda c: op_next_due(c, account))

    async def counts(self) -> dict[str, int]:
        return await self.run(op_counts)

    async def mark_sending(self, ids: Sequence[str]) -> None:
        await self.run(lambda c: op_mark_sending(c, ids, time.time()))

    async def mark_sent(
        self, rows: Sequence[Row], *, msg_id: str, raw: str, balance_after: float | None, confirmed: bool
    ) -> None:
        now = time.time()
        await self.run(
            lambda c: op_sent(c, rows, now, msg_id=msg_id, raw=raw, balance_after=balance_after, confirmed=confirmed)
        )

    async def retry_later(self, schedule: Sequence[tuple[str, float]], *, error: str, code: str, raw: str) -> None:
        now = time.time()
        await self.run(lambda c: op_retry_later(c, schedule, now, error=error, code=code, raw=raw))

    async def finish(self, ids: Sequence[str], *, state: str, error: str, code: str, raw: str, notice: str) -> None:
        now = time.time()
        await self.run(lambda c: op_finish(c, ids, now, state=state, error=error, code=code, raw=raw, notice=notice))

    async def set_notice(self, ids: Sequence[str], notice: str) -> None:
        await self.run(lambda c: op_set_notice(c, ids, notice))

    async def pending_notices(self, limit: int = 50) -> list[Row]:
        return await self.run(lambda c: op_pending_notices(c, limit))

    async def pending_rejections(self, limit: int = 50) -> list[RejectionRow]:
        return await self.run(lambda c: op_pending_rejections(c, limit))

    async def set_rejection_notice(self, ids: Sequence[str], notice: str) -> None:
        await self.run(lambda c: op_set_rejection_notice(c, ids, notice))

    async def imap_outcome(self, key: ImapKey) -> tuple[str, str] | None:
        return await self.run(lambda c: op_imap_outcome(c, key))

    async def reject(self, rejection: Rejection, key: ImapKey | None = None) -> str:
        now = time.time()
        return await self.run(lambda c: op_reject(c, rejection, now, key))

    async def record_balance(self, account: str, balance: float) -> float | None:
        return await self.run(lambda c: op_record_balance(c, account, balance, time.time()))

    async def balances(self) -> dict[str, float]:
        return await self.run(op_balances)

    async def start_up(self, *, at_least_once: Sequence[str]) -> dict[str, int]:
        """After a start: recover from an unclean stop, release held notices, forget old counts."""
        now = time.time()
        window = self.dedupe_window

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            recovered = op_recover(conn, now, at_least_once)
            op_release_held_notices(conn)
            op_prune_seen(conn, now - window)
            op_prune_usage(conn, now)
            return recovered

        return await self.run(work)


class Outbox(Protocol):
    """What the rest of the bridge needs from an outbox; :class:`SqliteOutbox` is one.
    A second backend (PostgreSQL, claiming with ``FOR UPDATE SKIP LOCKED``) implements
    the same operations with the same meaning."""

    commits: int

    async def enqueue(
        self, accepted: Accepted, key: ImapKey | None = None, usage: Sequence[tuple[str, Any]] = ()
    ) -> Enqueued: ...
    async def claim(self, account: str, *, combine: bool = True) -> Group: ...
    async def next_due(self, account: str) -> float | None: ...
    async def counts(self) -> dict[str, int]: ...
    async def mark_sending(self, ids: Sequence[str]) -> None: ...
    async def mark_sent(
        self, rows: Sequence[Row], *, msg_id: str, raw: str, balance_after: float | None, confirmed: bool
    ) -> None: ...
    async def retry_later(self, schedule: Sequence[tuple[str, float]], *, error: str, code: str, raw: str) -> None: ...
    async def finish(self, ids: Sequence[str], *, state: str, error: str, code: str, raw: str, notice: str) -> None: ...
    async def set_notice(self, ids: Sequence[str], notice: str) -> None: ...
    async def pending_notices(self, limit: int = 50) -> list[Row]: ...
    async def pending_rejections(self, limit: int = 50) -> list[RejectionRow]: ...
    async def set_rejection_notice(self, ids: Sequence[str], notice: str) -> None: ...
    async def imap_outcome(self, key: ImapKey) -> tuple[str, str] | None: ...
    async def reject(self, rejection: Rejection, key: ImapKey | None = None) -> str: ...
    async def record_balance(self, account: str, balance: float) -> float | None: ...
    async def balances(self) -> dict[str, float]: ...
    async def start_up(self, *, at_least_once: Sequence[str]) -> dict[str, int]: ...
