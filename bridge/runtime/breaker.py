"""A circuit breaker per account: stop hammering a provider that is down.

``closed``: every SMS goes to the provider; definitely-not-sent failures are
counted. ``failures`` of them within ``window`` seconds open it. ``open``: no
request goes to the provider; SMS with a fallback account go there, the rest
wait. Every ``probe_interval`` seconds one request tests the provider
(``half-open``): a success closes the circuit, a failure opens it again.
Only definitely-not-sent outcomes count: an ambiguous one says nothing about
whether the provider is up.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Literal

from bridge.config import BreakerConfig

log = logging.getLogger("bridge.dispatch")

State = Literal["closed", "open", "half-open"]
#: for metrics: the state as a number
LEVEL = {"closed": 0, "half-open": 1, "open": 2}


class Breaker:
    def __init__(self, account: str, settings: BreakerConfig) -> None:
        self.account = account
        self.settings = settings
        self.state: State = "closed"
        self.failures: deque[float] = deque()
        self.next_probe = 0.0
        self.probing = False

    def _set(self, state: State, why: str) -> None:
        if state != self.state:
            log.warning("circuit %s account=%s: %s", state, self.account, why)
        self.state = state

    def may_send(self, now: float) -> bool:
        """Whether a request may go to the provider now (in ``half-open``, only the probe)."""
        if self.state == "closed":
            return True
        if self.state == "open" and now >= self.next_probe and not self.probing:
            self._set("half-open", "one request tests the provider")
            self.probing = True
            return True
        return False

    def failed(self, now: float, reason: str) -> None:
        """A definitely-not-sent failure."""
        if self.state == "half-open":
            self.probing = False
            self.next_probe = now + self.settings.probe_interval
            self._set("open", f"the probe failed ({reason}); next probe in {self.settings.probe_interval:g} s")
            return
        self.failures.append(now)
        while self.failures and self.failures[0] < now - self.settings.window:
            self.failures.popleft()
        if self.state == "closed" and len(self.failures) >= self.settings.failures:
            self.next_probe = now + self.settings.probe_interval
            self._set(
                "open",
                f"{len(self.failures)} failures in {self.settings.window:g} s, the last: {reason}; "
                f"fallbacks take its SMS, the rest wait; next probe in {self.settings.probe_interval:g} s",
            )

    def inconclusive(self, now: float) -> None:
        """An ambiguous outcome: it says nothing of the provider; a probe is tried again later."""
        if self.state == "half-open":
            self.probing = False
            self.next_probe = now + self.settings.probe_interval
            self._set("open", "the probe's answer was lost; next probe later")

    def succeeded(self) -> None:
        """The provider answered (sent, or refused this SMS for a reason of its own)."""
        self.failures.clear()
        self.probing = False
        if self.state != "closed":
            self._set("closed", "the provider answered")
