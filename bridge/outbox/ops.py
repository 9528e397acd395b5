"""The outbox's operations: every state change, as SQL that both backends run.

Each operation is a plain function of a connection (``op_*``) that runs inside a
transaction its caller owns, so that the SQLite and PostgreSQL backends, and the
``sms-bridge queue`` commands, all use exactly the same statements. The SQL is
the common subset of the two dialects (``?`` placeholders are turned into
``%s`` for PostgreSQL by :mod:`bridge.outbox.pg`); where they differ a
connection says so: PostgreSQL claims with ``FOR UPDATE SKIP LOCKED`` under a
per-account advisory lock, and wakes other instances with ``NOTIFY``.

The state machines are in :mod:`bridge.outbox.states`, the schema in
:mod:`bridge.outbox.schema`. :class:`Store` is what a backend adds to run them
from async code.
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields, replace
from typing import Any, Protocol, Self, TypeVar, cast, get_type_hints

from bridge import digest
from bridge.errors import LeaseLost, LimitExceeded
from bridge.model import Credentials, SmsRequest
from bridge.outbox.states import CANCELLABLE, FINAL, MAYBE_SENT, RETRYABLE, UNANSWERABLE, UNRESOLVED, Notice, State
from bridge.outbox.types import (
    MAX_GROUP_NUMBERS,
    Accepted,
    Delivery,
    Enqueued,
    Event,
    Group,
    ImapKey,
    Leadership,
    Origin,
    Pacing,
    Refusal,
    Rejection,
    RejectionRow,
    Row,
    Search,
    batch_key,
    new_mail_id,
)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Tx(Protocol):
    """A connection inside a transaction: ``sqlite3.Connection``, or :class:`bridge.outbox.pg.PgTx`."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...


def _for_update(conn: Tx) -> str:
    """`` FOR UPDATE SKIP LOCKED`` where rows can be locked (PostgreSQL); SQLite's one
    writer needs none."""
    return str(getattr(conn, "for_update", ""))


def _lock(conn: Tx, key: str) -> None:
    """A lock on ``key`` until the transaction ends, shared by every instance (PostgreSQL);
    SQLite's writer lock already covers the whole transaction."""
    lock = getattr(conn, "lock", None)
    if lock is not None:
        lock(key)


def _notify(conn: Tx, what: str) -> None:
    """Wake other instances when the transaction commits (PostgreSQL ``NOTIFY``)."""
    notify = getattr(conn, "notify", None)
    if notify is not None:
        notify(what)


def op_clock(conn: Tx) -> float:
    """Now, on the clock every bridge sharing the outbox reckons by: the database's
    (PostgreSQL), else this host's. For tools that run outside a bridge."""
    clock = getattr(conn, "clock", None)
    return float(clock()) if clock is not None else time.time()


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


def _read(codec: dict[str, Callable[[Any], Any]], rec: Any) -> dict[str, Any]:
    return {name: decode(rec[name]) for name, decode in codec.items()}


def _origin_columns(origin: Origin) -> dict[str, Any]:
    columns = _columns(origin, ORIGIN)
    columns["subject"] = origin.subject[:500]
    return columns


def _row(rec: Any) -> Row:
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


def _insert(conn: Tx, table: str, columns: dict[str, Any]) -> None:
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(columns.values()))  # noqa: S608  (names from dataclass fields)


# -- operations (each runs inside a transaction the caller owns) ---------------


def _log(conn: Tx, ids: Sequence[str], now: float, event: str, detail: str, actor: str = "") -> None:
    """Append to each row's history (in the caller's transaction)."""
    conn.executemany(
        "INSERT INTO history (sms_id, at, event, detail, actor) VALUES (?, ?, ?, ?, ?)",
        [(i, now, event, detail[:2000], actor) for i in ids],
    )


def _log_attempt(conn: Tx, ids: Sequence[str], now: float, event: str, detail: str) -> None:
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


def op_history(conn: Tx, sms_id: str) -> list[Event]:
    recs = conn.execute("SELECT at, event, detail, actor FROM history WHERE sms_id = ? ORDER BY seq", (sms_id,))
    return [Event(r["at"], r["event"], r["detail"], r["actor"]) for r in recs]


def op_imap_outcome(conn: Tx, key: ImapKey) -> tuple[str, str] | None:
    """(outcome, mail id) of an IMAP message already taken, or None."""
    rec = conn.execute(
        "SELECT outcome, mail_id FROM imap_seen WHERE mailbox = ? AND uidvalidity = ? AND uid = ?", key
    ).fetchone()
    return None if rec is None else (rec[0], rec[1])


def _mark_imap(conn: Tx, key: ImapKey | None, outcome: str, mail_id: str, now: float) -> None:
    if key is not None:
        conn.execute(
            """INSERT INTO imap_seen (mailbox, uidvalidity, uid, outcome, mail_id, at) VALUES (?, ?, ?, ?, ?, ?)
               ON CONFLICT DO NOTHING""",
            (*key, outcome, mail_id, now),
        )


def op_reject(conn: Tx, rejection: Rejection, now: float, key: ImapKey | None = None) -> str:
    """Record a refused mail (and its IMAP identity) in one transaction; its id."""
    rejection_id = new_mail_id()
    columns = {"id": rejection_id, "created": now, **_origin_columns(rejection)}
    columns["problems"] = json.dumps([list(p) for p in rejection.problems])
    columns["notice"] = Notice.PENDING if rejection.notify else Notice.SKIPPED
    columns["operator"] = Notice.NONE if rejection.notify else Notice.PENDING
    _insert(conn, "rejections", columns)
    _mark_imap(conn, key, "rejected", rejection_id, now)
    return rejection_id


