"""The SQLite outbox: every accepted SMS, durably, with its state and history.

SQLite in WAL mode with ``synchronous=FULL``: a message is acknowledged only
after its rows are committed and the WAL is synced. Every database operation
runs on one writer thread; operations that arrive while a transaction is being
committed are grouped into the next one, so one fsync serves many SMTP
sessions (group commit) and nothing blocks the event loop.

The state machines are in :mod:`bridge.outbox.states`, the schema in
:mod:`bridge.outbox.schema`. The operations are plain functions of a
connection (``op_*``) so that the ``sms-bridge queue`` commands use exactly
the same SQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar, get_type_hints

from bridge import digest
from bridge.errors import LimitExceeded, OutboxError
from bridge.model import Credentials, SmsRequest
from bridge.outbox.schema import connect
from bridge.outbox.states import CANCELLABLE, FINAL, MAYBE_SENT, RETRYABLE, UNANSWERABLE, UNRESOLVED, Notice, State
from bridge.outbox.types import (
    MAX_GROUP_NUMBERS,
    Accepted,
    Delivery,
    Enqueued,
    Event,
    Group,
    ImapKey,
    Origin,
    Pacing,
    Rejection,
    RejectionRow,
    Row,
    Search,
    batch_key,
    new_mail_id,
)

T = TypeVar("T")

#: erasing body credentials leaves an empty user name as a mark that there were some
ERASED = "cred_user = CASE WHEN cred_user IS NULL THEN NULL ELSE '' END, cred_pass = NULL"
WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}

# -- columns: one per field of Origin, SmsRequest (credentials: two) and Delivery ----


#: how a tuple field is joined in its column (default ","): warnings may hold commas
SEPARATORS = {"warnings": "\n"}


def _split(sep: str, value: str) -> tuple[str, ...]:
    return tuple(filter(None, value.split(sep)))


def _codec(cls: type) -> dict[str, Callable[[Any], Any]]:
    """Each field's decoder, from its type: tuples are stored joined, enums by value."""
    out: dict[str, Callable[[Any], Any]] = {}
    for name, hint in get_type_hints(cls).items():
        if name not in {f.name for f in fields(cls)} or hint == Credentials | None:
            continue
        if hint == tuple[str, ...]:
            out[name] = functools.partial(_split, SEPARATORS.get(name, ","))
        elif hint in (State, Notice):
            out[name] = hint
        elif hint == bool | None:
            out[name] = lambda v: None if v is None else bool(v)
        elif hint is bool:
            out[name] = bool
        else:
            out[name] = lambda v: v
    return out


ORIGIN = _codec(Origin)
REQUEST = _codec(SmsRequest)
DELIVERY = _codec(Delivery)


def _stored(name: str, value: Any) -> Any:
    if isinstance(value, tuple):
        sep = SEPARATORS.get(name, ",")
        return sep.join(str(v).replace(sep, " ") for v in value)
    if isinstance(value, bool):
        return int(value)
    return value


def _columns(obj: Any, codec: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
    return {name: _stored(name, getattr(obj, name)) for name in codec}


def _read(codec: dict[str, Callable[[Any], Any]], rec: sqlite3.Row) -> dict[str, Any]:
    return {name: decode(rec[name]) for name, decode in codec.items()}


def _origin_columns(origin: Origin) -> dict[str, Any]:
    columns = _columns(origin, ORIGIN)
    columns["subject"] = origin.subject[:500]
    return columns


def _row(rec: sqlite3.Row) -> Row:
    # an empty user name marks credentials that were erased (see ERASED)
    creds = Credentials(rec["cred_user"], rec["cred_pass"] or "") if rec["cred_user"] is not None else None
    return Row(
        id=rec["id"],
        mail_id=rec["mail_id"],
        created=rec["created"],
        updated=rec["updated"],
        origin=Origin(**_read(ORIGIN, rec)),
        request=SmsRequest(**_read(REQUEST, rec), credentials=creds),
        delivery=Delivery(**_read(DELIVERY, rec)),
    )


def _insert(conn: sqlite3.Connection, table: str, columns: dict[str, Any]) -> None:
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(columns.values()))  # noqa: S608  (names from dataclass fields)


