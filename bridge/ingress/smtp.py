"""The SMTP server (aiosmtpd), with replies as the public API.

=========================================  =============================
situation                                  reply
=========================================  =============================
recipient the bridge does not serve        ``550 5.1.1`` at RCPT
not authenticated and not from a trusted   ``530 5.7.0`` at MAIL
network
too many recipients                        ``452 4.5.3`` at RCPT
body invalid                               ``550 5.6.0``, one line per problem
bare CR or LF in the message               ``550 5.6.0``
message too large                          ``552`` (aiosmtpd)
accepted and safely queued                 ``250 2.0.0 queued as <id>``
internal error, disk full                  ``451 4.3.0``
shutting down                              ``421 4.3.2``
too many connections                       ``421 4.7.0`` on connect
=========================================  =============================

Nothing is sent inside the SMTP transaction: DATA parses, validates and
commits to the outbox, then answers. Routes with ``ack: delivered`` hold the
answer while the first provider attempt runs, up to ``ack_timeout``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import secrets
import ssl
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from bridge.access import (
    Peer,
    auth_offered,
    find_client,
    may_use_route,
    sender_allowed,
    verify_password,
)
from bridge.config import Config, ListenerConfig
from bridge.errors import OutboxError
from bridge.guard import AuthGuard
from bridge.ingress.accept import admit
from bridge.ingress.context import Intake
from bridge.ingress.lineends import LineEnds
from bridge.ingress.refusals import RefusalLog
from bridge.intake import decide
from bridge.mail import parse_mail
from bridge.outbox import REFUSED, Notice, Outbox, State
from bridge.outcomes import FirstOutcomes
from bridge.routing import route_for, why_not_served

log = logging.getLogger("bridge.smtp")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")


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


def fingerprint(message_id: str, mail_from: str, raw: bytes) -> str | None:
    """Same Message-ID, sender and body: a client resubmitting after a lost reply."""
    if not message_id:
        return None
    _, _, body = raw.partition(b"\r\n\r\n")
    digest = hashlib.sha256()
    for part in (message_id.encode(), b"\x00", mail_from.lower().encode(), b"\x00", body):
        digest.update(part)
    return digest.hexdigest()


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
        handler: Handler = self.event_handler
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


class Handler:
    """aiosmtpd hooks: who at MAIL, routing at RCPT, parse/validate/commit at DATA."""

    def __init__(self, config: Config, outbox: Outbox, intake: Intake, *, on_notice: Callable[[], None]) -> None:
        self.config = config
        self.outbox = outbox
        self.intake = intake
        self.on_notice = on_notice
        self.stopping = False
        self.in_data = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.metrics = intake.metrics
        self._clients: weakref.WeakKeyDictionary[Envelope, str] = weakref.WeakKeyDictionary()
        self._key = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}  # user → keyed digest of a password that passed scrypt
        self._scrypt_slots = asyncio.Semaphore(2)
        self.refusals = RefusalLog(outbox)

    async def _refused(
        self, session: Session, stage: str, address: str, reason: str, envelope: Envelope, *, logged: bool = False
    ) -> None:
        await self.refusals.refused(
            logged=logged,
            via=self.via,
            stage=stage,
            peer=peer_text(session.peer),
            client=self._clients.get(envelope, ""),
            mail_from=envelope.mail_from or "",
            address=address,
            reason=reason,
        )

    def authenticate(self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
        """aiosmtpd's synchronous hook; :class:`BridgeSMTP` checks with :meth:`authenticate_async`."""
        return AuthResult(success=False, handled=False)

    async def authenticate_async(self, session: Session, data: Any) -> AuthResult:
        """Check AUTH credentials: scrypt runs in a worker thread, at most a few at a time,
        so a burst of bad logins never stalls the other sessions."""
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = data.login.decode("utf-8", "replace")
        client = next((c for c in self.config.clients.values() if c.user == user), None)
        given = bytes(data.password)
        ok = False
        if client is not None and client.password is not None:
            digest = hmac.new(self._key, given, "sha256").digest()
            if hmac.compare_digest(self._verified.get(user, b""), digest):
                ok = True
            else:
                async with self._scrypt_slots:
                    ok = await asyncio.to_thread(verify_password, client.password.get_secret_value(), given)
                if ok:
                    self._verified[user] = digest
        if not ok:
            self.metrics.refused("smtp", "auth", "credentials")
        log.log(
            logging.INFO if ok else logging.WARNING,
            "auth %s user=%s peer=%s",
            "ok" if ok else "failed",
            user,
            peer_text(session.peer),
        )
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)

    def _peer(self, session: Session) -> Peer:
        ip = str(session.peer[0]) if session.peer else None
        user = str(session.auth_data) if session.authenticated and session.auth_data else None
        return Peer(ip=ip, user=user)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.stopping:
            return "421 4.3.2 Service shutting down; try again later"
        found = find_client(self.config, self._peer(session))
        if found is None:
            if not session.authenticated and auth_offered(self.config):
                self.metrics.refused("smtp", "mail", "auth")
                return "530 5.7.0 Authentication required"
            self.metrics.refused("smtp", "mail", "client")
            user = self._peer(session).user
            why = f"no client matches (user {user})" if user else "no client matches this address"
            await self._refused(session, "mail", address, why, envelope)
            return "550 5.7.1 This client may not send through this bridge"
        name, client = found
        if not sender_allowed(client, address):
            self.metrics.refused("smtp", "mail", "sender")
            self._clients[envelope] = name
            await self._refused(session, "mail", address, f"sender not allowed for client {name}", envelope)
            return f"550 5.7.1 Sender <{ascii_reply(address, 200)}> is not allowed for this client"
        self._clients[envelope] = name
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            self.metrics.refused("smtp", "rcpt", "recipients")
            return "452 4.5.3 Too many recipients"
        found = route_for(address, self.config)
        if found is None:
            self.metrics.refused("smtp", "rcpt", "relay")
            why = why_not_served(address, self.config)
            await self._refused(session, "rcpt", address, why, envelope)
            return f"550 5.1.1 <{ascii_reply(address, 200)}>: {ascii_reply(why, 300)}"
        client = self._clients.get(envelope)
        if client is None or not may_use_route(self.config.clients[client], found[0]):
            self.metrics.refused("smtp", "rcpt", "client")
            await self._refused(session, "rcpt", address, f"client {client} may not use route {found[0]}", envelope)
            return f"550 5.7.1 <{ascii_reply(address, 200)}>: this client may not use that address"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.stopping:
            return "421 4.3.2 Service shutting down; try again later"
        self.in_data += 1
        self.idle.clear()
        try:
            return await self._data(server, session, envelope)
        except Exception:
            log.exception("internal error while accepting mail from %s", peer_text(session.peer))
            return self._for_each(envelope, "451 4.3.0 Internal error; the message was not accepted, try again later")
        finally:
            self.in_data -= 1
            if self.in_data == 0:
                self.idle.set()

    via = "smtp"

    def _line_flags(self, server: SMTP) -> tuple[bool, bool]:
        """(smuggling, normalised) for the message just read; reset for the next one."""
        ends = server.line_ends if isinstance(server, BridgeSMTP) else None
        if ends is None:
            return False, False
        flags = (ends.smuggling, ends.normalised)
        ends.reset()
        return flags

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        smuggling, normalised = self._line_flags(server)
        return await self._accept(session, envelope, smuggling=smuggling, normalised=normalised)

    async def _accept(
        self, session: Session, envelope: Envelope, *, smuggling: bool, normalised: bool, salt: str = ""
    ) -> str:
        """One message for ``envelope.rcpt_tos``: the reply (``salt`` keeps LMTP's
        per-recipient copies apart in the resubmission check)."""
        raw = envelope.original_content or b""
        mail_from = envelope.mail_from or ""
        if smuggling:
            self.metrics.refused(self.via, "data", "smuggling")
            log.warning(
                "refused from=%s peer=%s: a lone dot after a bare LF (SMTP smuggling)",
                mail_from,
                peer_text(session.peer),
            )
            return "550 5.6.0 A line with a lone dot ended in a bare LF; only CRLF.CRLF ends the data"
        if _BARE.search(raw):
            self.metrics.refused(self.via, "data", "smuggling")
            return "550 5.6.0 Bare CR or LF in the message; every line must end in CRLF"
        if normalised:
            strict = [
                r for r in envelope.rcpt_tos if (found := route_for(r, self.config)) and found[1].bare_lf == "reject"
            ]
            if strict:
                self.metrics.refused(self.via, "data", "smuggling")
                return "550 5.6.0 Bare LF in the message; this address takes only lines that end in CRLF"
        mail = parse_mail(raw, mail_from=mail_from, rcpt_tos=envelope.rcpt_tos)
        verdict = decide(mail, self.config)
        if not verdict.ok:
            self.metrics.refused(self.via, "data", "field")
            reason = "; ".join(map(str, verdict.problems))
            await self._refused(session, "data", ", ".join(envelope.rcpt_tos), reason, envelope)
            return multiline("550", "5.6.0", [f"{p.field}: {p.message}" for p in verdict.problems])
        client_name = self._clients.get(envelope, "")
        routes = {r.route for r in verdict.requests}
        wait = [self.config.routes[r] for r in routes if self.config.routes[r].ack == "delivered"]
        keep = max((r.ack_timeout for r in wait), default=0.0)  # this bridge sends what this session waits for
        try:
            admission = await admit(
                self.config,
                self.outbox,
                self.intake,
                client_name=client_name,
                mail=mail,
                verdict=verdict,
                via=self.via,
                fingerprint=fingerprint(mail.message_id, mail_from + salt, raw),
                keep=keep,
            )
        except OutboxError as exc:  # the disk or the database: nothing was stored, the sender keeps the mail
            self.metrics.refused(self.via, "data", "outbox")
            log.warning("not accepted from=%s peer=%s: %s", mail_from, peer_text(session.peer), exc)
            return "451 4.3.0 The bridge cannot store mail right now; not accepted, try again later"
        if admission.kind == "refused":
            reason = "; ".join(map(str, admission.problems))
            await self._refused(session, "data", ", ".join(envelope.rcpt_tos), reason, envelope, logged=True)
            return multiline("550", "5.7.1", [f"{p.field}: {p.message}" for p in admission.problems])
        if admission.kind == "over":
            await self._refused(session, "data", ", ".join(envelope.rcpt_tos), admission.reason, envelope, logged=True)
            return f"550 5.7.1 {ascii_reply(admission.reason)}"
        if admission.kind == "later":
            return f"451 {admission.status} {ascii_reply(admission.reason)}; not accepted, try again later"
        enqueued = admission.enqueued
        if enqueued is None:  # queued and duplicate always carry it
            raise RuntimeError(f"admission {admission.kind} without a stored message")
        if admission.kind == "duplicate":
            return f"250 2.0.0 already queued as {enqueued.mail_id}"
        if not wait:
            return f"250 2.0.0 queued as {enqueued.mail_id}"
        self.intake.outcomes.watch(enqueued.mail_id, enqueued.ids)
        told = await self.intake.outcomes.outcome(enqueued.mail_id, keep)
        return await self._delivered_reply(enqueued.mail_id, enqueued.ids, told)

    async def _delivered_reply(self, mail_id: str, ids: tuple[str, ...], told: FirstOutcomes) -> str:
        """``ack: delivered``: the sender learns the outcome of the first attempt. The refusals
        this session was told of are its own to answer: by 550 when every SMS was refused,
        else by a notice."""
        outcomes = told.outcomes
        held = [i for i, o in outcomes.items() if o.state in REFUSED]
        if told.complete and len(held) == len(ids):
            await self._answer(held, Notice.REPLIED)
            reasons = sorted({f"{o.code + ' ' if o.code else ''}{o.reason}" for o in outcomes.values()})
            return multiline("550", "5.0.0", [f"not sent ({mail_id}): {r}" for r in reasons])
        if held:  # some sent or still to come: the failures get a notice
            await self._answer(held, Notice.PENDING)
            self.on_notice()
        if told.complete and all(o.state == State.SENT for o in outcomes.values()):
            msg_ids = ",".join(sorted({o.msg_id for o in outcomes.values() if o.msg_id}))
            return f"250 2.0.0 sent as {ascii_reply(msg_ids, 200) or mail_id} ({mail_id})"
        return f"250 2.0.0 queued as {mail_id}"

    def _for_each(self, envelope: Envelope, reply: str) -> str:
        """The reply after DATA that stands for the whole message (LMTP: one per recipient)."""
        return reply

    async def _answer(self, held: list[str], notice: Notice) -> None:
        """Record how held refusals are answered. Should the outbox be away, they stay held
        and the notifier mails them later (bridge.outcomes): told twice, never not at all."""
        try:
            await self.outbox.set_notice(held, notice)
        except OutboxError as exc:
            log.warning("could not record the answer to id=%s (%s); its notice follows later", held[0], exc)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException | ConnectionError | ssl.SSLError):
            log.info("connection ended: %s", type(error.__cause__ or error).__name__)
            return "421 4.3.0 Connection problem"
        log.error("internal SMTP error: %s", type(error).__name__, exc_info=error)
        return "451 4.3.0 Internal error; try again later"


