"""What every provider shares: its result types, its protocol, the rate limiter, credentials."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bridge.config import AccountConfig
from bridge.core.model import SmsRequest

#: KwtSMS refuses more than 200 numbers in one call (ERR007); OpenTech documents no
#: limit, so the same bound is used there.
MAX_NUMBERS_PER_CALL = 200


@dataclass(frozen=True)
class Sent:
    """A provider accepted the SMS."""

    message_id: str
    numbers: int
    points: int | None = None
    balance_after: float | None = None
    raw: str = ""
    #: ``False`` when the best the path can know is that a relay took it (kwtsms-smtp)
    confirmed: bool = True


@dataclass(frozen=True)
class Balance:
    available: float | None
    purchased: float | None = None
    raw: str = field(default="", repr=False)


OnStart = Callable[[], Awaitable[None]]


class Provider(Protocol):
    """``send`` waits for the rate limiter, awaits ``on_start`` (the caller records
    that the request is about to leave), then makes its one attempt."""

    name: str
    limiter: RateLimiter

    async def send(self, request: SmsRequest, *, test: bool = False, on_start: OnStart | None = None) -> Sent: ...

    async def balance(self) -> Balance: ...

    async def sender_ids(self) -> list[str]: ...


#: requests are spaced this much wider than ``1 / rate``: a request that meets a slower
#: network than the one before it must still not show the provider ``rate + 1`` in a second
#: (KwtSMS locks an IP out for that)
JITTER_MARGIN = 0.05


class RateLimiter:
    """At most ``rate`` request starts per second, shared by every caller in the process."""

    def __init__(self, rate: float) -> None:
        self.interval = (1.0 + JITTER_MARGIN) / rate
        self._next = 0.0
        self._lock = asyncio.Lock()

    def ready_in(self) -> float:
        """Seconds until a request could start without waiting."""
        return max(0.0, self._next - time.monotonic())

    async def wait(self) -> None:
        async with self._lock:
            now = time.monotonic()
            delay = self._next - now
            self._next = max(now, self._next) + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


class SharedRateLimiter(RateLimiter):
    """At most ``rate`` request starts per second over every bridge sharing an outbox:
    each start takes the account's next slot from the outbox (``take(interval)``
    answers the seconds to wait for it)."""

    def __init__(self, rate: float, take: Callable[[float], Awaitable[float]]) -> None:
        super().__init__(rate)
        self._take = take

    async def wait(self) -> None:
        async with self._lock:  # this process's callers take their slots in order
            delay = max(await self._take(self.interval), 0.0)
            self._next = time.monotonic() + delay + self.interval
        if delay > 0:
            await asyncio.sleep(delay)


def credentials(account: AccountConfig, request: SmsRequest | None = None) -> tuple[str, str]:
    """(username, password) for a call: the mail's own (``passthrough``), else the account's."""
    if request is not None and request.credentials is not None:
        return request.credentials.username, request.credentials.password
    password = account.password.get_secret_value() if account.password else ""
    return account.username or "", password


def chunks(numbers: Sequence[str], size: int = MAX_NUMBERS_PER_CALL) -> Iterator[tuple[str, ...]]:
    """``numbers`` in lists of at most ``size``, in order."""
    for start in range(0, len(numbers), size):
        yield tuple(numbers[start : start + size])


#: seconds a provider refuses a second SMS to the same number within (KwtSMS: ERR028)
REPEAT_INTERVAL = {"kwtsms-http": 15.0, "kwtsms-smtp": 15.0, "opentech-http": 0.0}


def repeat_interval(account: AccountConfig) -> float:
    """Seconds between two SMS to one number: ``repeat_interval``, or the provider's rule."""
    if account.repeat_interval is not None:
        return account.repeat_interval
    return REPEAT_INTERVAL.get(account.provider, 0.0)
