"""The outbox: every accepted SMS, durably, with its state.

- :mod:`~bridge.outbox.types`: the :class:`Outbox` protocol and its value types;
- :mod:`~bridge.outbox.states`: the message and notice state machines;
- :mod:`~bridge.outbox.schema`: the SQLite schema and its migrations;
- :mod:`~bridge.outbox.sqlite`: the SQLite backend (the embedded default).
"""

from __future__ import annotations

from bridge.errors import DailyCapReached, LimitExceeded, LimitReached, OutboxError
from bridge.outbox.schema import connect, migrate
from bridge.outbox.sqlite import (
    SqliteOutbox,
    op_cancel,
    op_claim,
    op_counts,
    op_enqueue,
    op_get,
    op_history,
    op_list,
    op_mark_not_sent,
    op_requeue,
    op_unclaim,
)
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
    Origin,
    Outbox,
    Pacing,
    Rejection,
    RejectionRow,
    Row,
    Search,
    new_mail_id,
)

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
    "LimitExceeded",
    "LimitReached",
    "Notice",
    "Origin",
    "Outbox",
    "OutboxError",
    "Pacing",
    "Rejection",
    "RejectionRow",
    "Row",
    "Search",
    "SqliteOutbox",
    "State",
    "connect",
    "migrate",
    "new_mail_id",
    "op_cancel",
    "op_claim",
    "op_counts",
    "op_enqueue",
    "op_get",
    "op_history",
    "op_list",
    "op_mark_not_sent",
    "op_requeue",
    "op_unclaim",
]
