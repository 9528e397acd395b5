"""Test helpers: accounts, requests and a simulator on a free loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from bridge.config import AccountConfig
from bridge.model import SmsRequest
from bridge.simulator import SimAccount, Simulator

SIM_PASSWORD = "sim-canary-5150"


def sim_accounts(balance: float = 1000.0) -> dict[str, list[SimAccount]]:
    return {
        "kwtsms": [SimAccount("corp", SIM_PASSWORD, balance=balance, senders=["KWT-SMS", "MY-COMPANY"])],
        "opentech": [SimAccount("corp", SIM_PASSWORD, balance=balance, senders=["OpenTech"], uid="77")],
    }


@asynccontextmanager
async def running_simulator(**kwargs: Any) -> AsyncIterator[tuple[Simulator, str]]:
    kwargs.setdefault("out", None)
    kwargs.setdefault("repeat_window", 0)
    accounts = kwargs.pop("accounts", None) or sim_accounts()
    simulator = Simulator(accounts, **kwargs)
    runner, port = await simulator.start("127.0.0.1", 0)
    try:
        yield simulator, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def account(provider: str, url: str, **overrides: Any) -> AccountConfig:
    base: dict[str, Any] = {
        "provider": provider,
        "url": url,
        "username": "corp",
        "password": SIM_PASSWORD,
        "sender": "KWT-SMS",
        "rate": 50,
        "timeout": 5,
    }
    if provider == "kwtsms-http":
        base["url"] = url + "/API/"
    if provider == "opentech-http":
        base |= {"url": url + "/ap/static/api/", "uid": "77", "sender": "OpenTech"}
    return AccountConfig.model_validate(base | overrides)


def sms(text: str = "hello", numbers: tuple[str, ...] = ("96597119440",), **overrides: Any) -> SmsRequest:
    from bridge.encoding import measure

    m = measure(text)
    values: dict[str, Any] = {
        "route": "r",
        "account": "a",
        "provider": "kwtsms-http",
        "sender": "KWT-SMS",
        "numbers": numbers,
        "text": text,
        "lang": 1 if m.encoding == "gsm7" else 3,
        "encoding": m.encoding,
        "pages": m.pages,
        "points": m.pages * len(numbers),
    }
    return SmsRequest(**(values | overrides))
