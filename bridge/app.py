"""Wiring: the resources a running bridge holds, opened and closed in one place."""

from __future__ import annotations

import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import httpx

from bridge import __version__
from bridge.config import Config, parse_host_port
from bridge.providers import Provider, RateLimiter, build
from bridge.simulator import Simulator

log = logging.getLogger("bridge")


@asynccontextmanager
async def in_process_simulator(config: Config) -> AsyncIterator[Simulator | None]:
    """The simulator, when the config's ``simulator.enabled`` asks for it."""
    if not config.simulator.enabled:
        yield None
        return
    host, port = parse_host_port(config.simulator.listen)
    simulator = Simulator(out=sys.stderr)
    runner, bound = await simulator.start(host, port)
    log.info("simulator listening on http://%s:%d (in-process)", host, bound)
    try:
        yield simulator
    finally:
        await runner.cleanup()


@asynccontextmanager
async def open_providers(config: Config) -> AsyncIterator[dict[str, Provider]]:
    """One provider per account, sharing one HTTP client; the simulator first if asked."""
    async with AsyncExitStack() as stack:
        await stack.enter_async_context(in_process_simulator(config))
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                headers={"User-Agent": f"sms-bridge/{__version__}"},
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                follow_redirects=False,
            )
        )
        providers = {
            name: build(name, account, client, RateLimiter(account.rate)) for name, account in config.accounts.items()
        }
        yield providers
