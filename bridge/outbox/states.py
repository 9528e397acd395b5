"""The outbox's two state machines, and the rules every backend shares.

A message (one SMS request, one row)::

    queued ──► claimed ──► sending ──► sent
       ▲          │           ├──────► failed     (permanent; notice to the sender)
       └──────────┘           ├──────► unknown    (may have been sent; not resent)
     (retry, or restart)      └──► queued (transient: retry later) ──► expired

- ``claimed``: reserved by a dispatcher, not yet handed to a provider. A restart
  puts it back to ``queued``.
- ``sending``: handed to a provider. A restart makes it ``unknown``, or ``queued``
  again for accounts that opted in to at-least-once.
- ``cancelled``: an operator stopped a ``queued`` row.
- The final states are ``sent``, ``failed``, ``unknown``, ``expired`` and
  ``cancelled``; body credentials are erased as a row reaches one. An operator
  may queue a ``failed``, ``unknown``, ``expired`` or ``cancelled`` row again.

Its notice (the mail that tells the sender what became of it)::

    none ──► pending ──► sent
      │         └──────► skipped   (no address to answer, or notices are off)
      └──► held ──► replied        (an ``ack: delivered`` SMTP session told the
                 └► pending         sender in its reply; or it could not, and
                                    the notice goes out after all)

A row gets a notice when it ends ``failed``, ``expired`` or ``unknown``; ``held``
while an SMTP session waits to report a failure in its reply; a restart
releases ``held`` notices to ``pending``. Queuing a row again resets its notice
to ``none``.

The operator's notice (``notify.operator``) follows the same states without
``held``: ``pending`` for every ``unknown`` outcome and for every notice that
was skipped because its mail has no address to answer (``<>``, the bridge
itself, a webhook), then ``sent`` (batched: one mail lists them all) or
``skipped`` (no operator or smarthost configured: logged only). An operator's
``mark as not sent`` turns an ``unknown`` row ``failed``.
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    QUEUED = "queued"
    CLAIMED = "claimed"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class Notice(StrEnum):
    NONE = "none"
    HELD = "held"
    PENDING = "pending"
    SENT = "sent"
    SKIPPED = "skipped"
    REPLIED = "replied"


FINAL = frozenset({State.SENT, State.FAILED, State.UNKNOWN, State.EXPIRED, State.CANCELLED})
#: what an operator may queue again (``queue retry``)
RETRYABLE = frozenset({State.FAILED, State.UNKNOWN, State.EXPIRED, State.CANCELLED})
#: what an operator may stop (``queue cancel``)
CANCELLABLE = frozenset({State.QUEUED})
#: final states whose sender is sent a notice
NOTIFIED = frozenset({State.FAILED, State.EXPIRED, State.UNKNOWN})
#: outcomes an ``ack: delivered`` SMTP session can answer with a 550 itself
REFUSED = frozenset({State.FAILED, State.EXPIRED})
#: outcomes the operator resolves by checking the provider's records
UNRESOLVED = frozenset({State.UNKNOWN})
#: ends the reason of a row that expired after an ambiguous attempt (the operator is told)
MAYBE_SENT = "(the last attempt may have been sent)"
#: how a skipped notice's reason starts when its mail has no address to answer
UNANSWERABLE = "no address to answer"
