"""The bridge's listeners: SMTP, LMTP, the status page and the in-process simulator.

Each is registered on the caller's exit stack the moment it is bound, so that whatever fails
later closes what was opened before. A bind that fails raises :class:`ListenError` naming the
config key; :func:`cannot_bind` tries the addresses a new config adds before a reload is
taken, so that a reload onto a taken port is refused while the running listeners keep going.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from aiohttp import web

from bridge.config import Config, parse_host_port
from bridge.errors import ListenError
from bridge.ingress.smtp import ConnectionLimits, Handler, LmtpHandler, lmtp_factory, protocol_factory, tls_context
from bridge.runtime.guard import AuthGuard
from bridge.simulator import Simulator

log = logging.getLogger("bridge")


def why(exc: OSError | ssl.SSLError) -> str:
    """An OS error in plain words (asyncio's bind errors repeat the address in theirs)."""
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)
    return str(exc)


def address(server: asyncio.Server) -> tuple[str, int]:
    name = server.sockets[0].getsockname()
    return str(name[0]), int(name[1])


async def closed(server: asyncio.Server) -> None:
    """Stop listening (if not yet) and wait until the server's sessions are gone."""
    server.close()
    await server.wait_closed()


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
        raise ListenError(f"cannot listen on {config.simulator.listen} (simulator.listen): {why(exc)}") from exc
    log.info("simulator listening on http://%s:%d (in-process)", host, bound)
    try:
        yield simulator
    finally:
        await runner.cleanup()


async def bind_smtp(
    stack: AsyncExitStack, config: Config, handler: Handler, limits: ConnectionLimits, guard: AuthGuard
) -> list[asyncio.Server]:
    """Every ``smtp.listen`` listener, each on ``stack`` as soon as it is bound."""
    loop = asyncio.get_running_loop()
    try:
        context = tls_context(config)
    except (OSError, ssl.SSLError) as exc:
        raise ListenError(
            f"cannot load the TLS certificate {config.smtp.tls_cert} and key {config.smtp.tls_key} "
            f"(smtp.tls_cert, smtp.tls_key): {why(exc)}"
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
            raise ListenError(f"cannot listen on {listener.address} (smtp.listen): {why(exc)}") from exc
        stack.push_async_callback(closed, server)
        servers.append(server)
    return servers


def _clear_socket(path: Path) -> None:
    """The socket's directory, and no stale socket left by a process that is gone."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_socket():
        path.unlink()


async def bind_lmtp(
    stack: AsyncExitStack, config: Config, handler: LmtpHandler, limits: ConnectionLimits
) -> asyncio.Server:
    """The LMTP listener: TCP, or a Unix socket made with ``lmtp.socket_mode``; on ``stack``."""
    loop = asyncio.get_running_loop()
    factory = lmtp_factory(config, handler, limits)
    path = config.lmtp.socket_path()
    try:
        if path is None:
            host, port = parse_host_port(config.lmtp.listen or "")
            server = await loop.create_server(factory, host, port, reuse_address=True)
        else:
            _clear_socket(Path(path))
            server = await loop.create_unix_server(factory, path)
            Path(path).chmod(int(config.lmtp.socket_mode, 8))  # noqa: ASYNC240  (once, at start-up)
    except OSError as exc:
        raise ListenError(f"cannot listen on {config.lmtp.listen} (lmtp.listen): {why(exc)}") from exc
    stack.push_async_callback(closed, server)
    log.info("LMTP listening on %s", config.lmtp.listen)
    return server


async def start_web(stack: AsyncExitStack, config: Config, app: web.Application) -> None:
    """The status page, ``/healthz``, ``/metrics`` and the webhook on ``admin.listen``; on ``stack``."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    host, port = parse_host_port(config.admin.listen or "")
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as exc:
        raise ListenError(f"cannot listen on {config.admin.listen} (admin.listen): {why(exc)}") from exc
    log.info(
        "status page on http://%s/ (also /healthz, /metrics and /alerts/<route>)%s",
        config.admin.listen,
        "" if config.admin.users else "; read-only: no admin.users",
    )


def tcp_addresses(config: Config) -> dict[str, str]:
    """Every TCP address ``config`` listens on, with its config key."""
    found = {listener.address: "smtp.listen" for listener in config.smtp.listeners()}
    if config.lmtp.listen and config.lmtp.socket_path() is None:
        found[config.lmtp.listen] = "lmtp.listen"
    if config.admin.listen:
        found[config.admin.listen] = "admin.listen"
    if config.simulator.enabled:
        found[config.simulator.listen] = "simulator.listen"
    return found


def cannot_bind(new: Config, running: Config) -> str | None:
    """Why ``new`` could not listen where ``running`` does not already (a port another
    program holds, an address not of this host), or None. The running listeners keep their
    ports through a reload, so only the addresses ``new`` adds are tried."""
    held = set(tcp_addresses(running))
    for where, key in tcp_addresses(new).items():
        if where in held:
            continue
        host, port = parse_host_port(where)
        try:
            infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except OSError as exc:
            return f"cannot listen on {where} ({key}): {why(exc)}"
        for family, kind, proto, _, sockaddr in infos:
            with contextlib.closing(socket.socket(family, kind, proto)) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind(sockaddr)
                except OSError as exc:
                    if exc.errno == errno.EAFNOSUPPORT:  # pragma: no cover  (an IPv6-less host)
                        continue
                    return f"cannot listen on {where} ({key}): {why(exc)}"
    return None