# -- operations (each runs inside a transaction the caller owns) ---------------


def _log(conn: sqlite3.Connection, ids: Sequence[str], now: float, event: str, detail: str, actor: str = "") -> None:
    """Append to each row's history (in the caller's transaction)."""
    conn.executemany(
        "INSERT INTO history (sms_id, at, event, detail, actor) VALUES (?, ?, ?, ?, ?)",
        [(i, now, event, detail[:2000], actor) for i in ids],
    )


def _log_attempt(conn: sqlite3.Connection, ids: Sequence[str], now: float, event: str, detail: str) -> None:
    """History of an attempt's outcome, numbered by the row's own attempt count."""
    conn.executemany(
        """INSERT INTO history (sms_id, at, event, detail, actor)
           SELECT id, ?, ?, 'attempt ' || attempts || ' (' || account || ', ' || provider || '): ' || ?, ''
           FROM sms WHERE id = ?""",
        [(now, event, detail[:2000], i) for i in ids],
    )


def _reply_note(code: str, error: str, raw: str) -> str:
    note = f"{code + ' ' if code else ''}{error}"
    return f"{note}; provider reply: {raw[:300]}" if raw else note


def op_history(conn: sqlite3.Connection, sms_id: str) -> list[Event]:
    recs = conn.execute("SELECT at, event, detail, actor FROM history WHERE sms_id = ? ORDER BY seq", (sms_id,))
    return [Event(r["at"], r["event"], r["detail"], r["actor"]) for r in recs]


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


def op_reject(conn: sqlite3.Connection, rejection: Rejection, now: float, key: ImapKey | None = None) -> str:
    """Record a refused mail (and its IMAP identity) in one transaction; its id."""
    rejection_id = new_mail_id()
    columns = {"id": rejection_id, "created": now, **_origin_columns(rejection)}
    columns["problems"] = json.dumps([list(p) for p in rejection.problems])
    columns["notice"] = Notice.PENDING if rejection.notify else Notice.SKIPPED
    columns["operator"] = Notice.NONE if rejection.notify else Notice.PENDING
    _insert(conn, "rejections", columns)
    _mark_imap(conn, key, "rejected", rejection_id, now)
    return rejection_id


def op_pending_rejections(conn: sqlite3.Connection, limit: int = 50, column: str = "notice") -> list[RejectionRow]:
    recs = conn.execute(
        f"SELECT * FROM rejections WHERE {'operator' if column == 'operator' else 'notice'} = 'pending' ORDER BY created LIMIT ?",  # noqa: S608  (one of two names)
        (limit,),
    )
    return [
        RejectionRow(
            id=r["id"],
            created=r["created"],
            origin=Origin(**_read(ORIGIN, r)),
            problems=tuple((str(f), str(m)) for f, m in json.loads(r["problems"])),
            notice=Notice(r["notice"]),
            operator=Notice(r["operator"]),
        )
        for r in recs
    ]


def op_set_rejection_notice(conn: sqlite3.Connection, ids: Sequence[str], notice: Notice) -> None:
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
                    raise LimitExceeded.of(scope, what, limit, window)
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
        columns = {"id": row_id, "mail_id": mail_id, "created": now, "updated": now, **_origin_columns(accepted)}
        columns |= _columns(request, REQUEST) | {"batch_key": batch_key(request)}
        columns |= {"cred_user": creds.username if creds else None, "cred_pass": creds.password if creds else None}
        columns |= {"state": State.QUEUED, "next_attempt": now}
        _insert(conn, "sms", columns)
        detail = (
            f"via {accepted.via}, client {accepted.client or '-'}, route {request.route}, account {request.account}"
        )
        if accepted.warnings:
            detail += "; warnings: " + "; ".join(accepted.warnings)
        _log(conn, [row_id], now, "accepted", detail)
        ids.append(row_id)
    if accepted.fingerprint is not None:
        conn.execute(
            "INSERT OR REPLACE INTO seen (fingerprint, mail_id, at) VALUES (?, ?, ?)",
            (accepted.fingerprint, mail_id, now),
        )
    _mark_imap(conn, key, "queued", mail_id, now)
    return Enqueued(mail_id, tuple(ids))


