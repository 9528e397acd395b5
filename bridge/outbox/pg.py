r"""The PostgreSQL outbox: several bridges, one queue, no single point of failure.

Selected by ``queue.url: postgresql://user:password@host:port/db``. It runs the
same operations as the SQLite backend (:mod:`bridge.outbox.ops`), with what
several instances need on top:

- **psycopg 3 with psycopg-pool.** The operations are plain synchronous
  functions shared with SQLite, so they run on a few worker threads with
  connections from a ``psycopg_pool.ConnectionPool``; operations that arrive
  together share one transaction (group commit, each in its own savepoint),
  and ``synchronous_commit`` is on, so a ``250`` follows a durable commit. The
  pool checks each connection before lending it and reconnects in the
  background, so a database restart costs ``451`` replies, not a restart of
  the bridge. One ``AsyncConnection`` per instance (the *presence*) holds the
  instance's advisory lock and its leaderships, and ``LISTEN``\s.
- **Claims** lock rows with ``FOR UPDATE SKIP LOCKED`` under a per-account
  transaction lock (so two instances never pace one number twice), and lease
  them to the instance (``claimed_by``, ``lease_until``) with a fencing token
  (``fence``): only the holder of the current token may mark a row
  ``sending``. A heartbeat renews the leases of what the instance holds; any
  instance returns rows whose lease ran out (claimed: to the queue; sending:
  ``unknown``, or the queue for ``at_least_once`` accounts).
- **A shared rate**: each provider call takes the next slot of its account in
  the ``rate`` table, on the database's clock, so ``rate`` is the total over
  every instance.
- **Leaderships**: IMAP mailboxes and the notifier run on one instance at a
  time, the holder of a session advisory lock; when it dies, its session ends,
  the lock is free, and another instance takes over within about a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from bridge.errors import Displaced, OutboxError
from bridge.outbox.base import Outbox
from bridge.outbox.batches import Job, Settled, settle_all, take_batch
from bridge.outbox.claims import renew
from bridge.outbox.pg_tx import CHANNEL, DB_EPOCH, PgTx, lock_key, presence_name, records, redact, transaction
from bridge.outbox.schema import pg_migrate
from bridge.outbox.tx import Settings, Tx
from bridge.outbox.types import Leadership
from bridge.outbox.upkeep import prune_seen, prune_usage, recover

T = TypeVar("T")
P = ParamSpec("P")


log = logging.getLogger("bridge.outbox")


#: how often the presence connection looks for leaderships to take and checks it is alive
PRESENCE_TICK = 1.0


class PgOutbox(Outbox):
    """The outbox in PostgreSQL. Use as ``async with PgOutbox(url, instance="a") as outbox``."""

    def __init__(
        self,
        url: str,
        *,
        instance: str | None = None,
        dedupe_window: float | None = None,
        lease: float | None = None,
        lanes: int = 8,
        max_group: int = 64,
        connect_timeout: float = 5.0,
    ) -> None:
        self.url = url
        #: the name asked for (``queue.instance``), or None: the host's name, or the first
        #: of ``<host>-2``, ``<host>-3``, … that no running bridge is
        self.asked = instance
        defaults = Settings()
        self.settings = Settings(
            instance=instance or socket.gethostname(),
            lease=defaults.lease if lease is None else lease,
            dedupe_window=defaults.dedupe_window if dedupe_window is None else dedupe_window,
            shared=True,
        )
        self.lanes = lanes
        self.max_group = max_group
        self.connect_timeout = connect_timeout
        self.commits = 0
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool = self._make_pool()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._leaderships: dict[str, Leadership] = {}
        self._present = asyncio.Event()
        self._first_presence: psycopg.AsyncConnection[Any] | None = None
        #: rounds of the presence loop (each looks for leaderships to take), and heartbeats
        self.ticks = 0
        self.beats = 0
        self._started = time.time()
        self._clock_offset = 0.0  # the database's clock less this host's (_read_clock)
        self._host_clock: Callable[[], float] = time.time  # the host's clock (tests make it wrong)

    def _make_pool(self) -> ConnectionPool[psycopg.Connection[Any]]:
        kwargs = {
            "connect_timeout": max(int(self.connect_timeout), 1),
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 3,
            "keepalives_count": 3,
            "row_factory": records,
        }
        return ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.lanes + 1,
            kwargs=kwargs,
            configure=self._configure,
            check=ConnectionPool.check_connection,
            open=False,
            name="sms-bridge outbox",
            reconnect_timeout=365 * 86400.0,  # keep trying (with backoff) for as long as the bridge runs
        )

    def _configure(self, conn: psycopg.Connection[Any]) -> None:
        """Each pooled connection: durable commits, and named for ``pg_stat_activity``."""
        conn.execute("SET synchronous_commit = on")
        conn.execute("SELECT set_config('application_name', %s, false)", (f"sms-bridge {self.instance}"[:63],))
        conn.commit()

    def __repr__(self) -> str:
        return f"PgOutbox({redact(self.url)!r}, instance={self.instance!r})"

    def describe(self) -> str:
        return f"postgresql {redact(self.url)} as instance {self.instance}"

    def _error(self, exc: BaseException) -> OutboxError:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return OutboxError(f"the PostgreSQL outbox is unavailable: {redact(text, self.url)}")

    # -- opening and closing -------------------------------------------------

    async def __aenter__(self) -> PgOutbox:
        loop = self._loop = asyncio.get_running_loop()
        presence = await self._claim_identity()  # first: the pool's connections carry the name
        try:
            try:
                await self._read_clock(presence)  # before start_up compares leases
            except psycopg.Error as exc:
                raise self._error(exc) from exc
            self._started = self.clock()
            await asyncio.to_thread(self._open)
        except BaseException:
            await asyncio.to_thread(self._pool.close)
            await presence.close()
            raise
        for lane in range(self.lanes):
            thread = threading.Thread(target=self._work, args=(loop,), name=f"outbox-pg-{lane}", daemon=True)
            thread.start()
            self._threads.append(thread)
        self._first_presence = presence
        self._tasks = [
            asyncio.create_task(self._presence(presence), name="outbox-presence"),
            asyncio.create_task(self._heartbeat(), name="outbox-heartbeat"),
        ]
        return self

    def _open(self) -> None:
        try:
            self._pool.open(wait=True, timeout=self.connect_timeout)
            with self._pool.connection(timeout=self.connect_timeout) as conn:

                def execute(sql: str, params: Any = None) -> Any:
                    return conn.execute(sql, params)

                def version() -> int | None:
                    rec = conn.execute("SELECT max(version) FROM schema_version").fetchone()
                    return None if rec is None or rec[0] is None else int(rec[0])

                before, after = pg_migrate(execute, version)
                conn.commit()
        except (psycopg.Error, PoolTimeout, ValueError) as exc:
            raise OutboxError(
                f"cannot open the PostgreSQL outbox {redact(self.url)}: {redact(str(exc), self.url)}"
            ) from exc
        if before != after:
            log.info("outbox schema migrated from version %d to %d", before, after)

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._first_presence is not None and not self._first_presence.closed:  # cancelled before it ran
            await self._first_presence.close()
        await self._close_threads()

    async def _close_threads(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            await asyncio.to_thread(thread.join)
        await asyncio.to_thread(self._pool.close)

    # -- running operations ----------------------------------------------------

    def _work(self, loop: asyncio.AbstractEventLoop) -> None:
        while True:
            batch = take_batch(self._jobs, self.max_group)
            if batch is None:
                return
            loop.call_soon_threadsafe(settle_all, self._run_batch(batch))

    def _run_batch(self, batch: list[Job]) -> list[Settled]:
        for attempt in range(3):
            results: list[Settled] = []
            try:
                with self._pool.connection(timeout=self.connect_timeout) as conn:
                    tx = PgTx(conn, self.settings, self.clock())
                    alone = len(batch) == 1  # no savepoint needed: its failure is the transaction's
                    for op, args, kwargs, future in batch:
                        if not alone:
                            conn.execute("SAVEPOINT job")
                        try:
                            result = op(tx, *args, **kwargs)
                        except psycopg.errors.TransactionRollback:
                            raise  # a deadlock or serialisation failure: the whole batch again
                        except psycopg.OperationalError:
                            raise  # the connection is gone: nothing of the batch is stored
                        except Exception as exc:  # noqa: BLE001  (handed to the caller of this one job)
                            conn.execute("ROLLBACK" if alone else "ROLLBACK TO SAVEPOINT job")
                            error = self._error(exc) if isinstance(exc, psycopg.Error) else exc
                            results.append((future, None, error))
                        else:
                            if not alone:
                                conn.execute("RELEASE SAVEPOINT job")
                            results.append((future, result, None))
                    if results[-1][2] is None or not alone:
                        tx.send_wakes()
                    conn.commit()
                self.commits += 1
                return results
            except psycopg.errors.TransactionRollback as exc:
                if attempt == 2:
                    return [(future, None, self._error(exc)) for *_, future in batch]
            except (psycopg.Error, PoolTimeout) as exc:
                return [(future, None, self._error(exc)) for *_, future in batch]
        return []  # pragma: no cover  (the loop returns)

    async def run(self, op: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """``op(tx, *args, **kwargs)`` in a committed transaction; its result."""
        if self._loop is None or not any(t.is_alive() for t in self._threads):
            raise OutboxError("the outbox is closed")
        future: asyncio.Future[T] = self._loop.create_future()
        self._jobs.put((op, args, kwargs, future))
        return await future

    async def health(self) -> tuple[bool, str]:
        """(reachable, a line for ``/healthz``)."""
        try:
            async with asyncio.timeout(self.connect_timeout + 1):
                await self.run(lambda tx: tx.execute("SELECT 1").fetchone())
        except (OutboxError, TimeoutError) as exc:
            return False, f"{self.describe()}: {exc or 'no answer'}"
        return True, self.describe()

    # -- several instances -------------------------------------------------------

    async def rate_slot(self, account: str, interval: float) -> float:
        """Take ``account``'s next request slot, ``interval`` after the one before it,
        shared by every instance; the seconds to wait for it (the database's clock)."""

        def take(tx: Any) -> float:
            tx.execute("INSERT INTO rate (account, next_slot) VALUES (?, 0) ON CONFLICT DO NOTHING", (account,))
            rec = tx.execute(
                f"SELECT next_slot, {DB_EPOCH} FROM rate WHERE account = ? FOR UPDATE",  # noqa: S608  (a constant)
                (account,),
            ).fetchone()
            slot = max(float(rec[0]), float(rec[1]))
            tx.execute("UPDATE rate SET next_slot = ? WHERE account = ?", (slot + interval, account))
            return slot - float(rec[1])

        return await self.run(take)

    def leadership(self, name: str) -> Leadership:
        """The leadership called ``name``, sought from now on."""
        if name not in self._leaderships:
            self._leaderships[name] = Leadership(name)
        return self._leaderships[name]

    async def _claim_identity(self) -> psycopg.AsyncConnection[Any]:
        """Become an instance no other running bridge is: the session holding the name's
        lock (kept open: it becomes the presence). A name given in the config is waited
        for a little (a killed predecessor's session may take a moment to end), then
        refused; without one, the host's name or the first free ``<host>-N``. Holding
        the name's lock is what makes taking back that name's rows at start-up safe:
        whoever held it before is gone."""
        if self.asked is not None:
            candidates = [self.asked]
        else:
            host = socket.gethostname()
            candidates = [host] + [f"{host}-{n}" for n in range(2, 17)]
        deadline = time.monotonic() + 2 * self.connect_timeout
        while True:
            conn = await self._connect()
            try:
                for name in candidates:
                    if await self._try_identity(conn, name):
                        self.settings = replace(self.settings, instance=name)
                        await self._set_name(conn)  # it connected under the first candidate's
                        return conn
            except psycopg.Error as exc:  # the connection dropped just now
                await conn.close()
                raise self._error(exc) from exc
            except BaseException:
                await conn.close()
                raise
            await conn.close()
            if time.monotonic() > deadline:
                taken = candidates[0] if len(candidates) == 1 else f"{candidates[0]} … {candidates[-1]}"
                raise OutboxError(
                    f"another running bridge is instance {taken!r} of this outbox; "
                    "give each bridge its own queue.instance"
                )
            await asyncio.sleep(0.25)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.url,
                autocommit=True,
                connect_timeout=max(int(self.connect_timeout), 1),
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
            )
            # The server notices a vanished instance soon too (about 11 s; a killed process at
            # once), and frees its locks; this side gives them up sooner, after a failed check.
            settings = (
                ("tcp_keepalives_idle", "5"),
                ("tcp_keepalives_interval", "2"),
                ("tcp_keepalives_count", "3"),
                ("tcp_user_timeout", "10000"),
            )
            for setting, value in settings:
                await conn.execute("SELECT set_config(%s, %s, false)", (setting, value))
            await self._set_name(conn)
        except psycopg.Error as exc:
            raise self._error(exc) from exc
        return conn

    async def _set_name(self, conn: psycopg.AsyncConnection[Any]) -> None:
        await conn.execute("SELECT set_config('application_name', %s, false)", (presence_name(self.instance),))

    async def _try_identity(self, conn: psycopg.AsyncConnection[Any], name: str) -> bool:
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(f"instance:{name}"),))
        rec = await cur.fetchone()
        return bool(rec and rec[0])

    async def _lock_identity(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if not await self._try_identity(conn, self.instance):
            raise Displaced(
                f"another bridge took the instance name {self.instance!r} while this one had lost the database"
            )

    async def _presence(self, held: psycopg.AsyncConnection[Any]) -> None:
        """Hold this instance's identity (``held`` holds it at first) and leaderships, and
        listen, for as long as it runs."""
        delay = 1.0
        conn: psycopg.AsyncConnection[Any] | None = held
        away: float | None = None  # since when the database has not answered
        said = ""  # the last reason logged, and when: an outage is one line a minute, not one a try
        said_at = 0.0
        while not self._closing.is_set():
            try:
                if conn is None:
                    conn = await self._connect()
                    await self._lock_identity(conn)
                await conn.execute(f"LISTEN {CHANNEL}")
                self._present.set()
                if away is not None:
                    log.warning("outbox presence: the database answers again after %.0f s", time.monotonic() - away)
                away, said, delay = None, "", 1.0
                self.on_queued(None)  # anything queued while not listening
                while not self._closing.is_set():
                    await self._take_leaderships(conn)
                    self.ticks += 1
                    async for note in conn.notifies(timeout=PRESENCE_TICK):
                        self._heard(note.payload)
                    async with asyncio.timeout(self.connect_timeout):
                        await self._read_clock(conn)
            except Displaced as exc:
                self._present.clear()
                for leadership in self._leaderships.values():
                    leadership.drop()
                log.error("%s; this bridge stops", exc)
                self.displaced.set()
                return
            except (psycopg.Error, OutboxError, TimeoutError, OSError) as exc:
                self._present.clear()
                for leadership in self._leaderships.values():
                    if leadership.held.is_set():
                        log.warning(
                            "no longer %s: lost the database session (%s)", leadership.name, redact(str(exc), self.url)
                        )
                    leadership.drop()
                if not self._closing.is_set():
                    reason = redact(str(exc), self.url).splitlines()[0] if str(exc).strip() else "lost"
                    now = time.monotonic()
                    away = now if away is None else away
                    if reason != said or now - said_at >= 60:
                        log.warning("outbox presence: %s; reconnecting", reason)
                        said, said_at = reason, now
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._closing.wait(), delay)
                    delay = min(delay * 2, 10.0)
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error, OSError):
                        await conn.close()
                conn = None

    async def _take_leaderships(self, conn: psycopg.AsyncConnection[Any]) -> None:
        for leadership in list(self._leaderships.values()):
            if leadership.held.is_set():
                continue
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (lock_key(f"leader:{leadership.name}"),))
            rec = await cur.fetchone()
            if rec and rec[0]:
                log.info("this instance (%s) now does %s", self.instance, leadership.name)
                leadership.take()

    async def _read_clock(self, conn: psycopg.AsyncConnection[Any]) -> None:
        """Check the session, and how far the database's clock is from this host's: every
        bridge reckons leases and ages on the database's clock, so hosts whose clocks
        disagree never take each other's rows early (the reply's midpoint; a round trip
        of a few ms is the error)."""
        before = self._host_clock()
        cur = await conn.execute(f"SELECT {DB_EPOCH}")
        after = self._host_clock()
        rec = await cur.fetchone()
        if rec is not None:
            self._clock_offset = float(rec[0]) - (before + after) / 2

    def clock(self) -> float:
        return self._host_clock() + self._clock_offset

    def _heard(self, payload: str) -> None:
        if payload == "notice":
            self.on_notice()
        elif payload.startswith("queued:"):
            account = payload.removeprefix("queued:")
            self.on_queued(None if account == "*" else account)

    async def _heartbeat(self) -> None:
        """Renew this instance's leases, and return what dead instances held."""
        every = max(self.settings.lease / 3, 0.5)
        failing = False
        while not self._closing.is_set():
            try:
                renewed, recovered = await self.run(self._beat)
            except OutboxError as exc:
                if not failing:
                    log.warning("outbox heartbeat failed: %s", exc)
                failing = True
            else:
                if failing:
                    log.warning("outbox heartbeat: the database answers again (%d lease(s) renewed)", renewed)
                failing = False
                if any(recovered.values()):
                    log.warning(
                        "took back what a stopped instance held: %d requeued, %d unknown (may have been sent), "
                        "%d queued again (at-least-once)",
                        recovered["requeued"],
                        recovered["unknown"],
                        recovered["resent"],
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), every)

    def _beat(self, tx: Any) -> tuple[int, dict[str, int]]:
        now = self.clock()
        tx.execute(
            """INSERT INTO instances (id, host, pid, started, seen) VALUES (?, ?, ?, ?, ?)
               ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid,
                   started = excluded.started, seen = excluded.seen""",
            (self.instance, socket.gethostname(), os.getpid(), self._started, now),
        )
        renewed = renew(tx, self.instance, now + self.settings.lease)
        recovered = recover(tx, self.at_least_once, expired_only=True)
        self.beats += 1
        if self.beats % 30 == 1:  # now and then: forget old fingerprints and counts
            prune_seen(tx, now - self.settings.dedupe_window)
            prune_usage(tx)
        return renewed, recovered

    async def instances(self) -> list[tuple[str, str, float]]:
        """(id, host, last seen) of every instance heard from in the last hour."""

        def read(tx: Any) -> list[tuple[str, str, float]]:
            recs = tx.execute(
                "SELECT id, host, seen FROM instances WHERE seen > ? ORDER BY id", (self.clock() - 3600,)
            ).fetchall()
            return [(r[0], r[1], float(r[2])) for r in recs]

        return await self.run(read)


__all__ = ["PgOutbox", "PgTx", "presence_name", "redact", "transaction"]
