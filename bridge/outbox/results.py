"""What a provider call came to: sent, to be retried, or final; and the balance it reported."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from bridge.outbox.rows import ERASED, log_attempt, log_event, reply_note
from bridge.outbox.states import MAYBE_SENT, Notice, State
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    Group,
)


def record_balance(conn: Tx, account: str, balance: float) -> float | None:
    """Store the balance a provider reported; the one known before."""
    now = conn.now
    rec = conn.execute("SELECT balance FROM balances WHERE account = ?", (account,)).fetchone()
    conn.execute(
        "INSERT INTO balances (account, balance, at) VALUES (?, ?, ?) "
        "ON CONFLICT (account) DO UPDATE SET balance = excluded.balance, at = excluded.at",
        (account, balance, now),
    )
    return None if rec is None else float(rec[0])


def sent(
    conn: Tx,
    group: Group,
    *,
    msg_id: str,
    raw: str,
    balance_after: float | None,
    confirmed: bool,
) -> None:
    now = conn.now
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
            log_event(conn, [row.id], now, "late answer", f"sent after all: {how}provider id {msg_id}{relay}")
    log_attempt(conn, recorded, now, "sent", f"{how}provider id {msg_id}{relay}")


def retry_later(conn: Tx, schedule: Sequence[tuple[str, float]], *, error: str, code: str, raw: str) -> None:
    """Back to the queue: each ``(id, when)`` is tried again at ``when``."""
    now = conn.now
    conn.executemany(
        """UPDATE sms SET state = 'queued', lease_until = NULL, updated = ?, next_attempt = ?, last_error = ?, last_code = ?,
               provider_reply = ? WHERE id = ? AND state IN ('claimed', 'sending')""",
        [(now, when, error, code, raw[:2000], i) for i, when in schedule],
    )
    for i, when in schedule:
        log_attempt(conn, [i], now, "retry", f"{reply_note(code, error, raw)}; next attempt in {when - now:.0f} s")


#: the states the dispatcher finishes rows from
IN_HAND = (State.CLAIMED, State.SENDING)


def finish(
    conn: Tx,
    ids: Sequence[str],
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
    now = conn.now
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
    log_attempt(conn, changed, now, str(state), reply_note(code, error, raw))
    if state == State.UNKNOWN or (state == State.EXPIRED and error.endswith(MAYBE_SENT)):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ?", [(i,) for i in changed])
    if notice == Notice.PENDING or state == State.UNKNOWN:
        conn.dialect.notify(conn, "notice")
    return changed