#: queued rows a claim looks at, at most, before it gives up for now
CLAIM_SCAN = 500


class _Paced:
    """Which numbers of an account may not be sent to yet: looked up by primary key, only
    for the numbers a claim considers, and remembered for the rest of the claim."""

    def __init__(self, conn: sqlite3.Connection, account: str, now: float, active: bool) -> None:
        self.conn, self.account, self.now, self.active = conn, account, now, active
        self.known: dict[str, float] = {}

    def until(self, numbers: Sequence[str]) -> float:
        """When all of ``numbers`` are free (0.0: now)."""
        if not self.active:
            return 0.0
        unknown = [n for n in numbers if n not in self.known]
        for start in range(0, len(unknown), 500):
            chunk = unknown[start : start + 500]
            self.known.update(dict.fromkeys(chunk, 0.0))
            marks = ",".join("?" * len(chunk))
            for number, until in self.conn.execute(
                f"SELECT number, until FROM pacing WHERE account = ? AND until > ? AND number IN ({marks})",  # noqa: S608  (placeholders only)
                (self.account, self.now, *chunk),
            ):
                self.known[number] = until
        return max((self.known[n] for n in numbers), default=0.0)


def _first_free(conn: sqlite3.Connection, account: str, now: float, paced: _Paced) -> Row | None:
    """The most overdue row none of whose numbers is paced. A row that waits for a
    paced number is moved to when its numbers are free, out of the way of the rows
    behind it: the bridge plans around the provider's rule instead of learning it."""
    for _ in range(CLAIM_SCAN):
        rec = conn.execute(
            """SELECT * FROM sms WHERE state = 'queued' AND account = ? AND next_attempt <= ?
               ORDER BY next_attempt, id LIMIT 1""",
            (account, now),
        ).fetchone()
        if rec is None:
            return None
        row = _row(rec)
        free_at = paced.until(row.request.numbers)
        if free_at <= now:
            return row
        conn.execute("UPDATE sms SET next_attempt = ? WHERE id = ?", (free_at, row.id))
    return None


def _combined(conn: sqlite3.Connection, first: Row, now: float, paced: _Paced) -> Group:
    """``first`` and others with the same sender, language and text whose numbers
    do not overlap and are not paced (≤ 200 numbers)."""
    group = Group([first])
    numbers = set(first.request.numbers)
    if first.request.credentials is not None or len(numbers) >= MAX_GROUP_NUMBERS:
        return group
    for rec in conn.execute(
        """SELECT * FROM sms WHERE state = 'queued' AND account = ? AND batch_key = ? AND next_attempt <= ?
           AND id != ? ORDER BY next_attempt LIMIT 400""",
        (first.request.account, batch_key(first.request), now, first.id),
    ):
        row = _row(rec)
        lead = first.request
        if row.request.credentials is not None or (row.request.sender, row.request.text) != (lead.sender, lead.text):
            continue
        if numbers.intersection(row.request.numbers) or len(numbers) + len(row.request.numbers) > MAX_GROUP_NUMBERS:
            continue
        if paced.until(row.request.numbers) > now:
            continue
        group.rows.append(row)
        numbers.update(row.request.numbers)
        if len(numbers) >= MAX_GROUP_NUMBERS:
            break
    return group


