"""Taking mail in: a mail's rows in one transaction, once (Message-ID and IMAP identity),
within the spending limits; refused mail and refusals recorded."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bridge.errors import LimitExceeded
from bridge.outbox.rows import REQUEST, columns_of, insert, log_event, origin_columns
from bridge.outbox.states import Notice, State
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    Accepted,
    Enqueued,
    ImapKey,
    Refusal,
    Rejection,
    batch_key,
    new_mail_id,
)

WINDOWS = {"minute": 60, "hour": 3600, "day": 86400}


def imap_outcome(conn: Tx, key: ImapKey) -> tuple[str, str] | None:
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


def reject(conn: Tx, rejection: Rejection, key: ImapKey | None = None) -> str:
    """Record a refused mail (and its IMAP identity) in one transaction; its id."""
    now = conn.now
    rejection_id = new_mail_id()
    columns = {"id": rejection_id, "created": now, **origin_columns(rejection)}
    columns["problems"] = json.dumps([list(p) for p in rejection.problems])
    columns["notice"] = Notice.PENDING if rejection.notify else Notice.SKIPPED
    columns["operator"] = Notice.NONE if rejection.notify else Notice.PENDING
    insert(conn, "rejections", columns)
    _mark_imap(conn, key, "rejected", rejection_id, now)
    return rejection_id


def count_usage(conn: Tx, scopes: Sequence[tuple[str, Any]], messages: int, points: int) -> None:
    """Count ``messages`` and ``points`` against each scope's limits (a ``LimitsConfig``),
    or raise :class:`LimitExceeded` without counting anything."""
    now = conn.now
    counted = []
    lock = " FOR UPDATE" if conn.dialect.for_update else ""  # two instances never both take the last one
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


def enqueue(
    conn: Tx,
    accepted: Accepted,
    key: ImapKey | None = None,
    usage: Sequence[tuple[str, Any]] = (),
) -> Enqueued:
    """Store the mail's rows (and its IMAP identity) in one transaction, unless it was seen.
    Rows whose first outcome an SMTP session waits for are kept for ``owner``, the bridge
    it runs on, for ``accepted.keep`` seconds.

    The IMAP identity and the fingerprint are each taken by one statement first: of
    two instances given the same mail at once, the second waits there for the
    first's commit, then finds it (PostgreSQL)."""
    now = conn.now
    dedupe_window = conn.settings.dedupe_window
    owner = conn.settings.instance
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
            seen = imap_outcome(conn, key)
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
        count_usage(conn, usage, messages, sum(r.points for r in accepted.requests))
    ids: list[str] = []
    for n, request in enumerate(accepted.requests, start=1):
        row_id = mail_id if len(accepted.requests) == 1 else f"{mail_id}.{n}"
        creds = request.credentials
        columns = {"id": row_id, "mail_id": mail_id, "created": now, "updated": now, **origin_columns(accepted)}
        columns |= columns_of(request, REQUEST) | {"batch_key": batch_key(request)}
        columns |= {"cred_user": creds.username if creds else None, "cred_pass": creds.password if creds else None}
        columns |= {"state": State.QUEUED, "next_attempt": now}
        if accepted.keep > 0:
            columns |= {"claimed_by": owner, "lease_until": now + accepted.keep}
        insert(conn, "sms", columns)
        detail = (
            f"via {accepted.via}, client {accepted.client or '-'}, route {request.route}, account {request.account}"
        )
        if accepted.warnings:
            detail += "; warnings: " + "; ".join(accepted.warnings)
        log_event(conn, [row_id], now, "accepted", detail)
        ids.append(row_id)
    for account in dict.fromkeys(r.account for r in accepted.requests):
        conn.dialect.notify(conn, f"queued:{account}")
    return Enqueued(mail_id, tuple(ids))


#: refusals kept at the most (the newest); repeats of one address and reason are one row
MAX_REFUSALS = 500


def refused(conn: Tx, refusal: Refusal) -> None:
    """Count a refusal: a new row for a new (stage, address, reason), else one more time."""
    now = conn.now
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
