"""After a start, and once an hour: recovering what a stop left in hand, forgetting what is old."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from bridge.outbox.intake import MAX_REFUSALS
from bridge.outbox.notices import release_held_notices
from bridge.outbox.rows import ERASED, log_event
from bridge.outbox.states import FINAL
from bridge.outbox.tx import Tx


def prune_usage(conn: Tx) -> int:
    now = conn.now
    return (
        conn.execute("""DELETE FROM usage WHERE "window" != 'day' AND bucket < ?""", (int(now // 3600) - 2,)).rowcount
        + conn.execute("""DELETE FROM usage WHERE "window" = 'day' AND bucket < ?""", (int(now // 86400) - 2,)).rowcount
    )


def recover(
    conn: Tx, at_least_once: Sequence[str], *, expired_only: bool = False, owner: str | None = None
) -> dict[str, int]:
    """Rows an instance stopped holding: claimed ones go back to the queue; ones left
    ``sending`` become ``unknown``, or are queued again for accounts that opted in to
    at-least-once. Every such row at a start (one instance: SQLite); with several
    instances, only rows whose lease ran out, or that ``owner`` (this instance's
    previous run) held."""
    now = conn.now
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
    log_event(conn, lost, now, "unknown", stopped)
    if lost:
        conn.dialect.notify(conn, "notice")
    if counts["requeued"] or counts["resent"]:
        conn.dialect.notify(conn, "queued:*")
    return counts


def prune(conn: Tx, before: float) -> int:
    """Forget final rows (and their history) last changed before ``before``; how many."""
    finals = ",".join(f"'{s}'" for s in sorted(FINAL))
    old = f"SELECT id FROM sms WHERE state IN ({finals}) AND updated < ?"  # noqa: S608  (constants)
    conn.execute(f"DELETE FROM history WHERE sms_id IN ({old})", (before,))  # noqa: S608  (constants)
    count = conn.execute(f"DELETE FROM sms WHERE id IN ({old})", (before,)).rowcount  # noqa: S608  (constants)
    conn.execute(
        "DELETE FROM rejections WHERE created < ? AND notice != 'pending' AND operator != 'pending'", (before,)
    )
    prune_refusals(conn, before)
    return count


def prune_refusals(conn: Tx, before: float) -> None:
    conn.execute("DELETE FROM refusals WHERE last_at < ?", (before,))
    conn.execute(
        "DELETE FROM refusals WHERE key NOT IN (SELECT key FROM refusals ORDER BY last_at DESC LIMIT ?)",
        (MAX_REFUSALS,),
    )


def prune_seen(conn: Tx, before: float) -> int:
    return conn.execute("DELETE FROM seen WHERE at < ?", (before,)).rowcount


def start_up(conn: Tx, at_least_once: Sequence[str]) -> dict[str, int]:
    """After a start: recover from an unclean stop, release held notices, forget old counts.
    One bridge alone recovers every row left in hand; a bridge sharing the outbox only its
    own (by name) and those whose lease ran out."""
    now, settings = conn.now, conn.settings
    owner = settings.instance if settings.shared else None
    recovered = recover(conn, at_least_once, expired_only=settings.shared, owner=owner)
    release_held_notices(conn, owner)
    prune_seen(conn, now - settings.dedupe_window)
    prune_usage(conn)
    conn.execute("DELETE FROM pacing WHERE until < ?", (now,))
    return recovered