def _digested(conn: sqlite3.Connection, first: Row, now: float, pacing: Pacing) -> Group:
    """``first`` and the other alerts waiting for the same numbers on its route, in one SMS."""
    req = first.request
    recs = conn.execute(
        """SELECT * FROM sms WHERE state = 'queued' AND account = ? AND digest = 1 AND route = ? AND sender = ?
           AND numbers = ? AND next_attempt <= ? AND cred_user IS NULL ORDER BY next_attempt, id LIMIT 2000""",
        (req.account, req.route, req.sender, ",".join(req.numbers), now),
    ).fetchall()
    rows = {r.id: r for r in map(_row, recs)}
    rows.setdefault(first.id, first)
    waiting = [first] + [r for r in rows.values() if r.id != first.id]
    key = "\x00".join([req.route, req.sender, ",".join(req.numbers)])
    rec = conn.execute(
        "SELECT listed, part FROM digest_series WHERE account = ? AND key = ? AND at > ?",
        (req.account, key, now - 3 * max(pacing.interval, 60.0)),
    ).fetchone()
    series = digest.Series(rec[0], rec[1]) if rec else None
    items = [
        digest.Item(r.id, r.request.text, r.request.brief, r.request.alert_key, r.request.resolved) for r in waiting
    ]
    planned = digest.plan(items, pacing.digest_pages.get(req.route, pacing.default_pages), series)
    if planned.series is None:
        conn.execute("DELETE FROM digest_series WHERE account = ? AND key = ?", (req.account, key))
    else:
        conn.execute(
            """INSERT INTO digest_series (account, key, listed, part, at) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (account, key) DO UPDATE SET listed = excluded.listed, part = excluded.part, at = excluded.at""",
            (req.account, key, planned.series.listed, planned.series.part, now),
        )
    chosen = [rows[i] for i in planned.ids]
    if len(chosen) == 1:
        return Group(chosen)
    conn.executemany("UPDATE sms SET carrier = ? WHERE id = ?", [(chosen[0].id, r.id) for r in chosen])
    return Group(chosen, digest=planned.text)


def op_claim(
    conn: sqlite3.Connection, account: str, now: float, combine: bool = True, pacing: Pacing | None = None
) -> Group:
    """Reserve the most overdue row of ``account`` whose numbers may be sent to now, with
    the alerts waiting for the same numbers (a digest) or, when ``combine``, rows with the
    same text to other numbers. The numbers are then paced for ``pacing.interval``."""
    pacing = pacing or Pacing()
    paced = _Paced(conn, account, now, pacing.interval > 0)
    first = _first_free(conn, account, now, paced)
    if first is None:
        return Group()
    if first.request.digest:
        group = _digested(conn, first, now, pacing)
    elif combine:
        group = _combined(conn, first, now, paced)
    else:
        group = Group([first])
    conn.executemany("UPDATE sms SET state = 'claimed', updated = ? WHERE id = ?", [(now, i) for i in group.ids])
    if pacing.interval > 0:
        op_pace(conn, account, group.request().numbers, now + pacing.interval)
    return group


def op_fail_over(
    conn: sqlite3.Connection, moves: Sequence[tuple[Row, SmsRequest]], now: float, *, reason: str, code: str
) -> None:
    """Each row to its next account, as revalidated there, queued at once; the account
    that did not send it joins ``tried``."""
    for row, request in moves:
        columns = _columns(request, REQUEST) | {"batch_key": batch_key(request)}
        tried = ",".join([*row.delivery.tried, row.request.account])
        sets = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"""UPDATE sms SET {sets}, tried = ?, state = 'queued', next_attempt = ?, updated = ?, carrier = '',
                   last_error = ?, last_code = ? WHERE id = ?""",  # noqa: S608  (column names from the dataclass)
            (*columns.values(), tried, now, now, reason, code, row.id),
        )
        detail = f"from {row.request.account} to {request.account}: {code + ' ' if code else ''}{reason}"
        _log(conn, [row.id], now, "failover", detail)


def op_hold(conn: sqlite3.Connection, ids: Sequence[str], until: float, now: float) -> None:
    """Claimed rows back to the queue, not before ``until`` (no attempt was made)."""
    conn.executemany(
        "UPDATE sms SET state = 'queued', next_attempt = max(next_attempt, ?), updated = ? WHERE id = ? AND state = 'claimed'",
        [(until, now, i) for i in ids],
    )