class LmtpHandler(Handler):
    """LMTP (RFC 2033): the same clients, validation and outbox, no AUTH, and after DATA
    one reply per recipient, so that the MTA bounces exactly the recipients refused.
    A connection over a Unix socket counts as from this machine (127.0.0.1)."""

    via = "lmtp"

    def _peer(self, session: Session) -> Peer:
        peer = super()._peer(session)
        return peer if peer.ip else Peer(ip="127.0.0.1", user=peer.user)

    def _for_each(self, envelope: Envelope, reply: str) -> str:
        return "\r\n".join([reply] * max(len(envelope.rcpt_tos), 1))

    async def _data(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        smuggling, normalised = self._line_flags(server)
        client = self._clients.get(envelope)
        replies = []
        for rcpt in envelope.rcpt_tos:
            one = Envelope()
            one.mail_from = envelope.mail_from
            one.mail_options = list(envelope.mail_options)
            one.rcpt_tos = [rcpt]
            one.original_content = envelope.original_content
            if client is not None:
                self._clients[one] = client
            reply = await self._accept(session, one, smuggling=smuggling, normalised=normalised, salt=f"\x00{rcpt}")
            replies.append(reply)
        return "\r\n".join(replies)


class BridgeLMTP(BridgeSMTP):
    """LHLO instead of HELO/EHLO (aiosmtpd's LMTP, on top of the bridge's protocol)."""

    show_smtp_greeting = False

    async def smtp_LHLO(self, arg: str) -> None:
        await super().smtp_EHLO(arg)

    async def smtp_HELO(self, arg: str) -> None:
        await self.push("500 5.5.1 This is LMTP: say LHLO")

    async def smtp_EHLO(self, arg: str) -> None:
        await self.push("500 5.5.1 This is LMTP: say LHLO")


def lmtp_factory(config: Config, handler: LmtpHandler, limits: ConnectionLimits) -> Callable[[], BridgeLMTP]:
    def factory() -> BridgeLMTP:
        return BridgeLMTP(
            handler,
            limits=limits,
            guard=AuthGuard(1, 1),
            hostname=config.smtp.hostname,
            data_size_limit=config.smtp.max_message_size,
            timeout=config.smtp.timeout,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            authenticator=handler.authenticate,
            ident=f"sms-bridge {config.smtp.hostname}",
        )

    return factory


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.smtp.tls_cert or not config.smtp.tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.smtp.tls_cert, config.smtp.tls_key)
    return context


def protocol_factory(
    config: Config,
    handler: Handler,
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
