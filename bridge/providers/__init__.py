"""Providers: one module per API, one attempt per call, classified results.

Each provider's ``send`` makes exactly one attempt for at most
``MAX_NUMBERS_PER_CALL`` numbers and either returns :class:`Sent` or raises
one of :class:`~bridge.errors.TransientDelivery` (nothing was sent; retry),
:class:`~bridge.errors.PermanentDelivery` (nothing was sent; do not retry) or
:class:`~bridge.errors.AmbiguousDelivery` (it may have been sent). All mapping
of a provider's replies lives in its own module; retries belong to the caller.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from bridge.config import AccountConfig, KwtsmsHttpAccount, KwtsmsSmtpAccount, OpentechHttpAccount
from bridge.model import SmsRequest

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


def build(account_name: str, account: AccountConfig, client: httpx.AsyncClient, limiter: RateLimiter) -> Provider:
    """The provider an account names."""
    if isinstance(account, KwtsmsHttpAccount):
        from bridge.providers.kwtsms_http import KwtSmsHttp  # noqa: PLC0415  (avoid an import cycle)

        return KwtSmsHttp(account_name, account, client, limiter)
    if isinstance(account, OpentechHttpAccount):
        from bridge.providers.opentech_http import OpenTechHttp  # noqa: PLC0415

        return OpenTechHttp(account_name, account, client, limiter)
    if isinstance(account, KwtsmsSmtpAccount):
        from bridge.providers.kwtsms_smtp import KwtSmsSmtp  # noqa: PLC0415

        return KwtSmsSmtp(account_name, account, limiter)
    raise TypeError(f"no provider for {type(account).__name__}")