def op_pace(conn: sqlite3.Connection, account: str, numbers: Sequence[str], until: float) -> None:
    """No SMS to ``numbers`` from ``account`` before ``until``."""
    conn.executemany(
        """INSERT INTO pacing (account, number, until) VALUES (?, ?, ?)
           ON CONFLICT (account, number) DO UPDATE SET until = max(until, excluded.until)""",
        [(account, n, until) for n in numbers],
    )


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
    group: Group,
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
        [(now, msg_id, raw[:2000], charge, balance_after, int(confirmed), i) for i, charge in group.charges().items()],
    )
    how = f"in a digest of {len(group.rows)} alerts led by {group.rows[0].id}; " if group.digest is not None else ""
    relay = "" if confirmed else " (handed to the mail relay)"
    _log_attempt(conn, group.ids, now, "sent", f"{how}provider id {msg_id}{relay}")


def op_retry_later(
    conn: sqlite3.Connection, schedule: Sequence[tuple[str, float]], now: float, *, error: str, code: str, raw: str
) -> None:
    """Back to the queue: each ``(id, when)`` is tried again at ``when``."""
    conn.executemany(
        """UPDATE sms SET state = 'queued', updated = ?, next_attempt = ?, last_error = ?, last_code = ?,
               provider_reply = ? WHERE id = ?""",
        [(now, when, error, code, raw[:2000], i) for i, when in schedule],
    )
    for i, when in schedule:
        _log_attempt(conn, [i], now, "retry", f"{_reply_note(code, error, raw)}; next attempt in {when - now:.0f} s")


