"""The SQLite outbox: the embedded default, for one bridge on one host.

SQLite in WAL mode with ``synchronous=FULL``: a message is acknowledged only
after its rows are committed and the WAL is synced. Every database operation
runs on one writer thread; operations that arrive while a transaction is being
committed are grouped into the next one, so one fsync serves many SMTP
sessions (group commit) and nothing blocks the event loop.

The operations themselves are in the stage modules (:mod:`bridge.outbox.base`), shared
with the PostgreSQL backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import queue
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

from bridge.errors import OutboxError
from bridge.outbox.base import Outbox
from bridge.outbox.batches import Job, Settled, settle, settle_all, take_batch
from bridge.outbox.schema import connect
from bridge.outbox.tx import Settings, SqliteTx, Tx

T = TypeVar("T")
P = ParamSpec("P")


class SqliteOutbox(Outbox):
    """The outbox, for async code: every operation runs on one writer thread.

    Use as ``async with SqliteOutbox(path) as outbox``.
    """

    def __init__(self, path: str | Path, *, settings: Settings | None = None, max_group: int = 256) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self.settings = settings or Settings()
        self.max_group = max_group
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready: asyncio.Future[None] | None = None
        self.commits = 0  # transactions committed (for metrics and the benchmark)

    def __repr__(self) -> str:
        return f"SqliteOutbox({str(self.path)!r})"

    def describe(self) -> str:
        return f"sqlite {self.path.absolute()}"

    async def __aenter__(self) -> SqliteOutbox:
        # one bridge per SQLite outbox: taken before any row is read, recovered or changed
        self._lock = await asyncio.to_thread(take_lock, self.path)
        self._loop = asyncio.get_running_loop()
        self._ready = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(self._loop, self._ready), name="outbox-writer", daemon=True
        )
        self._thread.start()
        try:
            await self._ready
        except BaseException:
            self._release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._jobs.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor releases the flock
            self._lock = None

    async def health(self) -> tuple[bool, str]:
        """(reachable, a line for ``/healthz``)."""
        alive = self._thread is not None and self._thread.is_alive()
        return alive, self.describe() if alive else "the outbox writer has stopped"

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            conn = connect(self.path)
        except (sqlite3.Error, OSError) as exc:
            error = OutboxError(f"cannot open the outbox {self.path}: {exc}")
            loop.call_soon_threadsafe(settle, ready, None, error)
            return
        conn.settings = self.settings
        loop.call_soon_threadsafe(settle, ready, None, None)
        try:
            while True:
                batch = take_batch(self._jobs, self.max_group)
                if batch is None:
                    return
                self._run_batch(loop, conn, batch)
        finally:
            conn.close()

    def _run_batch(self, loop: asyncio.AbstractEventLoop, conn: SqliteTx, batch: list[Job]) -> None:
        results: list[Settled] = []
        try:
            conn.begin()
            for op, args, kwargs, future in batch:
                conn.execute("SAVEPOINT job")
                try:
                    result = op(conn, *args, **kwargs)
                except Exception as exc:  # noqa: BLE001  (handed to the caller of this one job)
                    conn.execute("ROLLBACK TO job")
                    conn.execute("RELEASE job")
                    results.append((future, None, exc))
                else:
                    conn.execute("RELEASE job")
                    results.append((future, result, None))
            conn.execute("COMMIT")
            self.commits += 1
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = OutboxError(f"the outbox could not commit: {exc}")
            results = [(future, None, error) for *_, future in batch]
        settled = [
            (future, result, OutboxError(f"outbox operation failed: {err}") if isinstance(err, sqlite3.Error) else err)
            for future, result, err in results
        ]
        loop.call_soon_threadsafe(settle_all, settled)  # one wake-up of the loop per batch

    async def run(self, op: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(tx, *args, **kwargs)`` in a committed (and synced) transaction; its result."""
        if self._loop is None or self._thread is None or not self._thread.is_alive():
            raise OutboxError("the outbox is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((op, args, kwargs, future))
        return await future


def lock_path(path: Path) -> Path:
    """The file beside the outbox that the bridge using it holds locked (``flock``)."""
    return path.with_name(path.name + ".lock")


def take_lock(path: Path) -> int:
    """Lock the outbox at ``path`` for this process, or raise :class:`OutboxError` naming the
    process that holds it. The lock is released when the descriptor is closed or the process
    ends (even by ``kill -9``), so a stale lock file never keeps a bridge from starting."""
    where = lock_path(path.absolute())
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(where, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise OutboxError(f"cannot open the outbox's lock file {where}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 200, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f"process {holder}" if holder.isdigit() else "another process"
        raise OutboxError(
            f"the outbox {path.absolute()} is in use by another bridge ({who}); one bridge per SQLite outbox: "
            "stop that one first (systemctl stop sms-bridge), or look with sms-bridge queue, which works beside it"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
