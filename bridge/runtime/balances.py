"""The balance each provider last reported: kept in the outbox, warned of, and asked at intake."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping

from bridge.config import AccountConfig
from bridge.core.model import SmsRequest
from bridge.errors import OutboxError
from bridge.outbox import Outbox, results

log = logging.getLogger("bridge.dispatch")


class Balances:
    def __init__(
        self,
        accounts: Mapping[str, AccountConfig],
        outbox: Outbox,
        known: dict[str, float] | None = None,
        on_low: Callable[[str, float, float], None] = lambda account, balance, threshold: None,
    ) -> None:
        self.accounts = accounts
        self.outbox = outbox
        self.known: dict[str, float] = dict(known or {})
        self.on_low = on_low

    def get(self, account: str) -> float | None:
        return self.known.get(account)

    def items(self) -> Iterator[tuple[str, float]]:
        return iter(sorted(self.known.items()))

    def cannot_pay(self, requests: tuple[SmsRequest, ...]) -> str | None:
        """Why an account that refuses when empty cannot take these SMS now, or None."""
        needed: dict[str, int] = {}
        for request in requests:
            needed[request.account] = needed.get(request.account, 0) + request.points
        for account, points in needed.items():
            balance = self.known.get(account)
            if self.accounts[account].refuse_when_empty and balance is not None and balance < points:
                return f"account {account} cannot pay for this mail ({points} points; last known balance {balance:g})"
        return None

    async def record(self, account: str, balance: float) -> None:
        """A balance a provider reported: stored, and warned of when it falls below the threshold."""
        try:
            previous = await self.outbox.run(results.record_balance, account, balance)
        except OutboxError as exc:  # known here until the outbox is back; the next send stores it
            log.warning("balance of %s not stored (%s)", account, exc)
            previous = self.known.get(account)
        self.known[account] = balance
        threshold = self.accounts[account].balance_warning
        if threshold is not None and balance < threshold and (previous is None or previous >= threshold):
            log.warning("low balance account=%s: %g points left (warning below %g)", account, balance, threshold)
            self.on_low(account, balance, threshold)
