"""How rows are stored: one column per field of Origin, SmsRequest (credentials: two) and
Delivery, and each row's history."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any, get_type_hints

from bridge.core.model import Credentials, SmsRequest
from bridge.outbox.states import Notice, State
from bridge.outbox.tx import Tx
from bridge.outbox.types import (
    Delivery,
    Origin,
    Row,
)

#: erasing body credentials leaves an empty user name as a mark that there were some
ERASED = "cred_user = CASE WHEN cred_user IS NULL THEN NULL ELSE '' END, cred_pass = NULL"


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


def columns_of(obj: Any, codec: dict[str, Callable[[Any], Any]]) -> dict[str, Any]:
    return {name: _stored(name, getattr(obj, name)) for name in codec}


def read_fields(codec: dict[str, Callable[[Any], Any]], rec: Any) -> dict[str, Any]:
    return {name: decode(rec[name]) for name, decode in codec.items()}


def origin_columns(origin: Origin) -> dict[str, Any]:
    columns = columns_of(origin, ORIGIN)
    columns["subject"] = origin.subject[:500]
    return columns


def to_row(rec: Any) -> Row:
    # an empty user name marks credentials that were erased (see ERASED)
    creds = Credentials(rec["cred_user"], rec["cred_pass"] or "") if rec["cred_user"] is not None else None
    return Row(
        id=rec["id"],
        mail_id=rec["mail_id"],
        created=rec["created"],
        updated=rec["updated"],
        origin=Origin(**read_fields(ORIGIN, rec)),
        request=SmsRequest(**read_fields(REQUEST, rec), credentials=creds),
        delivery=Delivery(**read_fields(DELIVERY, rec)),
    )


@functools.lru_cache(maxsize=64)
def _insert_sql(table: str, names: tuple[str, ...]) -> str:
    """The INSERT for these columns, made once per shape (every mail has one of a few)."""
    return f"INSERT INTO {table} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"  # noqa: S608  (names from dataclass fields)


def insert(conn: Tx, table: str, columns: dict[str, Any]) -> None:
    conn.execute(_insert_sql(table, tuple(columns)), tuple(columns.values()))


def log_event(conn: Tx, ids: Sequence[str], now: float, event: str, detail: str, actor: str = "") -> None:
    """Append to each row's history (in the caller's transaction)."""
    conn.executemany(
        "INSERT INTO history (sms_id, at, event, detail, actor) VALUES (?, ?, ?, ?, ?)",
        [(i, now, event, detail[:2000], actor) for i in ids],
    )


def log_attempt(conn: Tx, ids: Sequence[str], now: float, event: str, detail: str) -> None:
    """History of an attempt's outcome, numbered by the row's own attempt count."""
    conn.executemany(
        """INSERT INTO history (sms_id, at, event, detail, actor)
           SELECT id, ?, ?, 'attempt ' || attempts || ' (' || account || ', ' || provider || '): ' || ?, ''
           FROM sms WHERE id = ?""",
        [(now, event, detail[:2000], i) for i in ids],
    )


def reply_note(code: str, error: str, raw: str) -> str:
    note = f"{code + ' ' if code else ''}{error}"
    return f"{note}; provider reply: {raw[:300]}" if raw else note
