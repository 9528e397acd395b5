"""What an outbox operation is given: a connection inside a transaction, its SQL dialect, the
transaction's clock, and the outbox's settings.

Every operation is a plain function of a :class:`Tx` (``def claim(tx, account, ...)``), written
once in the common subset of the two dialects (``?`` placeholders; PostgreSQL's backend turns
them into ``%s``). Where the dialects differ the :class:`Dialect` says so: PostgreSQL claims
with ``FOR UPDATE SKIP LOCKED`` under a per-account advisory lock, and wakes other bridges with
``NOTIFY``; SQLite's one writer needs neither.

``tx.now`` is the transaction's clock: the database's for PostgreSQL (every bridge sharing an
outbox compares leases, ``created`` and ``updated`` on it), this host's for SQLite.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from bridge.config import QueueConfig

_QUEUE = QueueConfig()


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


@dataclass(frozen=True)
class Dialect:
    """How one database differs for the operations."""

    name: str
    #: appended to a claim's SELECT: rows another transaction holds are skipped
    for_update: str = ""
    #: take ``key``'s lock until the transaction ends, shared by every bridge
    lock: Callable[[Tx, str], None] = lambda tx, key: None
    #: wake the other bridges when the transaction commits
    notify: Callable[[Tx, str], None] = lambda tx, what: None


SQLITE = Dialect("sqlite")


@dataclass(frozen=True)
class Settings:
    """The outbox's settings the operations read; the defaults are ``queue``'s, from its model."""

    #: who claims (``queue.instance``)
    instance: str = "local"
    #: how long a claim holds unless renewed
    lease: float = _QUEUE.lease
    #: the dedupe window (seconds) for Message-ID resubmissions
    dedupe_window: float = _QUEUE.dedupe_window
    #: whether several bridges may share this outbox
    shared: bool = False


class Tx(Protocol):
    """A connection inside a transaction: :class:`SqliteTx`, or :class:`bridge.outbox.pg.PgTx`."""

    dialect: Dialect
    settings: Settings
    #: now, on the transaction's clock
    now: float

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...
    def executemany(self, sql: str, parameters: Iterable[Any], /) -> Cursor: ...
    def clock(self) -> float:
        """The database's clock, read now (SQLite: this host's)."""
        ...


class SqliteTx(sqlite3.Connection):
    """A SQLite connection as the operations see it (``sqlite3.connect(factory=SqliteTx)``)."""

    dialect = SQLITE
    settings = Settings()
    now = 0.0

    def clock(self) -> float:
        return time.time()

    def begin(self) -> None:
        """Start a write transaction, and read the clock for it."""
        self.execute("BEGIN IMMEDIATE")
        self.now = time.time()


__all__ = ["SQLITE", "Cursor", "Dialect", "Settings", "SqliteTx", "Tx"]
