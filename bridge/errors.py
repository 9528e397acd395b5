"""The bridge's one exception tree, ordered by what the caller does next.

::

    BridgeError
      ConfigError             exit 78, every problem with its path
      MessageRejected         permanent: SMTP 5xx / failure notice
      OutboxError             nothing stored or read: SMTP 451, try again
        NoOutbox              none where the config says (``sms-bridge queue``)
        LeaseLost             another instance claimed the row since: do not send it
      LimitExceeded           nothing stored: a client or account used up a limit
        LimitReached          for now (a minute or hour window): 451 4.7.0, retry later
        DailyCapReached       for today: 550 5.7.1
      DeliveryError
        TransientDelivery     retry later
        PermanentDelivery     fail, notify the sender
        AmbiguousDelivery     may have been sent: do not resend by default

Third-party exceptions are translated once, at the boundary where they
arise (``raise ... from exc``); nothing above that boundary sees them.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.core.model import Problem


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class ConfigError(BridgeError):
    """The configuration is unusable; ``problems`` lists every reason."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(self.describe())

    def describe(self) -> str:
        lines = [f"{p.field}: {p.message}" for p in self.problems]
        return "invalid configuration:\n  " + "\n  ".join(lines)


class ListenError(BridgeError):
    """A listener cannot be bound (the port is taken, the address is not this host's, the
    certificate cannot be read): the message names the config key."""


class MessageRejected(BridgeError):
    """A message that can never be sent as it is; tell its sender why."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


class OutboxError(BridgeError):
    """The outbox cannot store or read messages (disk full, database broken or away)."""


class NoOutbox(OutboxError):
    """There is no outbox where the config says (``sms-bridge queue`` before any bridge ran)."""


class LeaseLost(OutboxError):
    """A claimed row's lease ran out and another instance claimed it: this one must not send it."""


class Displaced(OutboxError):
    """While this bridge had lost its database session, another bridge took its instance name:
    this one can no longer tell its rows from the other's and must stop."""


class LimitExceeded(BridgeError):
    """A client or account has used up a limit; nothing was stored."""

    def __init__(self, scope: str, what: str, limit: int, window: str) -> None:
        self.scope = scope
        super().__init__(f"{scope} has reached its limit of {limit} {what} per {window}")

    @staticmethod
    def of(scope: str, what: str, limit: int, window: str) -> LimitExceeded:
        """The right kind for ``window``: a daily cap, or a limit reached for now."""
        kind = DailyCapReached if window == "day" else LimitReached
        return kind(scope, what, limit, window)


class LimitReached(LimitExceeded):
    """A per-minute or per-hour limit: the same mail may be accepted a little later."""


class DailyCapReached(LimitExceeded):
    """A per-day limit: refused for today."""


class DeliveryError(BridgeError):
    """A provider attempt that did not end in a confirmed send."""

    def __init__(self, reason: str, *, code: str = "", raw: str = "", failover: bool = False) -> None:
        self.reason = reason
        self.code = code
        self.raw = raw
        #: definitely not sent, and a sign the account or provider is unusable for now:
        #: another account may take the SMS (never set after an ambiguous outcome)
        self.failover = failover
        super().__init__(f"{code}: {reason}" if code else reason)


class TransientDelivery(DeliveryError):
    """Nothing was sent; the same request may succeed later."""

    def __init__(
        self, reason: str, *, code: str = "", raw: str = "", retry_after: float | None = None, failover: bool = False
    ) -> None:
        super().__init__(reason, code=code, raw=raw, failover=failover)
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    """Nothing was sent and resending the same request will not help."""


class AmbiguousDelivery(DeliveryError):
    """The request may have reached the provider: the SMS may have gone out."""
