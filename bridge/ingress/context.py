"""What every way in (SMTP, LMTP, IMAP, the webhook) needs from the rest of the bridge, and no more:
metrics, the balances to refuse an account that cannot pay, the outcomes an ``ack: delivered``
session waits for, and a way to wake an account's dispatch loop. Ingress imports no dispatch."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.balances import Balances
from bridge.metrics import Metrics
from bridge.outcomes import Outcomes


@dataclass(frozen=True)
class Intake:
    metrics: Metrics
    balances: Balances
    outcomes: Outcomes
    #: the account whose loop should look at the outbox now
    wake: Callable[[str], None]
