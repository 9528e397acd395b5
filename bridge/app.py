"""Wiring: the resources a running bridge holds, opened and closed in one place."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import ssl
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bridge import __version__, admin
from bridge.aio import wait_any
from bridge.config import Config, parse_host_port
from bridge.config import warnings as config_warnings
from bridge.dispatch import Dispatcher
from bridge.errors import BridgeError, ConfigError, Displaced, OutboxError
from bridge.guard import AuthGuard
from bridge.ingress.imap import MailboxWatcher
from bridge.ingress.smtp import ConnectionLimits, Handler, LmtpHandler, lmtp_factory, protocol_factory, tls_context
from bridge.ingress.webhook import AlertWebhook
from bridge.logs import quiet_noisy_loggers
from bridge.metrics import Metrics
from bridge.notify import Notifier
from bridge.outbox import Leadership, Outbox, open_outbox
from bridge.providers import Provider, RateLimiter, SharedRateLimiter, build
from bridge.simulator import Simulator
from bridge.status import StatusPage

log = logging.getLogger("bridge")


@asynccontextmanager
async def in_process_simulator(config: Config) -> AsyncIterator[Simulator | None]:
    """The simulator, when the config's ``simulator.enabled`` asks for it."""
    if not config.simulator.enabled:
        yield None
        return
    host, port = parse_host_port(config.simulator.listen)
    simulator = Simulator(out=sys.stderr)
    try:
        runner, bound = await simulator.start(host, port)
    except OSError as exc:
        raise BridgeError(f"cannot listen on {config.simulator.listen} (simulator.listen): {_why(exc)}") from exc
    log.info("simulator listening on http://%s:%d (in-process)", host, bound)
    try:
        yield simulator
    finally:
        await runner.cleanup()


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


async def _bind(config: Config, handler: Handler, limits: ConnectionLimits, guard: AuthGuard) -> list[asyncio.Server]:
    loop = asyncio.get_running_loop()
    try:
        context = tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise BridgeError(
            f"cannot load the TLS certificate {config.smtp.tls_cert} and key {config.smtp.tls_key} "
            f"(smtp.tls_cert, smtp.tls_key): {_why(exc)}"
        ) from exc
    servers: list[asyncio.Server] = []
    for listener in config.smtp.listeners():
        host, port = parse_host_port(listener.address)
        factory = protocol_factory(config, handler, listener, limits, context, guard)
        try:
            server = await loop.create_server(
                factory, host, port, ssl=context if listener.tls == "implicit" else None, reuse_address=True
            )
        except OSError as exc:
            for done in servers:
                done.close()
            raise BridgeError(f"cannot listen on {listener.address} (smtp.listen): {_why(exc)}") from exc
        servers.append(server)
    return servers


def _why(exc: OSError | ssl.SSLError) -> str:
    """An OS error in plain words (asyncio's bind errors repeat the address in theirs)."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def _address(server: asyncio.Server) -> tuple[str, int]:
    name = server.sockets[0].getsockname()
    return str(name[0]), int(name[1])


def _clear_socket(path: Path) -> None:
    """The socket's directory, and no stale socket left by a process that is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()


async def _bind_lmtp(config: Config, handler: LmtpHandler, limits: ConnectionLimits) -> asyncio.Server:
    """The LMTP listener: TCP, or a Unix socket made with ``lmtp.socket_mode``."""
    loop = asyncio.get_running_loop()
    factory = lmtp_factory(config, handler, limits)
    path = config.lmtp.socket_path()
    try:
        if path is None:
            host, port = parse_host_port(config.lmtp.listen or "")
            return await loop.create_server(factory, host, port, reuse_address=True)
        _clear_socket(Path(path))
        server = await loop.create_unix_server(factory, path)
        Path(path).chmod(int(config.lmtp.socket_mode, 8))  # noqa: ASYNC240  (once, at start-up)
        return server
    except OSError as exc:
        raise BridgeError(f"cannot listen on {config.lmtp.listen} (lmtp.listen): {_why(exc)}") from exc


async def housekeeping(config: Config, outbox: Outbox, stop: asyncio.Event) -> None:
    """Once an hour: forget final messages (and their history) older than ``queue.keep_days``."""
    while not stop.is_set():
        try:
            pruned = await outbox.prune(outbox.clock() - config.queue.keep_days * 86400)
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
        task = asyncio.create_task(work(lost))
        try:
            await wait_any(leadership.lost, stop, seconds=None)
        finally:
            lost.set()
            await task


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
        # Another bridge took this one's instance name while it had lost the database: drain and
        # stop with an error, so systemd starts it again under a free name (or refuses a taken one).
        displaced = asyncio.create_task(_stop_when(outbox.displaced, stop))
        stack.callback(displaced.cancel)
        first = True
        while True:
            new = await _run(config, outbox, metrics, stop, hup, reload, ready if first else None)
            first = False
            if new is None:
                break
            if new.queue != config.queue:
                log.warning("queue changed; the outbox moves only with a restart (systemctl restart sms-bridge)")
            config = new
            log.info("reloaded the configuration: %d account(s), %d route(s)", len(config.accounts), len(config.routes))
    if outbox.displaced.is_set():
        raise Displaced(f"stopped: another bridge runs as instance {outbox.instance!r} of this outbox")
    log.info("stopped")


