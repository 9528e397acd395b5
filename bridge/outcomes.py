"""``ack: delivered``: the first outcome of each SMS, for an SMTP session that waits to tell its sender."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from bridge.outbox import Row


@dataclass(frozen=True)
class Outcome:
    """What one row's first attempt ended in."""

    state: str  # sent, failed, unknown, queued, expired
    reason: str = ""
    code: str = ""
    msg_id: str = ""


@dataclass
class _Waiter:
    ids: frozenset[str]
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Outcomes:
    def __init__(self) -> None:
        self._waiters: dict[str, _Waiter] = {}

    def watch(self, mail_id: str, ids: tuple[str, ...]) -> None:
        self._waiters[mail_id] = _Waiter(frozenset(ids))

    async def outcome(self, mail_id: str, within: float) -> dict[str, Outcome] | None:
        """The first outcome of every row of ``mail_id``, or None if not all came in time."""
        waiter = self._waiters.get(mail_id)
        if waiter is None:
            return None
        try:
            async with asyncio.timeout(within):
                await waiter.done.wait()
        except TimeoutError:
            return None
        finally:
            self._waiters.pop(mail_id, None)
        return dict(waiter.outcomes)

    def report(self, rows: Sequence[Row], outcome: Outcome) -> bool:
        """Tell a waiting session; True if one is waiting for these rows."""
        waiting = False
        for row in rows:
            waiter = self._waiters.get(row.mail_id)
            if waiter is None or row.id not in waiter.ids:
                continue
            waiting = True
            waiter.outcomes.setdefault(row.id, outcome)
            if set(waiter.outcomes) >= waiter.ids:
                waiter.done.set()
        return waiting
