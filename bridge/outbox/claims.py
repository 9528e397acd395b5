"""Claiming work: the most overdue row an account may send now, with the rows that can go in
the same provider call or digest, leased to one bridge; pacing per number; fail-over."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from bridge.core import digest
from bridge.core.model import SmsRequest
from bridge.errors import LeaseLost
from bridge.outbox.rows import REQUEST, columns_of, log_event, to_row
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    MAX_GROUP_NUMBERS,
    Group,
    Pacing,
    Row,
    batch_key,
)

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
               ORDER BY next_attempt, id LIMIT 1{conn.dialect.for_update}""",  # noqa: S608  (constants)
            (account, now, now, owner),
        ).fetchone()
        if rec is None:
            return None
        row = to_row(rec)
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
           AND id != ? AND {NOT_KEPT} ORDER BY next_attempt LIMIT 400{conn.dialect.for_update}""",  # noqa: S608  (constants)
        (first.request.account, batch_key(first.request), now, first.id, now, owner),
    ):
        row = to_row(rec)
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
           ORDER BY next_attempt, id LIMIT 2000{conn.dialect.for_update}""",  # noqa: S608  (constants)
        (req.account, req.route, req.sender, ",".join(req.numbers), now, now, owner),
    ).fetchall()
    rows = {r.id: r for r in map(to_row, recs)}
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


def claim(
    conn: Tx,
    account: str,
    *,
    combine: bool = True,
    pacing: Pacing | None = None,
) -> Group:
    """Reserve the most overdue row of ``account`` whose numbers may be sent to now, with
    the alerts waiting for the same numbers (a digest) or, when ``combine``, rows with the
    same text to other numbers. The numbers are then paced for ``pacing.interval``.

    The rows are leased to ``owner`` until ``now + lease`` and each one's fencing token
    goes up by one: only the holder of the current token may hand the row to a provider
    (:func:`mark_sending`). Claims of one account are serialised across instances,
    so that two never decide on the same number's pacing at once."""
    now = conn.now
    owner, lease = conn.settings.instance, conn.settings.lease
    pacing = pacing or Pacing()
    conn.dialect.lock(conn, f"claim:{account}")
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
        pace(conn, account, group.request().numbers, now + pacing.interval)
    return group


def fail_over(conn: Tx, moves: Sequence[tuple[Row, SmsRequest]], *, reason: str, code: str) -> None:
    """Each row to its next account, as revalidated there, queued at once; the account
    that did not send it joins ``tried``."""
    now = conn.now
    for row, request in moves:
        columns = columns_of(request, REQUEST) | {"batch_key": batch_key(request)}
        tried = ",".join([*row.delivery.tried, row.request.account])
        sets = ", ".join(f"{name} = ?" for name in columns)
        conn.execute(
            f"""UPDATE sms SET {sets}, tried = ?, state = 'queued', lease_until = NULL, next_attempt = ?, updated = ?, carrier = '',
                   last_error = ?, last_code = ? WHERE id = ?""",  # noqa: S608  (column names from the dataclass)
            (*columns.values(), tried, now, now, reason, code, row.id),
        )
        detail = f"from {row.request.account} to {request.account}: {code + ' ' if code else ''}{reason}"
        log_event(conn, [row.id], now, "failover", detail)
        conn.dialect.notify(conn, f"queued:{request.account}")


def hold(conn: Tx, ids: Sequence[str], until: float) -> None:
    """Claimed rows back to the queue, not before ``until`` (no attempt was made)."""
    now = conn.now
    conn.executemany(
        "UPDATE sms SET state = 'queued', lease_until = NULL, next_attempt = CASE WHEN next_attempt > ? THEN next_attempt ELSE ? END, updated = ?"
        " WHERE id = ? AND state = 'claimed'",
        [(until, until, now, i) for i in ids],
    )


def pace(conn: Tx, account: str, numbers: Sequence[str], until: float) -> None:
    """No SMS to ``numbers`` from ``account`` before ``until``."""
    conn.executemany(
        """INSERT INTO pacing (account, number, until) VALUES (?, ?, ?)
           ON CONFLICT (account, number) DO UPDATE SET until = CASE WHEN pacing.until > excluded.until THEN pacing.until ELSE excluded.until END""",
        [(account, n, until) for n in numbers],
    )


def paced_until(conn: Tx, account: str, numbers: Sequence[str]) -> float | None:
    """The latest time one of ``numbers`` is held back until (``sms-bridge send``), or None."""
    now = conn.now
    marks = ",".join("?" * len(numbers))
    rec = conn.execute(
        f"SELECT max(until) FROM pacing WHERE account = ? AND until > ? AND number IN ({marks})",  # noqa: S608  (placeholders only)
        (account, now, *numbers),
    ).fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def mark_sending(conn: Tx, group: Group) -> None:
    """The group is being handed to the provider. Raises :class:`LeaseLost` (and changes
    nothing) if another instance claimed any of its rows since: its lease ran out."""
    now = conn.now
    for row in group.rows:
        changed = conn.execute(
            """UPDATE sms SET state = 'sending', attempts = attempts + 1, updated = ?
               WHERE id = ? AND state = 'claimed' AND fence = ?""",
            (now, row.id, row.delivery.fence),
        ).rowcount
        if changed != 1:
            raise LeaseLost(f"{row.id} is no longer this instance's to send (its lease ran out); not sending it")


def unclaim(conn: Tx, ids: Sequence[str]) -> None:
    now = conn.now
    conn.executemany(
        "UPDATE sms SET state = 'queued', lease_until = NULL, updated = ? WHERE id = ? AND state = 'claimed'",
        [(now, i) for i in ids],
    )


def renew(conn: Tx, owner: str, until: float) -> int:
    """The rows ``owner`` is handing to a provider stay its own until ``until``; how many.
    A claim is not renewed: one its holder dropped (the database was away when it
    would have put it back) returns to the queue when its lease runs out."""
    return conn.execute(
        "UPDATE sms SET lease_until = ? WHERE claimed_by = ? AND state = 'sending'", (until, owner)
    ).rowcount


def next_due(conn: Tx, account: str) -> float | None:
    """When ``owner`` may next claim a row of ``account``: a row kept for another bridge's
    waiting SMTP session (see NOT_KEPT) is due to it when the keeping ends."""
    owner = conn.settings.instance
    rec = conn.execute(
        """SELECT min(CASE WHEN claimed_by != ? AND lease_until > next_attempt THEN lease_until ELSE next_attempt END)
           FROM sms WHERE state = 'queued' AND account = ?""",
        (owner, account),
    ).fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])
