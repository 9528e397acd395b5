"""Wiring: the resources a running bridge holds, opened and closed in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from bridge import __version__
from bridge.app.listeners import address, bind_lmtp, bind_smtp, cannot_bind, in_process_simulator, start_web
from bridge.app.logs import quiet_noisy_loggers
from bridge.config import Config
from bridge.config import warnings as config_warnings
from bridge.dispatch.dispatcher import Dispatcher
from bridge.errors import BridgeError, ConfigError, Displaced, ListenError, OutboxError
from bridge.ingress.imap import MailboxWatcher
from bridge.ingress.smtp import ConnectionLimits, Handler, LmtpHandler
from bridge.ingress.webhook import AlertWebhook
from bridge.notify.sender import Notifier
from bridge.outbox import Leadership, Outbox, open_outbox, upkeep, views
from bridge.providers import Provider, RateLimiter, SharedRateLimiter, build
from bridge.runtime import Runtime
from bridge.runtime.aio import wait_any
from bridge.runtime.guard import AuthGuard
from bridge.runtime.metrics import Metrics
from bridge.web import admin
from bridge.web.status import StatusPage

log = logging.getLogger("bridge")


@asynccontextmanager
async def open_providers(config: Config, outbox: Outbox | None = None) -> AsyncIterator[dict[str, Provider]]:
    """One provider per account, sharing one HTTP client. With an outbox several bridges
    share, each account's rate is shared too: a total over the bridges."""
    quiet_noisy_loggers()
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            httpx.AsyncClient(
                headers={"User-Agent": f"sms-bridge/{__version__}"},
                limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                follow_redirects=False,
            )
        )
        providers = {
            name: build(name, account, client, _limiter(name, account.rate, outbox))
            for name, account in config.accounts.items()
        }
        yield providers


def _limiter(account: str, rate: float, outbox: Outbox | None) -> RateLimiter:
    if outbox is None or not outbox.shared:
        return RateLimiter(rate)
    return SharedRateLimiter(rate, functools.partial(outbox.rate_slot, account))


