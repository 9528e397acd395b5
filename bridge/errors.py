"""The bridge's one exception tree, ordered by what the caller does next.

::

    BridgeError
      ConfigError             exit 78, every problem with its path
      MessageRejected         permanent: SMTP 5xx / failure notice
      DeliveryError
        TransientDelivery     retry later
        PermanentDelivery     fail, notify the sender
        AmbiguousDelivery     may have been sent: do not resend by default

Third-party exceptions are translated once, at the boundary where they
arise (``raise ... from exc``); nothing above that boundary sees them.
"""

from __future__ import annotations

from collections.abc import Iterable

from bridge.model import Problem


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


class MessageRejected(BridgeError):
    """A message that can never be sent as it is; tell its sender why."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in self.problems))


class DeliveryError(BridgeError):
    """A provider attempt that did not end in a confirmed send."""

    def __init__(self, reason: str, *, code: str = "", raw: str = "") -> None:
        self.reason = reason
        self.code = code
        self.raw = raw
        super().__init__(f"{code}: {reason}" if code else reason)


class TransientDelivery(DeliveryError):
    """Nothing was sent; the same request may succeed later."""

    def __init__(self, reason: str, *, code: str = "", raw: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason, code=code, raw=raw)
        self.retry_after = retry_after


class PermanentDelivery(DeliveryError):
    """Nothing was sent and resending the same request will not help."""


class AmbiguousDelivery(DeliveryError):
    """The request may have reached the provider: the SMS may have gone out."""
