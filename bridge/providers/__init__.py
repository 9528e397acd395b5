"""Providers: one module per API, one attempt per call, classified results.

Each provider's ``send`` makes exactly one attempt for at most
``MAX_NUMBERS_PER_CALL`` numbers and either returns :class:`Sent` or raises
one of :class:`~bridge.errors.TransientDelivery` (nothing was sent; retry),
:class:`~bridge.errors.PermanentDelivery` (nothing was sent; do not retry) or
:class:`~bridge.errors.AmbiguousDelivery` (it may have been sent). All mapping
of a provider's replies lives in its own module; retries belong to the caller.
"""

from __future__ import annotations

import httpx

from bridge.config import AccountConfig, KwtsmsHttpAccount, KwtsmsSmtpAccount, OpentechHttpAccount
from bridge.providers.base import (
    JITTER_MARGIN,
    MAX_NUMBERS_PER_CALL,
    Balance,
    OnStart,
    Provider,
    RateLimiter,
    Sent,
    SharedRateLimiter,
    chunks,
    credentials,
    repeat_interval,
)
from bridge.providers.kwtsms_http import KwtSmsHttp
from bridge.providers.kwtsms_smtp import KwtSmsSmtp
from bridge.providers.opentech_http import OpenTechHttp


def build(account_name: str, account: AccountConfig, client: httpx.AsyncClient, limiter: RateLimiter) -> Provider:
    """The provider an account names."""
    if isinstance(account, KwtsmsHttpAccount):
        return KwtSmsHttp(account_name, account, client, limiter)
    if isinstance(account, OpentechHttpAccount):
        return OpenTechHttp(account_name, account, client, limiter)
    if isinstance(account, KwtsmsSmtpAccount):
        return KwtSmsSmtp(account_name, account, limiter)
    raise TypeError(f"no provider for {type(account).__name__}")


__all__ = [
    "JITTER_MARGIN",
    "MAX_NUMBERS_PER_CALL",
    "Balance",
    "KwtSmsHttp",
    "KwtSmsSmtp",
    "OnStart",
    "OpenTechHttp",
    "Provider",
    "RateLimiter",
    "Sent",
    "SharedRateLimiter",
    "build",
    "chunks",
    "credentials",
    "repeat_interval",
]
