"""The SMTP protocol (aiosmtpd), as the bridge speaks it: connection limits, STARTTLS and
implicit TLS, AUTH checked off the event loop with a lockout, bare line ends told apart.

What to answer is the handler's (:mod:`~bridge.ingress.smtp.handler`); this module holds
nothing of the acceptance policy."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session, TLSSetupException

from bridge.config import Config, ListenerConfig
from bridge.core.access import (
    auth_offered,
)
from bridge.ingress.lineends import LineEnds
from bridge.runtime.guard import AuthGuard
from bridge.runtime.metrics import Metrics

_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")

log = logging.getLogger("bridge.smtp")


class Policy(Protocol):
    """What the protocol asks of its handler, besides aiosmtpd's own hooks."""

    metrics: Metrics

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult: ...

    async def authenticate_async(self, session: Session, data: Any) -> AuthResult: ...


def ascii_reply(text: str, limit: int = 400) -> str:
    """SMTP replies are ASCII: other characters become ``?`` (their U+ codes stay readable)."""
    out = text.replace("\r", " ").replace("\n", " ")
    out = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in out)
    return out[:limit]


def peer_text(peer: Any) -> str:
    """``127.0.0.1:40624`` or ``[::1]:40624``, as people write a peer."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host = str(peer[0])
        return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"
    return str(peer or "?")


def multiline(code: str, enhanced: str, lines: list[str]) -> str:
    lines = [ascii_reply(line) for line in lines] or [""]
    head = [f"{code}-{enhanced} {line}" for line in lines[:-1]]
    return "\r\n".join([*head, f"{code} {enhanced} {lines[-1]}"])


class ConnectionLimits:
    """Open connections, in total and per client address; the live sessions."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total = total
        self.per_client = per_client
        self.open: Counter[str] = Counter()
        self.sessions: set[BridgeSMTP] = set()

    def close_all(self) -> None:
        """Shutdown: every open session is told ``421 4.3.2`` before its connection closes."""
        for protocol in list(self.sessions):
            transport = protocol.transport
            if transport is not None and not transport.is_closing():
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(b"421 4.3.2 Service shutting down; try again later\r\n")
                transport.close()

    def admit(self, ip: str) -> bool:
        if sum(self.open.values()) >= self.total or self.open[ip] >= self.per_client:
            return False
        self.open[ip] += 1
        return True

    def release(self, ip: str) -> None:
        self.open[ip] -= 1
        if self.open[ip] <= 0:
            del self.open[ip]


class _Session(Session):
    """aiosmtpd's session without its deprecated ``login_data``, which warns on every login."""

    @property
    def login_data(self) -> Any:
        return None

    @login_data.setter
    def login_data(self, value: Any) -> None:
        pass


@dataclass(frozen=True)
class _Pending:
    """Credentials read by aiosmtpd, to be checked off the event loop."""

    mechanism: str
    data: Any


class BridgeSMTP(SMTP):
    """aiosmtpd's SMTP with connection limits, AUTH off the event loop with slow-down and
    lockout, bare line feeds read as CRLF (never as an end of data), and STARTTLS only once,
    after EHLO, with a failed handshake logged in one line."""

    def __init__(
        self,
        handler: Any,
        *,
        limits: ConnectionLimits,
        guard: AuthGuard,
        bare_lf: str = "normalize",
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._limits = limits
        self._guard = guard
        self._peer_ip: str | None = None
        self._refused = False
        self.line_ends: LineEnds | None = LineEnds() if bare_lf == "normalize" else None
        self.max_size = kwargs.get("data_size_limit") or 0

    def _create_session(self) -> Session:
        return _Session(self.loop)

    def data_received(self, data: bytes) -> None:
        if self.line_ends is not None:
            data = self.line_ends.feed(data)
        super().data_received(data)

    async def push(self, status: AnyStr) -> None:
        text = status.decode("ascii", "replace") if isinstance(status, bytes) else status
        if text.startswith("552 Error: Too much mail data"):
            text = f"552 5.3.4 Message too big; at most {self.max_size} bytes are accepted"
        elif text.startswith("500 Line too long"):
            text = "500 5.5.2 Line too long; lines may have at most 998 characters (RFC 5321)"
        await super().push(text)

    async def smtp_STARTTLS(self, arg: str) -> None:
        if self._tls_protocol is not None:
            await self.push("503 5.5.1 TLS is already active")
            return
        if self.session is None or not self.session.extended_smtp:
            await self.push("503 5.5.1 Send EHLO first")
            return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as exc:
            cause = exc.__cause__
            reason = getattr(cause, "reason", None) or type(cause).__name__ if cause else "handshake failed"
            log.info("TLS handshake failed peer=%s: %s", peer_text(self.session.peer), reason)
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(None)

    def _authenticate(self, mechanism: str, auth_data: Any) -> AuthResult:
        # aiosmtpd calls this synchronously; the scrypt check runs in auth_* below instead
        return AuthResult(success=False, handled=False, auth_data=_Pending(mechanism, auth_data))

    async def _checked(self, result: AuthResult) -> AuthResult:
        pending = result.auth_data
        if not isinstance(pending, _Pending) or self.session is None:
            return result
        handler: Policy = self.event_handler
        return await handler.authenticate_async(self.session, pending.data)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self._checked(await super().auth_LOGIN(_, args))

    async def smtp_AUTH(self, arg: str) -> None:
        ip = self._peer_ip or "?"
        if self._guard.locked(ip):
            self.event_handler.metrics.refused("smtp", "auth", "lockout")
            await self.push("421 4.7.0 Too many failed logins from your address; try again later")
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_AUTH(arg)
        if arg and self.session is not None and not self.session.authenticated:
            await asyncio.sleep(self._guard.failed(ip))  # this session waits; the others do not
        elif self.session is not None and self.session.authenticated:
            self._guard.succeeded(ip)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None and self._original_transport is None
        if first:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else "?"
            if not self._limits.admit(ip):
                log.warning("refused connection from %s: too many connections", ip)
                self.event_handler.metrics.refused("smtp", "connect", "connections")
                writable = transport
                if isinstance(writable, asyncio.WriteTransport):
                    writable.write(b"421 4.7.0 Too many connections; try again later\r\n")
                transport.close()
                self._refused = True
                return
            self._peer_ip = ip
            self._limits.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._peer_ip is not None:
            self._limits.release(self._peer_ip)
            self._limits.sessions.discard(self)
            self._peer_ip = None
        super().connection_lost(error)


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.smtp.tls_cert or not config.smtp.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return context


def protocol_factory(
    config: Config,
    handler: Policy,
    listener: ListenerConfig,
    limits: ConnectionLimits,
    context: ssl.SSLContext | None,
    guard: AuthGuard,
) -> Callable[[], BridgeSMTP]:
    def factory() -> BridgeSMTP:
        return BridgeSMTP(
            handler,
            limits=limits,
            guard=guard,
            bare_lf=listener.bare_lf,
            hostname=config.smtp.hostname,
            data_size_limit=config.smtp.max_message_size,
            tls_context=context if listener.tls == "starttls" else None,
            require_starttls=False,
            timeout=config.smtp.timeout,
            auth_require_tls=not (listener.plaintext_auth or listener.tls == "implicit"),
            authenticator=handler.authenticate,
            # with no AUTH users configured, AUTH is not offered at all
            auth_exclude_mechanism=None if auth_offered(config) else ["LOGIN", "PLAIN"],
            ident=f"sms-bridge {config.smtp.hostname}",
        )

    return factory