def op_finish(
    conn: sqlite3.Connection,
    ids: Sequence[str],
    now: float,
    *,
    state: State,
    error: str,
    code: str,
    raw: str,
    notice: Notice,
) -> None:
    """A final state other than sent; body credentials are erased."""
    conn.executemany(
        f"""UPDATE sms SET state = ?, updated = ?, last_error = ?, last_code = ?, provider_reply = ?, notice = ?,
               {ERASED} WHERE id = ?""",  # noqa: S608  (a constant, no input)
        [(state, now, error, code, raw[:2000], notice, i) for i in ids],
    )
    if state == State.CANCELLED:
        return
    _log_attempt(conn, ids, now, str(state), _reply_note(code, error, raw))
    if state == State.UNKNOWN or (state == State.EXPIRED and error.endswith(MAYBE_SENT)):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ?", [(i,) for i in ids])


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
    stopped = "the bridge stopped while this SMS was being handed to the provider; it may have been sent"
    lost = [r[0] for r in conn.execute("SELECT id FROM sms WHERE state = 'sending'")]
    counts["unknown"] = conn.execute(
        f"""UPDATE sms SET state = 'unknown', updated = ?, {ERASED}, last_error = ?, notice = 'pending',
               operator = 'pending' WHERE state = 'sending'""",  # noqa: S608  (a constant, no input)
        (now, stopped),
    ).rowcount
    _log(conn, lost, now, "unknown", stopped)
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
    counts: dict[str, int] = dict.fromkeys(State, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM sms GROUP BY state"):
        counts[state] = count
    return counts


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def op_search(conn: sqlite3.Connection, search: Search) -> list[Row]:
    """Rows matching every filter given, newest first."""
    where: list[str] = []
    args: list[Any] = []
    for column, value in (("state", search.state), ("route", search.route), ("client", search.client)):
        if value:
            where.append(f"{column} = ?")
            args.append(str(value))
    if search.since is not None:
        where.append("created >= ?")
        args.append(search.since)
    if search.until is not None:
        where.append("created < ?")
        args.append(search.until)
    if search.text:
        where.append("(id LIKE ? ESCAPE '\\' OR message_id = ? OR mail_from = ? COLLATE NOCASE)")
        args += [_like(search.text) + "%", search.text, search.text]
    clauses = " WHERE " + " AND ".join(where) if where else ""
    sql = f"SELECT * FROM sms{clauses} ORDER BY created DESC, id LIMIT ?"  # noqa: S608  (fixed clauses; values are parameters)
    return [_row(r) for r in conn.execute(sql, (*args, search.limit))]


def op_recent_problems(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """Failed, unknown and expired SMS that ended since ``since``, by state."""
    recs = conn.execute(
        "SELECT state, count(*) FROM sms WHERE state IN ('failed', 'unknown', 'expired') AND updated >= ? GROUP BY state",
        (since,),
    )
    return {state: count for state, count in recs}


def op_oldest_queued(conn: sqlite3.Connection) -> float | None:
    """When the oldest SMS still waiting to be sent was accepted."""
    rec = conn.execute("SELECT min(created) FROM sms WHERE state IN ('queued', 'claimed')").fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def op_requeue(conn: sqlite3.Connection, ident: str, now: float, actor: str = "cli") -> list[str]:
    """``queue retry``: a failed, unknown, expired or cancelled row goes back to the queue."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in RETRYABLE]
    conn.executemany(
        "UPDATE sms SET state = 'queued', next_attempt = ?, updated = ?, notice = 'none', operator = 'none' WHERE id = ?",
        [(now, now, i) for i in ids],
    )
    _log(conn, ids, now, "retry", "queued again by the operator", actor)
    return ids


def op_cancel(conn: sqlite3.Connection, ident: str, now: float, actor: str = "cli") -> list[str]:
    """``queue cancel``: a queued row is not sent."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in CANCELLABLE]
    op_finish(
        conn, ids, now, state=State.CANCELLED, error="cancelled by the operator", code="", raw="", notice=Notice.NONE
    )
    _log(conn, ids, now, "cancelled", "cancelled by the operator", actor)
    return ids


def op_mark_not_sent(conn: sqlite3.Connection, ident: str, now: float, actor: str = "cli") -> list[str]:
    """An ``unknown`` row the operator found not sent in the provider's records: ``failed``."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in UNRESOLVED]
    conn.executemany(
        "UPDATE sms SET state = 'failed', updated = ?, last_error = ?, operator = 'none' WHERE id = ?",
        [(now, "marked as not sent by the operator (checked the provider's records)", i) for i in ids],
    )
    _log(conn, ids, now, "failed", "marked as not sent by the operator", actor)
    return ids


def op_pending_notices(conn: sqlite3.Connection, limit: int = 50) -> list[Row]:
    recs = conn.execute("SELECT * FROM sms WHERE notice = 'pending' ORDER BY updated LIMIT ?", (limit,))
    return [_row(r) for r in recs]


def op_set_notice(conn: sqlite3.Connection, ids: Sequence[str], notice: Notice, detail: str = "") -> None:
    conn.executemany("UPDATE sms SET notice = ? WHERE id = ?", [(notice, i) for i in ids])
    if notice in (Notice.SENT, Notice.SKIPPED, Notice.REPLIED):
        _log(conn, ids, time.time(), f"notice {notice}", detail)
    if notice == Notice.SKIPPED and detail.startswith(UNANSWERABLE):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ? AND operator = 'none'", [(i,) for i in ids])


def op_pending_operator(conn: sqlite3.Connection, limit: int = 500) -> tuple[list[Row], list[RejectionRow]]:
    """What the operator is to be told of: unknown outcomes, and failures and refusals
    whose sender could not be answered."""
    rows = [
        _row(r) for r in conn.execute("SELECT * FROM sms WHERE operator = 'pending' ORDER BY updated LIMIT ?", (limit,))
    ]
    rejections = [r for r in op_pending_rejections(conn, limit, column="operator")]
    return rows, rejections


def op_set_operator(conn: sqlite3.Connection, ids: Sequence[str], rejection_ids: Sequence[str], notice: Notice) -> None:
    conn.executemany("UPDATE sms SET operator = ? WHERE id = ?", [(notice, i) for i in ids])
    conn.executemany("UPDATE rejections SET operator = ? WHERE id = ?", [(notice, i) for i in rejection_ids])
    if notice == Notice.SENT:
        _log(conn, ids, time.time(), "operator told", "listed in the operator's mail")


def op_prune(conn: sqlite3.Connection, before: float) -> int:
    """Forget final rows (and their history) last changed before ``before``; how many."""
    finals = ",".join(f"'{s}'" for s in sorted(FINAL))
    old = f"SELECT id FROM sms WHERE state IN ({finals}) AND updated < ?"  # noqa: S608  (constants)
    conn.execute(f"DELETE FROM history WHERE sms_id IN ({old})", (before,))  # noqa: S608  (constants)
    count = conn.execute(f"DELETE FROM sms WHERE id IN ({old})", (before,)).rowcount  # noqa: S608  (constants)
    conn.execute(
        "DELETE FROM rejections WHERE created < ? AND notice != 'pending' AND operator != 'pending'", (before,)
    )
    return count


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

    async def claim(self, account: str, *, combine: bool = True, pacing: Pacing | None = None) -> Group:
        return await self.run(lambda c: op_claim(c, account, time.time(), combine, pacing))

    async def pace(self, account: str, numbers: Sequence[str], until: float) -> None:
        await self.run(lambda c: op_pace(c, account, numbers, until))

    async def fail_over(self, moves: Sequence[tuple[Row, SmsRequest]], *, reason: str, code: str) -> None:
        now = time.time()
        await self.run(lambda c: op_fail_over(c, moves, now, reason=reason, code=code))

    async def hold(self, ids: Sequence[str], until: float) -> None:
        now = time.time()
        await self.run(lambda c: op_hold(c, ids, until, now))

    async def next_due(self, account: str) -> float | None:
        return await self.run(lambda c: op_next_due(c, account))

    async def counts(self) -> dict[str, int]:
        return await self.run(op_counts)

    async def oldest_queued(self) -> float | None:
        return await self.run(op_oldest_queued)

    async def search(self, search: Search) -> list[Row]:
        return await self.run(lambda c: op_search(c, search))

    async def recent_problems(self, since: float) -> dict[str, int]:
        return await self.run(lambda c: op_recent_problems(c, since))

    async def mark_sending(self, ids: Sequence[str]) -> None:
        await self.run(lambda c: op_mark_sending(c, ids, time.time()))

    async def mark_sent(
        self, group: Group, *, msg_id: str, raw: str, balance_after: float | None, confirmed: bool
    ) -> None:
        now = time.time()
        await self.run(
            lambda c: op_sent(c, group, now, msg_id=msg_id, raw=raw, balance_after=balance_after, confirmed=confirmed)
        )

    async def retry_later(self, schedule: Sequence[tuple[str, float]], *, error: str, code: str, raw: str) -> None:
        now = time.time()
        await self.run(lambda c: op_retry_later(c, schedule, now, error=error, code=code, raw=raw))

    async def finish(
        self, ids: Sequence[str], *, state: State, error: str, code: str, raw: str, notice: Notice
    ) -> None:
        now = time.time()
        await self.run(lambda c: op_finish(c, ids, now, state=state, error=error, code=code, raw=raw, notice=notice))

    async def set_notice(self, ids: Sequence[str], notice: Notice, detail: str = "") -> None:
        await self.run(lambda c: op_set_notice(c, ids, notice, detail))

    async def pending_operator(self, limit: int = 500) -> tuple[list[Row], list[RejectionRow]]:
        return await self.run(lambda c: op_pending_operator(c, limit))

    async def set_operator(self, ids: Sequence[str], rejection_ids: Sequence[str], notice: Notice) -> None:
        await self.run(lambda c: op_set_operator(c, ids, rejection_ids, notice))

    async def history(self, sms_id: str) -> list[Event]:
        return await self.run(lambda c: op_history(c, sms_id))

    async def act(self, action: str, ident: str, actor: str) -> list[str]:
        """An operator's action on a message: ``retry``, ``cancel`` or ``not-sent``; the ids changed."""
        ops = {"retry": op_requeue, "cancel": op_cancel, "not-sent": op_mark_not_sent}
        op = ops[action]
        return await self.run(lambda c: op(c, ident, time.time(), actor))

    async def prune(self, before: float) -> int:
        return await self.run(lambda c: op_prune(c, before))

    async def pending_notices(self, limit: int = 50) -> list[Row]:
        return await self.run(lambda c: op_pending_notices(c, limit))

    async def pending_rejections(self, limit: int = 50) -> list[RejectionRow]:
        return await self.run(lambda c: op_pending_rejections(c, limit))

    async def set_rejection_notice(self, ids: Sequence[str], notice: Notice) -> None:
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
            conn.execute("DELETE FROM pacing WHERE until < ?", (now,))
            return recovered

        return await self.run(work)
