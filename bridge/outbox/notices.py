"""Notices waiting to be mailed: to senders, for refused mail, and to the operator."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from bridge.outbox.rows import ORIGIN, log_event, read_fields, to_row
from bridge.outbox.states import UNANSWERABLE, Notice
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    Origin,
    RejectionRow,
    Row,
)


def pending_rejections(conn: Tx, limit: int = 50, column: str = "notice") -> list[RejectionRow]:
    recs = conn.execute(
        f"SELECT * FROM rejections WHERE {'operator' if column == 'operator' else 'notice'} = 'pending' ORDER BY created LIMIT ?",  # noqa: S608  (one of two names)
        (limit,),
    )
    return [
        RejectionRow(
            id=r["id"],
            created=r["created"],
            origin=Origin(**read_fields(ORIGIN, r)),
            problems=tuple((str(f), str(m)) for f, m in json.loads(r["problems"])),
            notice=Notice(r["notice"]),
            operator=Notice(r["operator"]),
        )
        for r in recs
    ]


def set_rejection_notice(conn: Tx, ids: Sequence[str], notice: Notice) -> None:
    conn.executemany("UPDATE rejections SET notice = ? WHERE id = ?", [(notice, i) for i in ids])


def release_held_notices(conn: Tx, owner: str | None = None, before: float | None = None) -> int:
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
    log_event(conn, ids, time.time(), "notice released", "the SMTP session that held it did not answer")
    return len(ids)


def pending_notices(conn: Tx, limit: int = 50, held_before: float | None = None) -> list[Row]:
    """Notices to send. A notice ``held`` for an SMTP session since before ``held_before``
    was never answered by it (it lost the outbox, or its bridge died): it is sent after all."""
    if held_before is not None:
        release_held_notices(conn, before=held_before)
    recs = conn.execute("SELECT * FROM sms WHERE notice = 'pending' ORDER BY updated LIMIT ?", (limit,))
    return [to_row(r) for r in recs]


def set_notice(conn: Tx, ids: Sequence[str], notice: Notice, detail: str = "") -> None:
    conn.executemany("UPDATE sms SET notice = ? WHERE id = ?", [(notice, i) for i in ids])
    if notice in (Notice.SENT, Notice.SKIPPED, Notice.REPLIED):
        log_event(conn, ids, time.time(), f"notice {notice}", detail)
    if notice == Notice.SKIPPED and detail.startswith(UNANSWERABLE):
        conn.executemany("UPDATE sms SET operator = 'pending' WHERE id = ? AND operator = 'none'", [(i,) for i in ids])


def pending_operator(conn: Tx, limit: int = 500) -> tuple[list[Row], list[RejectionRow]]:
    """What the operator is to be told of: unknown outcomes, and failures and refusals
    whose sender could not be answered."""
    rows = [
        to_row(r)
        for r in conn.execute("SELECT * FROM sms WHERE operator = 'pending' ORDER BY updated LIMIT ?", (limit,))
    ]
    rejections = [r for r in pending_rejections(conn, limit, column="operator")]
    return rows, rejections


def set_operator(conn: Tx, ids: Sequence[str], rejection_ids: Sequence[str], notice: Notice) -> None:
    conn.executemany("UPDATE sms SET operator = ? WHERE id = ?", [(notice, i) for i in ids])
    conn.executemany("UPDATE rejections SET operator = ? WHERE id = ?", [(notice, i) for i in rejection_ids])
    if notice == Notice.SENT:
        log_event(conn, ids, time.time(), "operator told", "listed in the operator's mail")
