"""The outbox, for async code: what both backends offer besides running operations.

The operations are declared once, as plain functions of a transaction, in the stage modules
(:mod:`~bridge.outbox.intake`, :mod:`~bridge.outbox.claims`, :mod:`~bridge.outbox.results`,
:mod:`~bridge.outbox.notices`, :mod:`~bridge.outbox.views`, :mod:`~bridge.outbox.actions`,
:mod:`~bridge.outbox.upkeep`); async code runs one in a committed transaction with
``await outbox.run(claims.claim, account, pacing=pacing)``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, Self, TypeVar

from bridge.outbox.tx import Settings, Tx
from bridge.outbox.types import Leadership
from bridge.outbox.upkeep import start_up

T = TypeVar("T")
P = ParamSpec("P")


class Outbox:
    """Every accepted SMS, durably: :class:`~bridge.outbox.SqliteOutbox` (one bridge) and
    :class:`~bridge.outbox.pg.PgOutbox` (several) run the same operations with the same meaning."""

    settings: Settings = Settings()
    commits: int = 0
    #: accounts that resend after an unknown outcome (``at_least_once``), for every recovery
    at_least_once: tuple[str, ...] = ()

    #: what wakes this bridge when any bridge queued for an account (None: any), or a notice
    on_queued: Callable[[str | None], None] = staticmethod(lambda account: None)
    on_notice: Callable[[], None] = staticmethod(lambda: None)

    @property
    def instance(self) -> str:
        """This bridge's name among those sharing the outbox."""
        return self.settings.instance

    @property
    def shared(self) -> bool:
        """Whether several bridges may share this outbox (and its rate, and its IMAP mailboxes)."""
        return self.settings.shared

    def listen(self, on_queued: Callable[[str | None], None], on_notice: Callable[[], None]) -> None:
        """What to call when another bridge queued for an account (None: any) or left a
        notice to send (PostgreSQL ``NOTIFY``; one bridge alone hears only itself)."""
        self.on_queued = on_queued
        self.on_notice = on_notice

    def clock(self) -> float:
        """Now, as every bridge sharing this outbox reckons it: leases, ``updated`` and
        ``created`` are compared across bridges, so a shared outbox reads its database's
        clock (this one: the host's)."""
        return time.time()

    _displaced: asyncio.Event | None = None

    @property
    def displaced(self) -> asyncio.Event:
        """Set when this bridge can no longer be the instance it was (a shared outbox only):
        it must stop, and start again under a free name."""
        if self._displaced is None:
            self._displaced = asyncio.Event()
        return self._displaced

    def describe(self) -> str:
        return type(self).__name__

    async def health(self) -> tuple[bool, str]:
        return True, self.describe()

    async def rate_slot(self, account: str, interval: float) -> float:
        """Take the account's next request slot; seconds to wait for it (shared outboxes
        only: one bridge alone paces itself in memory)."""
        raise NotImplementedError

    async def instances(self) -> list[tuple[str, str, float]]:
        """(id, host, last heard from) of the bridges sharing the outbox: this one alone."""
        return [(self.instance, socket.gethostname(), self.clock())]

    def leadership(self, name: str) -> Leadership:
        """One bridge alone on its outbox leads everything, always."""
        leadership = Leadership(name)
        leadership.take()
        return leadership

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def run(self, op: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(tx, *args, **kwargs)`` in a committed (and synced) transaction; its result."""
        raise NotImplementedError  # pragma: no cover  (each backend has its own)

    async def start_up(self, at_least_once: Sequence[str]) -> dict[str, int]:
        """Recover after a start (:func:`~bridge.outbox.upkeep.start_up`), remembering which
        accounts resend after an unknown outcome for the recoveries that follow (a shared
        outbox recovers on each heartbeat)."""
        self.at_least_once = tuple(at_least_once)
        return await self.run(start_up, self.at_least_once)
