"""Reading the outbox: for the status page, ``sms-bridge queue`` and ``/metrics``."""

from __future__ import annotations

from typing import Any

from bridge.outbox.rows import to_row
from bridge.outbox.states import State
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    Event,
    Refusal,
    Row,
    Search,
)


def history(conn: Tx, sms_id: str) -> list[Event]:
    recs = conn.execute("SELECT at, event, detail, actor FROM history WHERE sms_id = ? ORDER BY seq", (sms_id,))
    return [Event(r["at"], r["event"], r["detail"], r["actor"]) for r in recs]


def balances(conn: Tx) -> dict[str, float]:
    return {r[0]: float(r[1]) for r in conn.execute("SELECT account, balance FROM balances")}


def rows_of(conn: Tx, ident: str) -> list[Row]:
    recs = conn.execute("SELECT * FROM sms WHERE id = ? OR mail_id = ? ORDER BY id", (ident, ident)).fetchall()
    return [to_row(r) for r in recs]


def listing(conn: Tx, state: str | None = None, limit: int = 100) -> list[Row]:
    if state:
        recs = conn.execute("SELECT * FROM sms WHERE state = ? ORDER BY updated DESC LIMIT ?", (state, limit))
    else:
        recs = conn.execute("SELECT * FROM sms ORDER BY updated DESC LIMIT ?", (limit,))
    return [to_row(r) for r in recs]


def counts(conn: Tx) -> dict[str, int]:
    counts: dict[str, int] = dict.fromkeys(State, 0)
    for state, count in conn.execute("SELECT state, count(*) FROM sms GROUP BY state"):
        counts[state] = count
    return counts


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search(conn: Tx, search: Search) -> list[Row]:
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
    return [to_row(r) for r in conn.execute(sql, (*args, search.limit))]


def recent_problems(conn: Tx, since: float) -> dict[str, int]:
    """Failed, unknown and expired SMS that ended since ``since``, by state."""
    recs = conn.execute(
        "SELECT state, count(*) FROM sms WHERE state IN ('failed', 'unknown', 'expired') AND updated >= ? GROUP BY state",
        (since,),
    )
    return {state: count for state, count in recs}


def oldest_queued(conn: Tx) -> float | None:
    """When the oldest SMS still waiting to be sent was accepted."""
    rec = conn.execute("SELECT min(created) FROM sms WHERE state IN ('queued', 'claimed')").fetchone()
    return None if rec is None or rec[0] is None else float(rec[0])


def refusals(conn: Tx, limit: int = 50) -> list[Refusal]:
    rows = conn.execute(
        "SELECT via, stage, peer, client, mail_from, address, reason, first_at, last_at, times FROM refusals "
        "ORDER BY last_at DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [Refusal(*row) for row in rows]