def op_pending_rejections(conn: Tx, limit: int = 50, column: str = "notice") -> list[RejectionRow]:
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


def op_set_rejection_notice(conn: Tx, ids: Sequence[str], notice: Notice) -> None:
    conn.executemany("UPDATE rejections SET notice = ? WHERE id = ?", [(notice, i) for i in ids])


def op_use(conn: Tx, scopes: Sequence[tuple[str, Any]], messages: int, points: int, now: float) -> None:
    """Count ``messages`` and ``points`` against each scope's limits (a ``LimitsConfig``),
    or raise :class:`LimitExceeded` without counting anything."""
    counted = []
    lock = " FOR UPDATE" if _for_update(conn) else ""  # two instances never both take the last one
    for scope, limits in scopes:
        for window, size in WINDOWS.items():
            bucket = int(now // size)
            if lock:
                conn.execute(
                    """INSERT INTO usage (scope, "window", bucket, messages, points) VALUES (?, ?, ?, 0, 0)
                       ON CONFLICT DO NOTHING""",
                    (scope, window, bucket),
                )
            rec = conn.execute(
                f'SELECT messages, points FROM usage WHERE scope = ? AND "window" = ? AND bucket = ?{lock}',  # noqa: S608  (a constant)
                (scope, window, bucket),
            ).fetchone()
            used = {"messages": rec[0] if rec else 0, "points": rec[1] if rec else 0}
            for what, amount in (("messages", messages), ("points", points)):
                limit = getattr(limits, f"{what}_per_{window}")
                if limit is not None and used[what] + amount > limit:
                    raise LimitExceeded.of(scope, what, limit, window)
            counted.append((scope, window, bucket))
    conn.executemany(
        """INSERT INTO usage (scope, "window", bucket, messages, points) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (scope, "window", bucket) DO UPDATE
           SET messages = usage.messages + excluded.messages, points = usage.points + excluded.points""",
        [(scope, window, bucket, messages, points) for scope, window, bucket in counted],
    )


def op_prune_usage(conn: Tx, now: float) -> int:
    return (
        conn.execute("""DELETE FROM usage WHERE "window" != 'day' AND bucket < ?""", (int(now // 3600) - 2,)).rowcount
        + conn.execute("""DELETE FROM usage WHERE "window" = 'day' AND bucket < ?""", (int(now // 86400) - 2,)).rowcount
    )


def op_record_balance(conn: Tx, account: str, balance: float, now: float) -> float | None:
    """Store the balance a provider reported; the one known before."""
    rec = conn.execute("SELECT balance FROM balances WHERE account = ?", (account,)).fetchone()
    conn.execute(
        "INSERT INTO balances (account, balance, at) VALUES (?, ?, ?) "
        "ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, at = excluded.at",
        (account, balance, now),
    )
    return None if rec is None else float(rec[0])


def op_balances(conn: Tx) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute("SELECT account, balance FROM balances")}


def op_enqueue(
    conn: Tx,
    accepted: Accepted,
    now: float,
    dedupe_window: float,
    key: ImapKey | None = None,
    usage: Sequence[tuple[str, Any]] = (),
    owner: str = "",
) -> Enqueued:
    """Store the mail's rows (and its IMAP identity) in one transaction, unless it was seen.
    Rows whose first outcome an SMTP session waits for are kept for ``owner``, the bridge
    it runs on, for ``accepted.keep`` seconds.

    The IMAP identity and the fingerprint are each taken by one statement first: of
    two instances given the same mail at once, the second waits there for the
    first's commit, then finds it (PostgreSQL)."""
    mail_id = new_mail_id()
    while conn.execute("SELECT 1 FROM sms WHERE mail_id = ? LIMIT 1", (mail_id,)).fetchone():
        mail_id = new_mail_id()  # a collision is astronomically rare; never fail a commit for it
    if key is not None:
        taken = conn.execute(
            """INSERT INTO imap_seen (mailbox, uidvalidity, uid, outcome, mail_id, at) VALUES (?, ?, ?, 'queued', ?, ?)
               ON CONFLICT DO NOTHING RETURNING uid""",
            (*key, mail_id, now),
        ).fetchall()
        if not taken:
            seen = op_imap_outcome(conn, key)
            assert seen is not None  # noqa: S101  (the conflict was on this key)
            known = tuple(r[0] for r in conn.execute("SELECT id FROM sms WHERE mail_id = ? ORDER BY id", (seen[1],)))
            return Enqueued(seen[1], known, duplicate=True)
    if accepted.fingerprint is not None:
        # Taken in one statement: of two instances given the same mail at once, the
        # second waits for the first's commit here and then finds it (PostgreSQL).
        taken = conn.execute(
            """INSERT INTO seen (fingerprint, mail_id, at) VALUES (?, ?, ?)
               ON CONFLICT (fingerprint) DO UPDATE SET mail_id = excluded.mail_id, at = excluded.at
               WHERE seen.at <= ? RETURNING mail_id""",
            (accepted.fingerprint, mail_id, now, now - dedupe_window),
        ).fetchall()
        if not taken:
            first = conn.execute("SELECT mail_id FROM seen WHERE fingerprint = ?", (accepted.fingerprint,)).fetchone()
            known = tuple(r[0] for r in conn.execute("SELECT id FROM sms WHERE mail_id = ? ORDER BY id", (first[0],)))
            if key is not None:
                conn.execute(
                    """UPDATE imap_seen SET outcome = 'duplicate', mail_id = ?
                       WHERE mailbox = ? AND uidvalidity = ? AND uid = ?""",
                    (first[0], *key),
                )
            return Enqueued(first[0], known, duplicate=True)
    if usage:
        messages = sum(len(r.numbers) for r in accepted.requests)
        op_use(conn, usage, messages, sum(r.points for r in accepted.requests), now)
    ids: list[str] = []
    for n, request in enumerate(accepted.requests, start=1):
        row_id = mail_id if len(accepted.requests) == 1 else f"{mail_id}.{n}"
        creds = request.credentials
        columns = {"id": row_id, "mail_id": mail_id, "created": now, "updated": now, **_origin_columns(accepted)}
        columns |= _columns(request, REQUEST) | {"batch_key": batch_key(request)}
        columns |= {"cred_user": creds.username if creds else None, "cred_pass": creds.password if creds else None}
        columns |= {"state": State.QUEUED, "next_attempt": now}
        if accepted.keep > 0:
            columns |= {"claimed_by": owner, "lease_until": now + accepted.keep}
        _insert(conn, "sms", columns)
        detail = (
            f"via {accepted.via}, client {accepted.client or '-'}, route {request.route}, account {request.account}"
        )
        if accepted.warnings:
            detail += "; warnings: " + "; ".join(accepted.warnings)
        _log(conn, [row_id], now, "accepted", detail)
        ids.append(row_id)
    for account in dict.fromkeys(r.account for r in accepted.requests):
        _notify(conn, f"queued:{account}")
    return Enqueued(mail_id, tuple(ids))


#: queued rows a claim looks at, at most, before it gives up for now
CLAIM_SCAN = 500

#: a queued row another bridge may take: not kept for the bridge whose SMTP session waits for its
#: first outcome (``ack: delivered``; ``claimed_by`` and ``lease_until`` set at enqueue). Two
#: parameters: now, and the claiming bridge.
NOT_KEPT = "(lease_until IS NULL OR lease_until < ? OR claimed_by = ?)"


class _Paced:
    """Which numbers of an account may not be sent to yet: looked up by primary key, only
    for the numbers a claim considers, and remembered for the rest of the claim."""

    def __init__(self, conn: Tx, account: str, now: float, active: bool) -> None:
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


def _first_free(conn: Tx, account: str, now: float, paced: _Paced, owner: str) -> Row | None:
    """The most overdue row none of whose numbers is paced. A row that waits for a
    paced number is moved to when its numbers are free, out of the way of the rows
    behind it: the bridge plans around the provider's rule instead of learning it."""
    for _ in range(CLAIM_SCAN):
        rec = conn.execute(
            f"""SELECT * FROM sms WHERE state = 'queued' AND account = ? AND next_attempt <= ? AND {NOT_KEPT}
               ORDER BY next_attempt, id LIMIT 1{_for_update(conn)}""",  # noqa: S608  (constants)
            (account, now, now, owner),
        ).fetchone()
        if rec is None:
            return None
        row = _row(rec)
        free_at = paced.until(row.request.numbers)
        if free_at <= now:
            return row
        conn.execute("UPDATE sms SET next_attempt = ? WHERE id = ?", (free_at, row.id))
    return None


def _combined(conn: Tx, first: Row, now: float, paced: _Paced, owner: str) -> Group:
    """``first`` and others with the same sender, language and text whose numbers
    do not overlap and are not paced (≤ 200 numbers)."""
    group = Group([first])
    numbers = set(first.request.numbers)
    if first.request.credentials is not None or len(numbers) >= MAX_GROUP_NUMBERS:
        return group
    for rec in conn.execute(
        f"""SELECT * FROM sms WHERE state = 'queued' AND account = ? AND batch_key = ? AND next_attempt <= ?
           AND id != ? AND {NOT_KEPT} ORDER BY next_attempt LIMIT 400{_for_update(conn)}""",  # noqa: S608  (constants)
        (first.request.account, batch_key(first.request), now, first.id, now, owner),
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


def _digested(conn: Tx, first: Row, now: float, pacing: Pacing, owner: str) -> Group:
    """``first`` and the other alerts waiting for the same numbers on its route, in one SMS."""
    req = first.request
    recs = conn.execute(
        f"""SELECT * FROM sms WHERE state = 'queued' AND account = ? AND digest = 1 AND route = ? AND sender = ?
           AND numbers = ? AND next_attempt <= ? AND cred_user IS NULL AND {NOT_KEPT}
           ORDER BY next_attempt, id LIMIT 2000{_for_update(conn)}""",  # noqa: S608  (constants)
        (req.account, req.route, req.sender, ",".join(req.numbers), now, now, owner),
    ).fetchall()
    rows = {r.id: r for r in map(_row, recs)}
    rows.setdefault(first.id, first)
    waiting = [first] + [r for r in rows.values() if r.id != first.id]
    key = "\x1f".join([req.route, req.sender, ",".join(req.numbers)])  # PostgreSQL text holds no NUL
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
    conn: Tx,
    account: str,
    now: float,
    combine: bool = True,
    pacing: Pacing | None = None,
    *,
    owner: str = "",
    lease: float = 60.0,
) -> Group:
    """Reserve the most overdue row of ``account`` whose numbers may be sent to now, with
    the alerts waiting for the same numbers (a digest) or, when ``combine``, rows with the
    same text to other numbers. The numbers are then paced for ``pacing.interval``.

    The rows are leased to ``owner`` until ``now + lease`` and each one's fencing token
    goes up by one: only the holder of the current token may hand the row to a provider
    (:func:`op_mark_sending`). Claims of one account are serialised across instances,
    so that two never decide on the same number's pacing at once."""
    pacing = pacing or Pacing()
    _lock(conn, f"claim:{account}")
    paced = _Paced(conn, account, now, pacing.interval > 0)
    first = _first_free(conn, account, now, paced, owner)
    if first is None:
        return Group()
    if first.request.digest:
        group = _digested(conn, first, now, pacing, owner)
    elif combine:
        group = _combined(conn, first, now, paced, owner)
    else:
        group = Group([first])
    conn.executemany(
        """UPDATE sms SET state = 'claimed', updated = ?, claimed_by = ?, lease_until = ?, fence = fence + 1
           WHERE id = ?""",
        [(now, owner, now + lease, i) for i in group.ids],
    )
    group.rows = [
        replace(r, delivery=replace(r.delivery, claimed_by=owner, lease_until=now + lease, fence=r.delivery.fence + 1))
        for r in group.rows
    ]
    if pacing.interval > 0:
        op_pace(conn, account, group.request().numbers, now + pacing.interval)
    return group


def op_fail_over(conn: Tx, moves: Sequence[tuple[Row, SmsRequest]], now: float, *, reason: str, code: str) -> None:
    """Each row to its next account, as revalidated there, queued at once; the account
    that did not send it joins ``tried``."""
    for row, request in moves:
        columns = _columns(request, REQUEST) | {"batch_key": batch_key(request)}
        tried = ",".join([*row.delivery.tried, row.request.account])
        sets = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"""UPDATE sms SET {sets}, tried = ?, state = 'queued', lease_until = NULL, next_attempt = ?, updated = ?, carrier = '',
                   last_error = ?, last_code = ? WHERE id = ?""",  # noqa: S608  (column names from the dataclass)
            (*columns.values(), tried, now, now, reason, code, row.id),
        )
        detail = f"from {row.request.account} to {request.account}: {code + ' ' if code else ''}{reason}"
        _log(conn, [row.id], now, "failover", detail)
        _notify(conn, f"queued:{request.account}")


def op_hold(conn: Tx, ids: Sequence[str], until: float, now: float) -> None:
    """Claimed rows back to the queue, not before ``until`` (no attempt was made)."""
    conn.executemany(
        "UPDATE sms SET state = 'queued', lease_until = NULL, next_attempt = CASE WHEN next_attempt > ? THEN next_attempt ELSE ? END, updated = ?"
        " WHERE id = ? AND state = 'claimed'",
        [(until, until, now, i) for i in ids],
    )


def op_pace(conn: Tx, account: str, numbers: Sequence[str], until: float) -> None:
    """No SMS to ``numbers`` from ``account`` before ``until``."""
    conn.executemany(
        """INSERT INTO pacing (account, number, until) VALUES (?, ?, ?)
           ON CONFLICT (account, number) DO UPDATE SET until = CASE WHEN pacing.until > excluded.until THEN pacing.until ELSE excluded.until END""",
        [(account, n, until) for n in numbers],
    )


def op_paced_until(conn: Tx, account: str, numbers: Sequence[str], now: float) -> float | None:
    """The latest time one of ``numbers`` is held back until (``sms-bridge send``), or None."""
    marks = ",".join("?" * len(numbers))
    rec = conn.execute(
        f"SELECT max(until) FROM pacing WHERE account = ? AND until > ? AND number IN ({marks})",  # noqa: S608  (placeholders only)
        (account, now, *numbers),
    ).fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def op_mark_sending(conn: Tx, group: Group, now: float) -> None:
    """The group is being handed to the provider. Raises :class:`LeaseLost` (and changes
    nothing) if another instance claimed any of its rows since: its lease ran out."""
    for row in group.rows:
        changed = conn.execute(
            """UPDATE sms SET state = 'sending', attempts = attempts + 1, updated = ?
               WHERE id = ? AND state = 'claimed' AND fence = ?""",
            (now, row.id, row.delivery.fence),
        ).rowcount
        if changed != 1:
            raise LeaseLost(f"{row.id} is no longer this instance's to send (its lease ran out); not sending it")


def op_unclaim(conn: Tx, ids: Sequence[str], now: float) -> None:
    conn.executemany(
        "UPDATE sms SET state = 'queued', lease_until = NULL, updated = ? WHERE id = ? AND state = 'claimed'",
        [(now, i) for i in ids],
    )


def op_sent(
    conn: Tx,
    group: Group,
    now: float,
    *,
    msg_id: str,
    raw: str,
    balance_after: float | None,
    confirmed: bool,
) -> None:
    how = f"in a digest of {len(group.rows)} alerts led by {group.rows[0].id}; " if group.digest is not None else ""
    relay = "" if confirmed else " (handed to the mail relay)"
    charges = group.charges()
    recorded: list[str] = []
    for row in group.rows:
        changed = conn.execute(
            f"""UPDATE sms SET state = 'sent', updated = ?, provider_msg_id = ?, provider_reply = ?, points_charged = ?,
                   balance_after = ?, confirmed = ?, last_error = '', last_code = '',
                   {ERASED}
               WHERE id = ? AND state = 'sending' AND fence = ?""",  # noqa: S608  (a constant, no input)
            (now, msg_id, raw[:2000], charges[row.id], balance_after, int(confirmed), row.id, row.delivery.fence),
        ).rowcount
        if changed:
            recorded.append(row.id)
        else:  # declared unknown by another instance meanwhile: the operator sees what came back
            _log(conn, [row.id], now, "late answer", f"sent after all: {how}provider id {msg_id}{relay}")
    _log_attempt(conn, recorded, now, "sent", f"{how}provider id {msg_id}{relay}")


def op_retry_later(
    conn: Tx, schedule: Sequence[tuple[str, float]], now: float, *, error: str, code: str, raw: str
) -> None:
    """Back to the queue: each ``(id, when)`` is tried again at ``when``."""
    conn.executemany(
        """UPDATE sms SET state = 'queued', lease_until = NULL, updated = ?, next_attempt = ?, last_error = ?, last_code = ?,
               provider_reply = ? WHERE id = ? AND state IN ('claimed', 'sending')""",
        [(now, when, error, code, raw[:2000], i) for i, when in schedule],
    )
    for i, when in schedule:
        _log_attempt(conn, [i], now, "retry", f"{_reply_note(code, error, raw)}; next attempt in {when - now:.0f} s")


#: the states the dispatcher finishes rows from
IN_HAND = (State.CLAIMED, State.SENDING)


def op_finish(
    conn: Tx,
    ids: Sequence[str],
    now: float,
    *,
    state: State,
    error: str,
    code: str,
    raw: str,
    notice: Notice,
    from_states: Iterable[State] = IN_HAND,
) -> list[str]:
    """A final state other than sent, for rows still in one of ``from_states``; body
    credentials are erased. The ids changed."""
    allowed = ",".join(f"'{s}'" for s in from_states)
    changed = [
        i
        for i in ids
        if conn.execute(
            f"""UPDATE sms SET state = ?, updated = ?, last_error = ?, last_code = ?, provider_reply = ?, notice = ?,
                   {ERASED} WHERE id = ? AND state IN ({allowed})""",  # noqa: S608  (constants, no input)
            (state, now, error, code, raw[:2000], notice, i),
        ).rowcount
    ]
    if state == State.CANCELLED:
        return changed
    _log_attempt(conn, changed, now, str(state), _reply_note(code, error, raw))
    if state == State.UNKNOWN or (state == State.EXPIRED and error.endswith(MAYBE_SENT)):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ?", [(i,) for i in changed])
    if notice == Notice.PENDING or state == State.UNKNOWN:
        _notify(conn, "notice")
    return changed


def op_recover(
    conn: Tx, now: float, at_least_once: Sequence[str], *, expired_only: bool = False, owner: str | None = None
) -> dict[str, int]:
    """Rows an instance stopped holding: claimed ones go back to the queue; ones left
    ``sending`` become ``unknown``, or are queued again for accounts that opted in to
    at-least-once. Every such row at a start (one instance: SQLite); with several
    instances, only rows whose lease ran out, or that ``owner`` (this instance's
    previous run) held."""
    whose, extra = "", cast(tuple[Any, ...], ())
    if expired_only:
        whose = " AND (lease_until IS NULL OR lease_until < ?" + (" OR claimed_by = ?)" if owner else ")")
        extra = (now, owner) if owner else (now,)
    counts = {"requeued": 0, "unknown": 0, "resent": 0}
    counts["requeued"] = conn.execute(
        f"UPDATE sms SET state = 'queued', updated = ?, claimed_by = '', lease_until = NULL WHERE state = 'claimed'{whose}",  # noqa: S608  (constants)
        (now, *extra),
    ).rowcount
    if at_least_once:
        marks = ",".join("?" * len(at_least_once))
        counts["resent"] = conn.execute(
            f"""UPDATE sms SET state = 'queued', updated = ?, next_attempt = ?, claimed_by = '', lease_until = NULL
                WHERE state = 'sending' AND account IN ({marks}){whose}""",  # noqa: S608  (placeholders only)
            (now, now, *at_least_once, *extra),
        ).rowcount
    stopped = "the bridge stopped while this SMS was being handed to the provider; it may have been sent"
    lost = [
        r[0]
        for r in conn.execute(
            f"""UPDATE sms SET state = 'unknown', updated = ?, {ERASED}, last_error = ?, notice = 'pending',
                   operator = 'pending' WHERE state = 'sending'{whose} RETURNING id""",  # noqa: S608  (a constant, no input)
            (now, stopped, *extra),
        ).fetchall()
    ]
    counts["unknown"] = len(lost)
    _log(conn, lost, now, "unknown", stopped)
    if lost:
        _notify(conn, "notice")
    if counts["requeued"] or counts["resent"]:
        _notify(conn, "queued:*")
    return counts


def op_renew(conn: Tx, owner: str, until: float) -> int:
    """The rows ``owner`` is handing to a provider stay its own until ``until``; how many.
    A claim is not renewed: one its holder dropped (the database was away when it
    would have put it back) returns to the queue when its lease runs out."""
    return conn.execute(
        "UPDATE sms SET lease_until = ? WHERE claimed_by = ? AND state = 'sending'", (until, owner)
    ).rowcount


def op_release_held_notices(conn: Tx, owner: str | None = None, before: float | None = None) -> int:
    """Notices held for an SMTP session that will not answer them are sent after all: at
    start-up those of this instance (``owner``; on a private outbox, every one), and at
    any time those held since before ``before`` (longer than any session waits: it lost
    the outbox, or its bridge died). How many."""
    where, params = "notice = 'held'", list[object]()
    if owner is not None:
        where, params = where + " AND claimed_by = ?", [*params, owner]
    if before is not None:
        where, params = where + " AND updated < ?", [*params, before]
    ids = [r[0] for r in conn.execute(f"SELECT id FROM sms WHERE {where}", params)]  # noqa: S608  (constants)
    conn.executemany("UPDATE sms SET notice = 'pending' WHERE id = ? AND notice = 'held'", [(i,) for i in ids])
    _log(conn, ids, time.time(), "notice released", "the SMTP session that held it did not answer")
    return len(ids)


def op_next_due(conn: Tx, account: str, owner: str = "") -> float | None:
    """When ``owner`` may next claim a row of ``account``: a row kept for another bridge's
    waiting SMTP session (see NOT_KEPT) is due to it when the keeping ends."""
    rec = conn.execute(
        """SELECT min(CASE WHEN claimed_by != ? AND lease_until > next_attempt THEN lease_until ELSE next_attempt END)
           FROM sms WHERE state = 'queued' AND account = ?""",
        (owner, account),
    ).fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def op_get(conn: Tx, ident: str) -> list[Row]:
    recs = conn.execute("SELECT * FROM sms WHERE id = ? OR mail_id = ? ORDER BY id", (ident, ident)).fetchall()
    return [_row(r) for r in recs]


def op_list(conn: Tx, state: str | None = None, limit: int = 100) -> list[Row]:
    if state:
        recs = conn.execute("SELECT * FROM sms WHERE state = ? ORDER BY updated DESC LIMIT ?", (state, limit))
    else:
        recs = conn.execute("SELECT * FROM sms ORDER BY updated DESC LIMIT ?", (limit,))
    return [_row(r) for r in recs]


def op_counts(conn: Tx) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(State, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM sms GROUP BY state"):
        counts[state] = count
    return counts


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def op_search(conn: Tx, search: Search) -> list[Row]:
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
    found: list[str] = []
    if search.text:
        found.append("id LIKE ? ESCAPE '\\' OR message_id = ? OR lower(mail_from) = lower(?)")
        found.append("lower(text) LIKE lower(?) ESCAPE '\\'")
        args += [_like(search.text) + "%", search.text, search.text, "%" + _like(search.text) + "%"]
    if search.number:
        found.append("numbers LIKE ?")
        args.append(f"%{search.number}%")
    if found:
        where.append("(" + " OR ".join(found) + ")")
    clauses = " WHERE " + " AND ".join(where) if where else ""
    sql = f"SELECT * FROM sms{clauses} ORDER BY created DESC, id LIMIT ?"  # noqa: S608  (fixed clauses; values are parameters)
    return [_row(r) for r in conn.execute(sql, (*args, search.limit))]


def op_recent_problems(conn: Tx, since: float) -> dict[str, int]:
    """Failed, unknown and expired SMS that ended since ``since``, by state."""
    recs = conn.execute(
        "SELECT state, count(*) FROM sms WHERE state IN ('failed', 'unknown', 'expired') AND updated >= ? GROUP BY state",
        (since,),
    )
    return {state: count for state, count in recs}


def op_oldest_queued(conn: Tx) -> float | None:
    """When the oldest SMS still waiting to be sent was accepted."""
    rec = conn.execute("SELECT min(created) FROM sms WHERE state IN ('queued', 'claimed')").fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def op_requeue(conn: Tx, ident: str, now: float, actor: str = "cli") -> list[str]:
    """``queue retry``: a failed, unknown, expired or cancelled row goes back to the queue."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in RETRYABLE]
    retryable = ",".join(f"'{s}'" for s in sorted(RETRYABLE))
    ids = [
        i
        for i in ids
        if conn.execute(
            f"""UPDATE sms SET state = 'queued', lease_until = NULL, next_attempt = ?, updated = ?, notice = 'none', operator = 'none'
                WHERE id = ? AND state IN ({retryable})""",  # noqa: S608  (constants)
            (now, now, i),
        ).rowcount
    ]
    _log(conn, ids, now, "retry", "queued again by the operator", actor)
    for account in {r.request.account for r in op_get(conn, ident) if r.id in ids}:
        _notify(conn, f"queued:{account}")
    return ids


def op_cancel(conn: Tx, ident: str, now: float, actor: str = "cli") -> list[str]:
    """``queue cancel``: a queued row is not sent."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in CANCELLABLE]
    ids = op_finish(
        conn,
        ids,
        now,
        state=State.CANCELLED,
        error="cancelled by the operator",
        code="",
        raw="",
        notice=Notice.NONE,
        from_states=CANCELLABLE,
    )
    _log(conn, ids, now, "cancelled", "cancelled by the operator", actor)
    return ids


def op_mark_not_sent(conn: Tx, ident: str, now: float, actor: str = "cli") -> list[str]:
    """An ``unknown`` row the operator found not sent in the provider's records: ``failed``."""
    ids = [r.id for r in op_get(conn, ident) if r.delivery.state in UNRESOLVED]
    conn.executemany(
        "UPDATE sms SET state = 'failed', updated = ?, last_error = ?, operator = 'none' WHERE id = ? AND state = ?",
        [(now, "marked as not sent by the operator (checked the provider's records)", i, State.UNKNOWN) for i in ids],
    )
    _log(conn, ids, now, "failed", "marked as not sent by the operator", actor)
    return ids


def op_pending_notices(conn: Tx, limit: int = 50, held_before: float | None = None) -> list[Row]:
    """Notices to send. A notice ``held`` for an SMTP session since before ``held_before``
    was never answered by it (it lost the outbox, or its bridge died): it is sent after all."""
    if held_before is not None:
        op_release_held_notices(conn, before=held_before)
    recs = conn.execute("SELECT * FROM sms WHERE notice = 'pending' ORDER BY updated LIMIT ?", (limit,))
    return [_row(r) for r in recs]


def op_set_notice(conn: Tx, ids: Sequence[str], notice: Notice, detail: str = "") -> None:
    conn.executemany("UPDATE sms SET notice = ? WHERE id = ?", [(notice, i) for i in ids])
    if notice in (Notice.SENT, Notice.SKIPPED, Notice.REPLIED):
        _log(conn, ids, time.time(), f"notice {notice}", detail)
    if notice == Notice.SKIPPED and detail.startswith(UNANSWERABLE):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ? AND operator = 'none'", [(i,) for i in ids])


def op_pending_operator(conn: Tx, limit: int = 500) -> tuple[list[Row], list[RejectionRow]]:
    """What the operator is to be told of: unknown outcomes, and failures and refusals
    whose sender could not be answered."""
    rows = [
        _row(r) for r in conn.execute("SELECT * FROM sms WHERE operator = 'pending' ORDER BY updated LIMIT ?", (limit,))
    ]
    rejections = [r for r in op_pending_rejections(conn, limit, column="operator")]
    return rows, rejections


def op_set_operator(conn: Tx, ids: Sequence[str], rejection_ids: Sequence[str], notice: Notice) -> None:
    conn.executemany("UPDATE sms SET operator = ? WHERE id = ?", [(notice, i) for i in ids])
    conn.executemany("UPDATE rejections SET operator = ? WHERE id = ?", [(notice, i) for i in rejection_ids])
    if notice == Notice.SENT:
        _log(conn, ids, time.time(), "operator told", "listed in the operator's mail")


def op_prune(conn: Tx, before: float) -> int:
    """Forget final rows (and their history) last changed before ``before``; how many."""
    finals = ",".join(f"'{s}'" for s in sorted(FINAL))
    old = f"SELECT id FROM sms WHERE state IN ({finals}) AND updated < ?"  # noqa: S608  (constants)
    conn.execute(f"DELETE FROM history WHERE sms_id IN ({old})", (before,))  # noqa: S608  (constants)
    count = conn.execute(f"DELETE FROM sms WHERE id IN ({old})", (before,)).rowcount  # noqa: S608  (constants)
    conn.execute(
        "DELETE FROM rejections WHERE created < ? AND notice != 'pending' AND operator != 'pending'", (before,)
    )
    op_prune_refusals(conn, before)
    return count


#: refusals kept at the most (the newest); repeats of one address and reason are one row
MAX_REFUSALS = 500


def op_refused(conn: Tx, refusal: Refusal, now: float) -> None:
    """Count a refusal: a new row for a new (stage, address, reason), else one more time."""
    key = f"{refusal.stage}|{refusal.address.lower()}|{refusal.reason}"[:500]
    r = refusal
    values = (
        key,
        now,
        now,
        r.times,
        r.via,
        r.stage,
        r.peer,
        r.client,
        r.mail_from[:300],
        r.address[:300],
        r.reason[:1000],
    )
    conn.execute(
        "INSERT INTO refusals (key, first_at, last_at, times, via, stage, peer, client, mail_from, address, reason) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET last_at = excluded.last_at, "
        "times = refusals.times + excluded.times, peer = excluded.peer, client = excluded.client, mail_from = excluded.mail_from",
        values,
    )


def op_refusals(conn: Tx, limit: int = 50) -> list[Refusal]:
    rows = conn.execute(
        "SELECT via, stage, peer, client, mail_from, address, reason, first_at, last_at, times FROM refusals "
        "ORDER BY last_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Refusal(*row) for row in rows]


def op_prune_refusals(conn: Tx, before: float) -> None:
    conn.execute("DELETE FROM refusals WHERE last_at < ?", (before,))
    conn.execute(
        "DELETE FROM refusals WHERE key NOT IN (SELECT key FROM refusals ORDER BY last_at DESC LIMIT ?)",
        (MAX_REFUSALS,),
    )


def op_prune_seen(conn: Tx, before: float) -> int:
    return conn.execute("DELETE FROM seen WHERE at < ?", (before,)).rowcount


# -- what every backend offers async code ------------------------------------------


class Store:
    """The :class:`~bridge.outbox.Outbox` operations for async code, each run by
    ``self.run`` in a committed transaction. A backend provides ``run``."""

    #: the dedupe window (seconds) for Message-ID resubmissions
    dedupe_window: float = 86400.0
    #: who claims (``queue.instance``), and for how long a claim holds unless renewed
    instance: str = "local"
    lease: float = 60.0
    #: whether several bridges may share this outbox (and its rate, and its IMAP mailboxes)
    shared: bool = False
    commits: int = 0

    #: what wakes this bridge when any bridge queued for an account (None: any), or a notice
    on_queued: Callable[[str | None], None] = staticmethod(lambda account: None)
    on_notice: Callable[[], None] = staticmethod(lambda: None)

    def listen(self, on_queued: Callable[[str | None], None], on_notice: Callable[[], None]) -> None:
        """What to call when another bridge queued for an account (None: any) or left a
        notice to send (PostgreSQL ``NOTIFY``; one bridge alone hears only itself)."""
        self.on_queued = on_queued
        self.on_notice = on_notice

    def clock(self) -> float:
        """Now, as every bridge sharing this outbox reckons it: leases, ``updated`` and
        ``created`` are compared across bridges, so a shared outbox reads its database's
        clock (this one: the host's)."""
        return time.time()

    _displaced: asyncio.Event | None = None

    @property
    def displaced(self) -> asyncio.Event:
        """Set when this bridge can no longer be the instance it was (a shared outbox only):
        it must stop, and start again under a free name."""
        if self._displaced is None:
            self._displaced = asyncio.Event()
        return self._displaced

    def describe(self) -> str:
        return type(self).__name__

    async def health(self) -> tuple[bool, str]:
        return True, self.describe()

    async def rate_slot(self, account: str, interval: float) -> float:
        """Take the account's next request slot; seconds to wait for it (shared outboxes
        only: one bridge alone paces itself in memory)."""
        raise NotImplementedError

    async def instances(self) -> list[tuple[str, str, float]]:
        """(id, host, last heard from) of the bridges sharing the outbox: this one alone."""
        return [(self.instance, socket.gethostname(), self.clock())]

    def leadership(self, name: str) -> Leadership:
        """One bridge alone on its outbox leads everything, always."""
        leadership = Leadership(name)
        leadership.take()
        return leadership

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, fn: Callable[[Any], T]) -> T:  # pragma: no cover  (each backend has its own)
        raise NotImplementedError

    # -- the Outbox operations ----------------------------------------------

    async def enqueue(
        self, accepted: Accepted, key: ImapKey | None = None, usage: Sequence[tuple[str, Any]] = ()
    ) -> Enqueued:
        window = self.dedupe_window
        return await self.run(lambda c: op_enqueue(c, accepted, self.clock(), window, key, usage, self.instance))

    async def claim(self, account: str, *, combine: bool = True, pacing: Pacing | None = None) -> Group:
        owner, lease = self.instance, self.lease
        return await self.run(lambda c: op_claim(c, account, self.clock(), combine, pacing, owner=owner, lease=lease))

    async def pace(self, account: str, numbers: Sequence[str], until: float) -> None:
        await self.run(lambda c: op_pace(c, account, numbers, until))

    async def fail_over(self, moves: Sequence[tuple[Row, SmsRequest]], *, reason: str, code: str) -> None:
        now = self.clock()
        await self.run(lambda c: op_fail_over(c, moves, now, reason=reason, code=code))

    async def hold(self, ids: Sequence[str], until: float) -> None:
        now = self.clock()
        await self.run(lambda c: op_hold(c, ids, until, now))

    async def next_due(self, account: str) -> float | None:
        owner = self.instance
        return await self.run(lambda c: op_next_due(c, account, owner))

    async def counts(self) -> dict[str, int]:
        return await self.run(op_counts)

    async def oldest_queued(self) -> float | None:
        return await self.run(op_oldest_queued)

    async def search(self, search: Search) -> list[Row]:
        return await self.run(lambda c: op_search(c, search))

    async def recent_problems(self, since: float) -> dict[str, int]:
        return await self.run(lambda c: op_recent_problems(c, since))

    async def mark_sending(self, group: Group) -> None:
        await self.run(lambda c: op_mark_sending(c, group, self.clock()))

    async def mark_sent(
        self, group: Group, *, msg_id: str, raw: str, balance_after: float | None, confirmed: bool
    ) -> None:
        now = self.clock()
        await self.run(
            lambda c: op_sent(c, group, now, msg_id=msg_id, raw=raw, balance_after=balance_after, confirmed=confirmed)
        )

    async def retry_later(self, schedule: Sequence[tuple[str, float]], *, error: str, code: str, raw: str) -> None:
        now = self.clock()
        await self.run(lambda c: op_retry_later(c, schedule, now, error=error, code=code, raw=raw))

    async def finish(
        self, ids: Sequence[str], *, state: State, error: str, code: str, raw: str, notice: Notice
    ) -> list[str]:
        now = self.clock()
        return await self.run(
            lambda c: op_finish(c, ids, now, state=state, error=error, code=code, raw=raw, notice=notice)
        )

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
        return await self.run(lambda c: op(c, ident, self.clock(), actor))

    async def prune(self, before: float) -> int:
        return await self.run(lambda c: op_prune(c, before))

    async def pending_notices(self, limit: int = 50, held_before: float | None = None) -> list[Row]:
        return await self.run(lambda c: op_pending_notices(c, limit, held_before))

    async def pending_rejections(self, limit: int = 50) -> list[RejectionRow]:
        return await self.run(lambda c: op_pending_rejections(c, limit))

    async def set_rejection_notice(self, ids: Sequence[str], notice: Notice) -> None:
        await self.run(lambda c: op_set_rejection_notice(c, ids, notice))

    async def imap_outcome(self, key: ImapKey) -> tuple[str, str] | None:
        return await self.run(lambda c: op_imap_outcome(c, key))

    async def reject(self, rejection: Rejection, key: ImapKey | None = None) -> str:
        now = self.clock()
        return await self.run(lambda c: op_reject(c, rejection, now, key))

    async def refused(self, refusal: Refusal) -> None:
        now = self.clock()
        await self.run(lambda c: op_refused(c, refusal, now))

    async def refusals(self, limit: int = 50) -> list[Refusal]:
        return await self.run(lambda c: op_refusals(c, limit))

    async def record_balance(self, account: str, balance: float) -> float | None:
        return await self.run(lambda c: op_record_balance(c, account, balance, self.clock()))

    async def balances(self) -> dict[str, float]:
        return await self.run(op_balances)

    async def start_up(self, *, at_least_once: Sequence[str]) -> dict[str, int]:
        """After a start: recover from an unclean stop, release held notices, forget old counts."""
        now = self.clock()
        window, shared, owner = self.dedupe_window, self.shared, self.instance

        def work(conn: Tx) -> dict[str, int]:
            recovered = op_recover(conn, now, at_least_once, expired_only=shared, owner=owner if shared else None)
            op_release_held_notices(conn, owner if shared else None)
            op_prune_seen(conn, now - window)
            op_prune_usage(conn, now)
            conn.execute("DELETE FROM pacing WHERE until < ?", (now,))
            return recovered

        return await self.run(work)
