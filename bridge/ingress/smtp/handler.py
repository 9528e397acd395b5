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
import hmac
import logging
import secrets
import ssl
import weakref
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session, TLSSetupException

from bridge.config import Config
from bridge.core.access import (
    Peer,
    auth_offered,
    find_client,
    may_use_route,
    sender_allowed,
    verify_password,
)
from bridge.core.intake import decide
from bridge.core.mail import parse_mail
from bridge.core.routing import route_for, why_not_served
from bridge.errors import OutboxError
from bridge.ingress.accept import admit, fingerprint
from bridge.ingress.refusals import RefusalLog
from bridge.ingress.smtp.protocol import _BARE, BridgeSMTP, ascii_reply, multiline, peer_text
from bridge.outbox import REFUSED, Notice, Outbox, State, notices
from bridge.runtime import Runtime
from bridge.runtime.outcomes import FirstOutcomes

log = logging.getLogger("bridge.smtp")


class Handler:
    """aiosmtpd hooks: who at MAIL, routing at RCPT, parse/validate/commit at DATA."""

    def __init__(self, config: Config, outbox: Outbox, runtime: Runtime, *, on_notice: Callable[[], None]) -> None:
        self.config = config
        self.outbox = outbox
        self.runtime = runtime
        self.on_notice = on_notice
        self.stopping = False
        self.in_data = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.metrics = runtime.metrics
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
                self.runtime,
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
        self.runtime.outcomes.watch(enqueued.mail_id, enqueued.ids)
        told = await self.runtime.outcomes.outcome(enqueued.mail_id, keep)
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
        and the notifier mails them later (bridge.runtime.outcomes): told twice, never not at all."""
        try:
            await self.outbox.run(notices.set_notice, held, notice)
        except OutboxError as exc:
            log.warning("could not record the answer to id=%s (%s); its notice follows later", held[0], exc)

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, TLSSetupException | ConnectionError | ssl.SSLError):
            log.info("connection ended: %s", type(error.__cause__ or error).__name__)
            return "421 4.3.0 Connection problem"
        log.error("internal SMTP error: %s", type(error).__name__, exc_info=error)
        return "451 4.3.0 Internal error; try again later"