async def _stop_when(event: asyncio.Event, stop: asyncio.Event) -> None:
    await event.wait()
    stop.set()


async def _next_config(stop: asyncio.Event, hup: asyncio.Event, reload: Callable[[], Config] | None) -> Config | None:
    """Wait for a stop (None) or a reload whose config is valid (the new config)."""
    while True:
        await wait_any(stop, hup, seconds=None)
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
        notify_systemd("RELOADING=1")
        return new


async def _run(
    config: Config,
    outbox: Outbox,
    metrics: Metrics,
    stop: asyncio.Event,
    hup: asyncio.Event,
    reload: Callable[[], Config] | None,
    ready: Callable[[list[tuple[str, int]]], None] | None,
) -> Config | None:
    """Everything but the outbox, on one config: until a stop (None) or a good reload (its config)."""
    grace = config.dispatch.grace
    for warning in config_warnings(config):
        log.warning("%s", warning)
    async with AsyncExitStack() as stack:
        balances = await outbox.balances()
        await stack.enter_async_context(in_process_simulator(config))
        providers = await stack.enter_async_context(open_providers(config, outbox))
        notifier = Notifier(config, outbox, metrics)
        dispatcher = Dispatcher(
            config,
            outbox,
            providers,
            on_notice=notifier.wake,
            on_low_balance=notifier.low_balance,
            balances=balances,
            metrics=metrics,
        )
        intake = dispatcher.intake()
        outbox.listen(dispatcher.wake, notifier.wake)  # other bridges queued, or left a notice
        stack.callback(outbox.listen, lambda account: None, lambda: None)
        handler = Handler(config, outbox, intake, on_notice=notifier.wake)
        limits = ConnectionLimits(config.smtp.max_connections, config.smtp.max_connections_per_client)
        guard = AuthGuard(config.smtp.auth_failures, config.smtp.auth_lockout)
        servers = await _bind(config, handler, limits, guard)
        for server in servers:
            stack.push_async_callback(_closed, server)
        lmtp_handler = LmtpHandler(config, outbox, intake, on_notice=notifier.wake)
        if config.lmtp.listen:
            servers.append(await _bind_lmtp(config, lmtp_handler, limits))
            stack.push_async_callback(_closed, servers[-1])
            log.info("LMTP listening on %s", config.lmtp.listen)
        bound = [_address(s) for s in servers if s.sockets and s.sockets[0].family != socket.AF_UNIX]
        log.info("sms-bridge %s listening on %s", __version__, ", ".join(f"{h}:{p}" for h, p in bound))
        watchers = [MailboxWatcher(box, config, outbox, intake, on_notice=notifier.wake) for box in config.imap]
        if config.admin.listen:
            webhook = AlertWebhook(config, outbox, intake, lambda: handler.stopping)
            status = StatusPage(config, outbox, dispatcher, lambda: [(w.label, w.connected.is_set()) for w in watchers])
            parts = admin.Parts(
                outbox, handler, dispatcher, notifier, watchers, lambda: handler.stopping, webhook, status
            )
            runner = web.AppRunner(admin.build(parts), access_log=None, handle_signals=False)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            host, port = parse_host_port(config.admin.listen)
            try:
                await web.TCPSite(runner, host, port).start()
            except OSError as exc:
                raise BridgeError(f"cannot listen on {config.admin.listen} (admin.listen): {_why(exc)}") from exc
            log.info(
                "status page on http://%s/ (also /healthz, /metrics and /alerts/<route>)%s",
                config.admin.listen,
                "" if config.admin.users else "; read-only: no admin.users",
            )
        dispatch_stop, notify_stop, imap_stop = asyncio.Event(), asyncio.Event(), asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            dispatching = tg.create_task(dispatcher.run(dispatch_stop), name="dispatcher")
            # with several bridges on one outbox, one at a time sends notices and watches each mailbox
            notices = outbox.leadership("notices")
            tg.create_task(as_leader(notices, notifier.run, notify_stop), name="notifier")
            tg.create_task(
                as_leader(notices, functools.partial(housekeeping, config, outbox), notify_stop), name="housekeeping"
            )
            for watcher in watchers:
                mailbox = outbox.leadership(f"imap {watcher.label}")
                tg.create_task(as_leader(mailbox, watcher.run, imap_stop), name=f"imap-{watcher.label}")
            notify_systemd("READY=1")
            if ready is not None:
                ready(bound)
            new = await _next_config(stop, hup, reload)
            if new is None:
                notify_systemd("STOPPING=1")
                log.info("stopping: no new mail; finishing what is in flight (up to %.0f s)", grace)
            else:
                log.info(
                    "reloading: finishing what is in flight (up to %.0f s), then starting on the new configuration",
                    grace,
                )
            handler.stopping = lmtp_handler.stopping = True
            imap_stop.set()
            for server in servers:
                server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await handler.idle.wait()
                    await lmtp_handler.idle.wait()
            limits.close_all()
            dispatch_stop.set()
            done, _ = await asyncio.wait([dispatching], timeout=grace)
            if not done:
                log.warning(
                    "deliveries still in flight after %.0f s; they will be marked unknown at the next start", grace
                )
                dispatching.cancel()
            notify_stop.set()
    return new


async def _closed(server: asyncio.Server) -> None:
    """Stop listening (if not yet) and wait until the server's sessions are gone."""
    server.close()
    await server.wait_closed()
