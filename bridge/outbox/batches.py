"""What both backends' worker threads share: a queue of jobs, taken in batches that
share one transaction (group commit), and their results handed back to the event loop."""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable
from typing import Any

#: an operation on a connection, its arguments after the connection, and the future its caller awaits
Job = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any], "asyncio.Future[Any]"]
#: a job's future with its result, or the error it raised
Settled = tuple["asyncio.Future[Any]", Any, BaseException | None]


def take_batch(jobs: queue.SimpleQueue[Job | None], most: int) -> list[Job] | None:
    """The next job and those already waiting behind it (up to ``most``); None: stop."""
    job = jobs.get()
    if job is None:
        return None
    batch = [job]
    while len(batch) < most:
        try:
            more = jobs.get_nowait()
        except queue.Empty:
            break
        if more is None:
            jobs.put(None)  # finish this batch, then stop
            break
        batch.append(more)
    return batch


def settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def settle_all(settled: list[Settled]) -> None:
    for future, result, err in settled:
        settle(future, result, err)
