"""The operator's actions, one table for the CLI and the status page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.outbox.results import finish
from bridge.outbox.rows import log_event
from bridge.outbox.states import CANCELLABLE, RETRYABLE, UNRESOLVED, Notice, State
from bridge.outbox.tx import Tx
from bridge.outbox.views import rows_of


def requeue(conn: Tx, ident: str, actor: str = "cli") -> list[str]:
    """``queue retry``: a failed, unknown, expired or cancelled row goes back to the queue."""
    now = conn.now
    ids = [r.id for r in rows_of(conn, ident) if r.delivery.state in RETRYABLE]
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
    log_event(conn, ids, now, "retry", "queued again by the operator", actor)
    for account in {r.request.account for r in rows_of(conn, ident) if r.id in ids}:
        conn.dialect.notify(conn, f"queued:{account}")
    return ids


def cancel(conn: Tx, ident: str, actor: str = "cli") -> list[str]:
    """``queue cancel``: a queued row is not sent."""
    now = conn.now
    ids = [r.id for r in rows_of(conn, ident) if r.delivery.state in CANCELLABLE]
    ids = finish(
        conn,
        ids,
        state=State.CANCELLED,
        error="cancelled by the operator",
        code="",
        raw="",
        notice=Notice.NONE,
        from_states=CANCELLABLE,
    )
    log_event(conn, ids, now, "cancelled", "cancelled by the operator", actor)
    return ids


def mark_not_sent(conn: Tx, ident: str, actor: str = "cli") -> list[str]:
    """An ``unknown`` row the operator found not sent in the provider's records: ``failed``."""
    now = conn.now
    ids = [r.id for r in rows_of(conn, ident) if r.delivery.state in UNRESOLVED]
    conn.executemany(
        "UPDATE sms SET state = 'failed', updated = ?, last_error = ?, operator = 'none' WHERE id = ? AND state = ?",
        [(now, "marked as not sent by the operator (checked the provider's records)", i, State.UNKNOWN) for i in ids],
    )
    log_event(conn, ids, now, "failed", "marked as not sent by the operator", actor)
    return ids


@dataclass(frozen=True)
class Action:
    """An operator's action: what the CLI's ``queue <name>`` and the status page's button do."""

    name: str
    #: the status page's button
    label: str
    #: what the CLI says it did to each row
    done: str
    #: the states a row may be in for it
    states: frozenset[State]
    #: why nothing changed, when no row was in one of ``states``
    why: str
    #: the CLI's help line
    help: str
    run: Callable[[Tx, str, str], list[str]]


ACTIONS: dict[str, Action] = {
    action.name: action
    for action in (
        Action(
            "retry",
            "Retry",
            "queued again",
            RETRYABLE,
            "only failed, unknown, expired or cancelled messages can be sent again",
            "send a failed, unknown, expired or cancelled message again",
            requeue,
        ),
        Action(
            "cancel",
            "Cancel",
            "cancelled",
            CANCELLABLE,
            "only queued messages can be cancelled",
            "do not send a queued message",
            cancel,
        ),
        Action(
            "not-sent",
            "Mark as not sent",
            "marked as not sent",
            UNRESOLVED,
            "only unknown messages (may or may not have been sent) can be marked",
            "an unknown message the provider's records show was not sent: mark it failed",
            mark_not_sent,
        ),
    )
}


def act(conn: Tx, action: str, ident: str, actor: str) -> list[str]:
    """The operator's ``action`` (a key of :data:`ACTIONS`) on message or mail ``ident``; the ids changed."""
    return ACTIONS[action].run(conn, ident, actor)
