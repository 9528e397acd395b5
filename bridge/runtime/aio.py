"""Small asyncio helpers shared by the long-running loops."""

from __future__ import annotations

import asyncio


async def wait_any(*events: asyncio.Event, seconds: float | None) -> None:
    """Return when any of ``events`` is set, or after ``seconds`` (None: no time limit)."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