def notify_systemd(state: str) -> None:
    """Tell systemd (``Type=notify``) about readiness or stopping; no-op elsewhere."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(address)
        sock.sendall(state.encode())


async def housekeeping(config: Config, outbox: Outbox, stop: asyncio.Event) -> None:
    """Once an hour: forget final messages (and their history) older than ``queue.keep_days``."""
    while not stop.is_set():
        try:
            pruned = await outbox.run(upkeep.prune, outbox.clock() - config.queue.keep_days * 86400)
        except OutboxError as exc:
            log.warning("pruning old messages failed (%s); trying again in an hour", exc)
        else:
            if pruned:
                log.info("pruned %d message(s) final for more than %g days", pruned, config.queue.keep_days)
        await wait_any(stop, seconds=3600)


async def as_leader(
    leadership: Leadership, work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: asyncio.Event
) -> None:
    """Run ``work(its_stop)`` while this bridge holds ``leadership``, until ``stop``: when the
    leadership is lost the work is stopped, and started again once it is held again."""
    while not stop.is_set():
        await wait_any(leadership.held, stop, seconds=None)
        if stop.is_set():
            return
        lost = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            tg.create_task(work(lost))
            try:
                await wait_any(leadership.lost, stop, seconds=None)
            finally:
                lost.set()


async def serve(
    config: Config,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[list[tuple[str, int]]], None] | None = None,
    handle_signals: bool = True,
    reload: Callable[[], Config] | None = None,
    hup: asyncio.Event | None = None,
) -> None:
    """Run the bridge until ``stop`` is set (or SIGTERM/SIGINT), then drain and return.

    SMTP server, dispatcher and notifier live in one task group: if one of them
    fails, the others are cancelled and the error propagates (the process
    exits non-zero and systemd restarts it; nothing acknowledged is lost).

    SIGHUP (``systemctl reload``), or ``hup`` being set, re-reads the config with
    ``reload``: a config with problems is refused with a log line and the running
    one kept; a good one replaces listeners, routes, accounts, clients and limits.
    The outbox stays open throughout, so nothing queued is dropped or resent.
    """
    stop = stop or asyncio.Event()
    hup = hup or asyncio.Event()
    loop = asyncio.get_running_loop()
    quiet_noisy_loggers()
    # The outbox writer thread needs the GIL back quickly after each commit; with the
    # default 5 ms switch interval a busy event loop makes every 250 wait for it.
    sys.setswitchinterval(0.0005)
    async with AsyncExitStack() as stack:
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
                stack.callback(loop.remove_signal_handler, sig)
            if reload is not None:
                loop.add_signal_handler(signal.SIGHUP, hup.set)
                stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        outbox: Outbox = await stack.enter_async_context(open_outbox(config.queue))
        log.info("outbox: %s", outbox.describe())
        at_least_once = [n for n, a in config.accounts.items() if a.at_least_once]
        recovered = await outbox.start_up(at_least_once=at_least_once)
        if any(recovered.values()):
            log.warning(
                "recovered after an unclean stop: %d requeued, %d unknown (may have been sent), %d queued again (at-least-once)",
                recovered["requeued"],
                recovered["unknown"],
                recovered["resent"],
            )
        metrics = Metrics()
        await _serve_configs(config, _Control(outbox, metrics, stop, hup, reload), ready)
    if outbox.displaced.is_set():
        raise Displaced(f"stopped: another bridge runs as instance {outbox.instance!r} of this outbox")
    log.info("stopped")


#: what is told the addresses bound, once the bridge is ready
Ready = Callable[[list[tuple[str, int]]], None]


@dataclass(frozen=True)
class _Control:
    """What stays the same across reloads: the outbox, the metrics, the stop and reload signals."""

    outbox: Outbox
    metrics: Metrics
    stop: asyncio.Event
    hup: asyncio.Event
    reload: Callable[[], Config] | None


async def _serve_configs(config: Config, control: _Control, ready: Ready | None) -> None:
    """Run on ``config``, then on each config a reload brings, until a stop. A new config whose
    listeners cannot be bound after all (the port was taken between the check and the bind)
    is given up, and the bridge goes on with the one it ran before."""
    running: Config | None = None
    while True:
        try:
            new = await _run(config, control, ready)
        except ListenError as exc:
            if running is None:
                raise  # at start-up: the service cannot run as configured
            log.error("reload failed: %s; going back to the configuration that ran before", exc)
            config, running = running, None
            continue
        ready = None
        if new is None:
            return
        if new.queue != config.queue:
            log.warning("queue changed; the outbox moves only with a restart (systemctl restart sms-bridge)")
        running, config = config, new
        log.info("reloaded the configuration: %d account(s), %d route(s)", len(config.accounts), len(config.routes))


async def _next_config(running: Config, control: _Control) -> Config | None:
    """Wait for a stop (None) or a reload whose config is valid and whose new listeners can be
    bound (the new config); a reload that cannot is refused, and the running listeners kept.

    Another bridge that took this one's instance name while it had lost the database is a stop
    too: this one drains and exits with an error, so that systemd starts it again under a free
    name (or refuses a taken one)."""
    stop, hup, reload = control.stop, control.hup, control.reload
    while True:
        await wait_any(stop, hup, control.outbox.displaced, seconds=None)
        if control.outbox.displaced.is_set():
            stop.set()
        if stop.is_set():
            return None
        hup.clear()
        if reload is None:
            continue
        try:
            new = await asyncio.to_thread(reload)
        except ConfigError as exc:
            log.error("reload refused; keeping the running configuration. %s", exc.describe())
            continue
        except BridgeError as exc:
            log.error("reload refused; keeping the running configuration: %s", exc)
            continue
        taken = cannot_bind(new, running)
        if taken is not None:
            log.error("reload refused; keeping the running configuration and its listeners: %s", taken)
            continue
        notify_systemd("RELOADING=1")
        return new


async def _run(config: Config, control: _Control, ready: Ready | None) -> Config | None:
    """Everything but the outbox, on one config: until a stop (None) or a good reload (its config)."""
    outbox = control.outbox
    for warning in config_warnings(config):
        log.warning("%s", warning)
    async with AsyncExitStack() as stack:
        notifier = Notifier(config, outbox, control.metrics)
        # what dispatch, the ways in and the web part share: built first, handed to each
        runtime = Runtime.build(
            config,
            outbox,
            metrics=control.metrics,
            balances=await outbox.run(views.balances),
            on_low_balance=notifier.low_balance,
        )
        await stack.enter_async_context(in_process_simulator(config))
        providers = await stack.enter_async_context(open_providers(config, outbox))
        dispatcher = Dispatcher(config, outbox, providers, runtime, on_notice=notifier.wake)
        outbox.listen(runtime.wake, notifier.wake)  # other bridges queued, or left a notice
        stack.callback(outbox.listen, lambda account: None, lambda: None)
        ways_in = await _open_ways_in(stack, config, outbox, runtime, notifier)
        if config.admin.listen:
            await start_web(stack, config, admin.build(_web_parts(config, outbox, runtime, notifier, ways_in)))
        return await _until_stop_or_reload(config, control, dispatcher, notifier, ways_in, ready)


@dataclass
class _WaysIn:
    """The listeners of one config, and the handlers behind them."""

    handler: Handler
    lmtp_handler: LmtpHandler
    limits: ConnectionLimits
    servers: list[asyncio.Server]
    watchers: list[MailboxWatcher]

    def bound(self) -> list[tuple[str, int]]:
        return [address(s) for s in self.servers if s.sockets and s.sockets[0].family != socket.AF_UNIX]

    def stopping(self) -> bool:
        return self.handler.stopping


async def _open_ways_in(
    stack: AsyncExitStack, config: Config, outbox: Outbox, runtime: Runtime, notifier: Notifier
) -> _WaysIn:
    handler = Handler(config, outbox, runtime, on_notice=notifier.wake)
    lmtp_handler = LmtpHandler(config, outbox, runtime, on_notice=notifier.wake)
    limits = ConnectionLimits(config.smtp.max_connections, config.smtp.max_connections_per_client)
    guard = AuthGuard(config.smtp.auth_failures, config.smtp.auth_lockout)
    servers = await bind_smtp(stack, config, handler, limits, guard)
    if config.lmtp.listen:
        servers.append(await bind_lmtp(stack, config, lmtp_handler, limits))
    watchers = [MailboxWatcher(box, config, outbox, runtime, on_notice=notifier.wake) for box in config.imap]
    ways_in = _WaysIn(handler, lmtp_handler, limits, servers, watchers)
    log.info("sms-bridge %s listening on %s", __version__, ", ".join(f"{h}:{p}" for h, p in ways_in.bound()))
    return ways_in


def _web_parts(config: Config, outbox: Outbox, runtime: Runtime, notifier: Notifier, ways_in: _WaysIn) -> admin.Parts:
    watchers = ways_in.watchers
    webhook = AlertWebhook(config, outbox, runtime, ways_in.stopping)
    status = StatusPage(config, outbox, runtime, lambda: [(w.label, w.connected.is_set()) for w in watchers])
    return admin.Parts(outbox, ways_in.handler, runtime, notifier, watchers, ways_in.stopping, webhook, status)


async def _until_stop_or_reload(
    config: Config,
    control: _Control,
    dispatcher: Dispatcher,
    notifier: Notifier,
    ways_in: _WaysIn,
    ready: Ready | None,
) -> Config | None:
    """The loops of one config, in one task group, until a stop or a good reload; then drain."""
    outbox = control.outbox
    grace = config.dispatch.grace
    dispatch_stop, notify_stop, imap_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
    async with asyncio.TaskGroup() as tg:
        dispatching = tg.create_task(dispatcher.run(dispatch_stop), name="dispatcher")
        # with several bridges on one outbox, one at a time sends notices and watches each mailbox
        notices = outbox.leadership("notices")
        tg.create_task(as_leader(notices, notifier.run, notify_stop), name="notifier")
        tg.create_task(notifier.run_warnings(notify_stop), name="balance-warnings")
        tg.create_task(
            as_leader(notices, functools.partial(housekeeping, config, outbox), notify_stop), name="housekeeping"
        )
        for watcher in ways_in.watchers:
            mailbox = outbox.leadership(f"imap {watcher.label}")
            tg.create_task(as_leader(mailbox, watcher.run, imap_stop), name=f"imap-{watcher.label}")
        notify_systemd("READY=1")
        if ready is not None:
            ready(ways_in.bound())
        new = await _next_config(config, control)
        if new is None:
            notify_systemd("STOPPING=1")
            log.info("stopping: no new mail; finishing what is in flight (up to %.0f s)", grace)
        else:
            log.info(
                "reloading: finishing what is in flight (up to %.0f s), then starting on the new configuration", grace
            )
        # drain: no new mail, then the sessions, then dispatch; the exit stack closes the listeners
        ways_in.handler.stopping = ways_in.lmtp_handler.stopping = True
        imap_stop.set()
        for server in ways_in.servers:
            server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await ways_in.handler.idle.wait()
                await ways_in.lmtp_handler.idle.wait()
        ways_in.limits.close_all()
        dispatch_stop.set()
        done, _ = await asyncio.wait([dispatching], timeout=grace)
        if not done:
            log.warning("deliveries still in flight after %.0f s; they will be marked unknown at the next start", grace)
            dispatching.cancel()
        notify_stop.set()
    return new
