"""Mail refused on the spot, made visible: one log line per address and reason (repeats within a
minute are counted, not logged), and a row in the outbox's refusals for the status page."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

from bridge.errors import OutboxError
from bridge.outbox import Outbox, Refusal

log = logging.getLogger("bridge.refused")


class RefusalLog:
    """Says each refusal once a minute at most per (stage, address, reason), with how many
    more there were meanwhile; remembers ``size`` of them (the oldest forgotten first)."""

    def __init__(self, outbox: Outbox, *, interval: float = 60.0, size: int = 4096) -> None:
        self.outbox = outbox
        self.interval = interval
        self.size = size
        self._seen: OrderedDict[tuple[str, str, str], list[float]] = OrderedDict()

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
        """``logged``: the caller has logged it already; only record it."""
        key = (stage, address.lower(), reason)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.interval:
            seen[1] += 1
            return
        times = 1 + int(seen[1]) if seen is not None else 1
        self._seen[key] = [now, 0]
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
        more = f" ({times - 1} more like it in the last minute)" if times > 1 else ""
        if not logged:
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
        refusal = Refusal(via, stage, peer, client, mail_from, address, reason, times=times)
        try:
            await self.outbox.refused(refusal)
        except OutboxError as exc:  # the refusal itself was answered; only its record is missing
            log.debug("could not record the refusal: %s", exc)
