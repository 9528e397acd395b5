"""``ack: delivered``: the first outcome of each SMS, for an SMTP session that waits to tell its sender.

The hand-over has two steps so that no refusal goes untold:

1. the dispatcher asks :meth:`Outcomes.expects` before storing an outcome: a refusal a
   session waits for is stored with the notice ``held`` (the session will answer it);
2. only once that is stored does it :meth:`Outcomes.report` it. The session sees nothing
   before the store, so its own ``replied`` or ``pending`` always comes after ``held``.
   Rows that no session took (it gave up waiting in between) are returned, and the
   dispatcher gives them the ordinary notice.

A session that stops waiting before every row came in owns the outcomes it was given:
it answers ``250`` and turns their ``held`` into ``pending``.
"""

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


@dataclass(frozen=True)
class FirstOutcomes:
    """What a waiting session was told: every row's outcome (``complete``) or those that came in time."""

    outcomes: dict[str, Outcome]
    complete: bool


class Outcomes:
    def __init__(self) -> None:
        self._waiters: dict[str, _Waiter] = {}

    def watch(self, mail_id: str, ids: tuple[str, ...]) -> None:
        self._waiters[mail_id] = _Waiter(frozenset(ids))

    async def outcome(self, mail_id: str, within: float) -> FirstOutcomes:
        """The first outcome of every row of ``mail_id``, or those that came within ``within`` s.
        Either way the outcomes returned are the caller's to tell."""
        waiter = self._waiters.get(mail_id)
        if waiter is None:
            return FirstOutcomes({}, complete=False)
        try:
            async with asyncio.timeout(within):
                await waiter.done.wait()
        except TimeoutError:
            pass
        finally:
            self._waiters.pop(mail_id, None)  # from here on, report() leaves this mail's rows to the dispatcher
        return FirstOutcomes(dict(waiter.outcomes), complete=set(waiter.outcomes) >= waiter.ids)

    def expects(self, rows: Sequence[Row]) -> bool:
        """True if a session waits for any of these rows' outcomes (asked before storing them)."""
        return any(row.id in w.ids for row in rows if (w := self._waiters.get(row.mail_id)))

    def report(self, rows: Sequence[Row], outcome: Outcome) -> list[Row]:
        """Hand a stored outcome to the sessions waiting for it; returns the rows none took."""
        left = []
        for row in rows:
            waiter = self._waiters.get(row.mail_id)
            if waiter is None or row.id not in waiter.ids:
                left.append(row)
                continue
            waiter.outcomes.setdefault(row.id, outcome)
            if set(waiter.outcomes) >= waiter.ids:
                waiter.done.set()
        return left
