"""The outbox: every accepted SMS, durably, with its state.

- :mod:`~bridge.outbox.types`: the :class:`Outbox` protocol and its value types;
- :mod:`~bridge.outbox.states`: the message and notice state machines;
- :mod:`~bridge.outbox.schema`: the schema and its migrations (SQLite and PostgreSQL);
- :mod:`~bridge.outbox.ops`: every state change, as SQL both backends run;
- :mod:`~bridge.outbox.sqlite`: the SQLite backend (the embedded default);
- :mod:`~bridge.outbox.pg`: the PostgreSQL backend (several bridges, one outbox).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.errors import DailyCapReached, LimitExceeded, LimitReached, NoOutbox, OutboxError
from bridge.outbox.ops import (
    Store,
    Tx,
    op_cancel,
    op_claim,
    op_clock,
    op_counts,
    op_enqueue,
    op_get,
    op_history,
    op_list,
    op_mark_not_sent,
    op_pace,
    op_paced_until,
    op_requeue,
    op_unclaim,
)
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
from bridge.outbox.types import (
    Accepted,
    Delivery,
    Enqueued,
    Event,
    Group,
    ImapKey,
    Leadership,
    Origin,
    Outbox,
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


def open_outbox(queue: QueueConfig) -> Store:
    """The outbox ``queue`` describes, to be entered with ``async with``."""
    if queue.url is None:
        return SqliteOutbox(queue.path, dedupe_window=queue.dedupe_window)
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
        try:
            conn.execute("BEGIN IMMEDIATE")
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
    "SqliteOutbox",
    "State",
    "Store",
    "Tx",
    "connect",
    "migrate",
    "new_mail_id",
    "op_cancel",
    "op_claim",
    "op_clock",
    "op_counts",
    "op_enqueue",
    "op_get",
    "op_history",
    "op_list",
    "op_mark_not_sent",
    "op_pace",
    "op_paced_until",
    "op_requeue",
    "op_unclaim",
    "open_outbox",
    "transaction",
]
