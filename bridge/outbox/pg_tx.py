"""PostgreSQL as the operations see it: a transaction (:class:`PgTx`) with its dialect, the database's
clock, ``NOTIFY`` on commit, and one transaction for tools outside a bridge (``sms-bridge queue``)."""

from __future__ import annotations

import contextlib
import functools
import re
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

import psycopg
import psycopg.errors

from bridge.errors import OutboxError
from bridge.outbox.tx import Dialect, Settings

T = TypeVar("T")


#: the channel instances wake each other on: ``queued:<account>``, ``queued:*``, ``notice``
CHANNEL = "sms_bridge"


#: the database's clock, as seconds since the epoch: what every bridge reckons time by
DB_EPOCH = "extract(epoch FROM clock_timestamp())::float8"


def presence_name(instance: str) -> str:
    """The ``application_name`` of an instance's presence session (``pg_stat_activity``)."""
    return f"sms-bridge {instance} presence"[:63]


@functools.lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    """SQLite's ``?`` placeholders as psycopg's ``%s`` (and literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class Record:
    """A row readable by position and by column name, like ``sqlite3.Row``."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: Sequence[Any], index: dict[str, int]) -> None:
        self._values = values
        self._index = index

    def __getitem__(self, key: int | str) -> Any:
        return self._values[key if isinstance(key, int) else self._index[key]]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def records(cursor: Any) -> Callable[[Sequence[Any]], Record]:
    """psycopg row factory making :class:`Record`\\s."""
    description = cursor.description or []
    index = {column.name: i for i, column in enumerate(description)}
    return lambda values: Record(values, index)


class PgTx:
    """A pooled connection inside the batch's transaction, as the operations see it."""

    def __init__(self, conn: psycopg.Connection[Any], settings: Settings, now: float | None = None) -> None:
        self.conn = conn
        self.dialect = POSTGRESQL
        self.settings = settings
        #: the transaction's clock: the bridge's reading of the database's (or, outside a
        #: bridge, the database's own)
        self.now = self.clock() if now is None else now
        #: what to ``NOTIFY`` when the transaction commits (once each)
        self.wakes: dict[str, None] = {}

    def execute(self, sql: str, parameters: Any = (), /) -> psycopg.Cursor[Any]:
        return self.conn.execute(_translate(sql), parameters or None)

    def executemany(self, sql: str, parameters: Iterable[Any], /) -> psycopg.Cursor[Any]:
        rows = list(parameters)
        if len(rows) == 1:  # the usual case: one round trip, without a pipeline's sync
            return self.execute(sql, rows[0])
        cursor = self.conn.cursor()
        if rows:
            cursor.executemany(_translate(sql), rows)
        return cursor

    def lock(self, key: str) -> None:
        """Wait for ``key``'s lock, held until the transaction ends (every instance)."""
        self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(key),))

    def clock(self) -> float:
        """The database's clock (``clock_timestamp``), as seconds since the epoch."""
        rec = self.conn.execute(f"SELECT {DB_EPOCH}").fetchone()
        return float(rec[0]) if rec else time.time()

    def notify(self, what: str) -> None:
        """Sent to every listening instance when (and if) the transaction commits: queued
        here and sent once, by :meth:`send_wakes`, just before the commit. (A job rolled
        back to its savepoint may leave a wake-up behind: a harmless look at the queue.)"""
        self.wakes[what] = None

    def send_wakes(self) -> None:
        for what in self.wakes:
            self.conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, what))
        self.wakes.clear()


POSTGRESQL = Dialect(
    "postgresql",
    for_update=" FOR UPDATE SKIP LOCKED",
    lock=lambda tx, key: cast(PgTx, tx).lock(key),
    notify=lambda tx, what: cast(PgTx, tx).notify(what),
)


def lock_key(name: str) -> int:
    """A stable 64-bit advisory lock key for ``name``."""
    return int.from_bytes(zlib.crc32(name.encode()).to_bytes(4, "big") * 2, "big", signed=True)


_URL_PASSWORD = re.compile(r"(://[^:/@]*):([^@]*)@")


def redact(text: str, url: str = "") -> str:
    """``text`` (a URL, or an error about one) without a URL's password, and without
    ``url``'s password wherever else it appears (as written, or decoded)."""
    secrets = set()
    match = _URL_PASSWORD.search(url)
    if match:
        secrets = {match.group(2), urllib.parse.unquote(match.group(2))}
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text


@contextlib.contextmanager
def transaction(url: str) -> Iterator[PgTx]:
    """One committed transaction, outside a running bridge (``sms-bridge queue``)."""
    try:
        conn = psycopg.connect(url, row_factory=records, connect_timeout=5)
    except psycopg.Error as exc:
        raise OutboxError(f"cannot reach the PostgreSQL outbox {redact(url)}: {redact(str(exc), url)}") from exc
    try:
        with conn.transaction():
            yield PgTx(conn, Settings(shared=True))
    except psycopg.Error as exc:
        raise OutboxError(f"the PostgreSQL outbox failed: {redact(str(exc), url)}") from exc
    finally:
        conn.close()
