"""The outbox: every accepted SMS, durably, with its state.

- :mod:`~bridge.outbox.base`: :class:`Outbox`, what both backends offer async code;
- :mod:`~bridge.outbox.tx`: what an operation is given (a transaction, its dialect and clock);
- the operations, by stage: :mod:`~bridge.outbox.intake`, :mod:`~bridge.outbox.claims`,
  :mod:`~bridge.outbox.results`, :mod:`~bridge.outbox.notices`, :mod:`~bridge.outbox.views`,
  :mod:`~bridge.outbox.actions`, :mod:`~bridge.outbox.upkeep` (rows and history:
  :mod:`~bridge.outbox.rows`);
- :mod:`~bridge.outbox.types`, :mod:`~bridge.outbox.states`: value types and state machines;
- :mod:`~bridge.outbox.schema`: the schema and its migrations (SQLite and PostgreSQL);
- :mod:`~bridge.outbox.sqlite`: the SQLite backend (the embedded default);
- :mod:`~bridge.outbox.pg`: the PostgreSQL backend (several bridges, one outbox).
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import DailyCapReached, LimitExceeded, LimitReached, NoOutbox, OutboxError
from bridge.outbox import actions, claims, intake, notices, results, upkeep, views
from bridge.outbox.base import Outbox
from bridge.outbox.schema import connect, migrate
from bridge.outbox.sqlite import SqliteOutbox
from bridge.outbox.states import (
    CANCELLABLE,
    FINAL,
    MAYBE_SENT,
    NOTIFIED,
    REFUSED,
    RETRYABLE,
    UNANSWERABLE,
    UNRESOLVED,
    Notice,
    State,
)
from bridge.outbox.tx import Settings, Tx
from bridge.outbox.types import (
    Accepted,
    Delivery,
    Enqueued,
    Event,
    Group,
    ImapKey,
    Leadership,
    Origin,
    Pacing,
    Refusal,
    Rejection,
    RejectionRow,
    Row,
    Search,
    new_mail_id,
)

if TYPE_CHECKING:
    from bridge.config import QueueConfig


def settings(queue: QueueConfig, *, shared: bool = False) -> Settings:
    """The outbox settings ``queue`` gives (the instance: ``queue.instance``, else the host's name)."""
    instance = queue.instance or (socket.gethostname() if shared else "local")
    return Settings(instance=instance, lease=queue.lease, dedupe_window=queue.dedupe_window, shared=shared)


def open_outbox(queue: QueueConfig) -> Outbox:
    """The outbox ``queue`` describes, to be entered with ``async with``."""
    if queue.url is None:
        return SqliteOutbox(queue.path, settings=settings(queue))
    from bridge.outbox.pg import PgOutbox  # noqa: PLC0415  (psycopg only when PostgreSQL is used)

    return PgOutbox(
        queue.url.get_secret_value(), instance=queue.instance, dedupe_window=queue.dedupe_window, lease=queue.lease
    )


@contextlib.contextmanager
def transaction(queue: QueueConfig) -> Iterator[Tx]:
    """One committed transaction on the outbox, for ``sms-bridge queue``; raises
    :class:`OutboxError` when there is no outbox (yet) or it cannot be reached."""
    if queue.url is None:
        path = Path(queue.path)
        if not path.exists():
            relative = "" if path.is_absolute() else f", relative to the working directory {Path.cwd()}"
            raise NoOutbox(f"no outbox at {path.absolute()} (queue.path {queue.path}{relative})")
        conn = connect(path)
        conn.settings = settings(queue)
        try:
            conn.begin()
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()
        return
    from bridge.outbox.pg import transaction as pg_transaction  # noqa: PLC0415

    with pg_transaction(queue.url.get_secret_value()) as tx:
        yield tx


__all__ = [
    "CANCELLABLE",
    "FINAL",
    "MAYBE_SENT",
    "NOTIFIED",
    "REFUSED",
    "RETRYABLE",
    "UNANSWERABLE",
    "UNRESOLVED",
    "Accepted",
    "DailyCapReached",
    "Delivery",
    "Enqueued",
    "Event",
    "Group",
    "ImapKey",
    "Leadership",
    "LimitExceeded",
    "LimitReached",
    "NoOutbox",
    "Notice",
    "Origin",
    "Outbox",
    "OutboxError",
    "Pacing",
    "Refusal",
    "Rejection",
    "RejectionRow",
    "Row",
    "Search",
    "Settings",
    "SqliteOutbox",
    "State",
    "Tx",
    "actions",
    "claims",
    "connect",
    "intake",
    "migrate",
    "new_mail_id",
    "notices",
    "open_outbox",
    "results",
    "settings",
    "transaction",
    "upkeep",
    "views",
]
