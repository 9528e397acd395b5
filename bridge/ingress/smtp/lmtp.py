"""LMTP (RFC 2033), for an MTA such as Postfix that hands mail over: one reply per recipient
after DATA, LHLO instead of HELO and EHLO, over TCP or a Unix socket."""

from __future__ import annotations

from collections.abc import Callable

from aiosmtpd.smtp import SMTP, Envelope, Session

from bridge.config import Config
from bridge.core.access import (
    Peer,
)
from bridge.ingress.smtp.handler import Handler
from bridge.ingress.smtp.protocol import BridgeSMTP, ConnectionLimits
from bridge.runtime.guard import AuthGuard


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
