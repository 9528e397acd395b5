"""What a running bridge shares, built before anything else and handed to dispatch, the ways in
and the web part: metrics, balances, the outcomes an ``ack: delivered`` session waits for, each
account's breaker and last provider result, and the wake-up of each account's dispatch loop.

Dispatch writes most of it; ingress and the status page read it. None of them reaches into
another to get it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from bridge.config import Config
from bridge.outbox import Outbox
from bridge.runtime.balances import Balances
from bridge.runtime.breaker import Breaker
from bridge.runtime.metrics import Metrics
from bridge.runtime.outcomes import Outcomes


@dataclass
class Runtime:
    metrics: Metrics
    balances: Balances
    outcomes: Outcomes = field(default_factory=Outcomes)
    breakers: dict[str, Breaker] = field(default_factory=dict)
    #: each account's last provider call: (when, result, code), for the status page
    last_result: dict[str, tuple[float, str, str]] = field(default_factory=dict)
    #: what tells an account's dispatch loop to look at the outbox now
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        config: Config,
        outbox: Outbox,
        *,
        metrics: Metrics | None = None,
        balances: dict[str, float] | None = None,
        on_low_balance: Callable[[str, float, float], None] = lambda account, balance, threshold: None,
    ) -> Runtime:
        """The runtime for ``config``'s accounts; ``balances`` as last stored in the outbox."""
        return cls(
            metrics=metrics or Metrics(),
            balances=Balances(config.accounts, outbox, balances, on_low_balance),
            breakers={name: Breaker(name, account.breaker) for name, account in config.accounts.items()},
            wakeups={name: asyncio.Event() for name in config.accounts},
        )

    def wake(self, account: str | None = None) -> None:
        """Have ``account``'s dispatch loop (None: every loop) look for due rows now."""
        for name, event in self.wakeups.items():
            if account is None or name == account:
                event.set()


__all__ = ["Balances", "Breaker", "Metrics", "Outcomes", "Runtime"]
