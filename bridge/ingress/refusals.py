"""Mail refused on the spot, made visible: one log line per address and reason a minute at most
(the repeats counted in the next one), and a row in the outbox's refusals for the status page."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from bridge.errors import OutboxError
from bridge.outbox import Outbox, Refusal, intake

log = logging.getLogger("bridge.refused")


@dataclass
class _Seen:
    logged: float
    written: float
    unlogged: int = 0
    unwritten: int = 0


class RefusalLog:
    """Per (stage, address, reason): a log line every ``log_every`` seconds at most, saying how
    many more there were meanwhile, and the outbox's count brought up to date every
    ``write_every`` seconds at most, so that a flood costs neither the log nor the disk.
    Remembers ``size`` such keys, forgetting the oldest first."""

    def __init__(
        self,
        outbox: Outbox,
        *,
        log_every: float = 60.0,
        write_every: float = 1.0,
        size: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.outbox = outbox
        self.log_every = log_every
        self.write_every = write_every
        self.size = size
        self.clock = clock
        self._seen: OrderedDict[tuple[str, str, str], _Seen] = OrderedDict()

    async def refused(
        self,
        *,
        via: str,
        stage: str,
        peer: str,
        client: str,
        mail_from: str,
        address: str,
        reason: str,
        logged: bool = False,
    ) -> None:
        """One refusal. ``logged``: the caller has logged it already; only count it."""
        key = (stage, address.lower(), reason)
        now = self.clock()
        seen = self._seen.get(key)
        if seen is None:
            seen = self._seen[key] = _Seen(logged=now - self.log_every, written=now - self.write_every)
            while len(self._seen) > self.size:
                self._seen.popitem(last=False)
        self._seen.move_to_end(key)
        seen.unlogged += 1
        seen.unwritten += 1
        if now - seen.logged >= self.log_every:
            if not logged:
                more = f" ({seen.unlogged - 1} more like it since the last line)" if seen.unlogged > 1 else ""
                log.warning(
                    "refused via=%s at=%s peer=%s client=%s from=%s address=%s: %s%s",
                    via,
                    stage,
                    peer,
                    client or "-",
                    mail_from or "<>",
                    address,
                    reason,
                    more,
                )
            seen.logged, seen.unlogged = now, 0
        if now - seen.written < self.write_every:
            return
        refusal = Refusal(via, stage, peer, client, mail_from, address, reason, times=seen.unwritten)
        seen.written, seen.unwritten = now, 0
        try:
            await self.outbox.run(intake.refused, refusal)
        except OutboxError as exc:  # the refusal itself was answered; only its record is missing
            log.debug("could not record the refusal: %s", exc)
