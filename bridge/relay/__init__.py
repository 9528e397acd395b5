"""Mail leaving the bridge through a smarthost: one client, for the notifier's notices and for
the kwtsms-smtp path's relayed mail.

:class:`Relay` keeps the two phases apart, because they mean different things to a caller:
an error while connecting or logging in means nothing was sent; an error while the message is
handed over may mean it was taken.
"""

from __future__ import annotations

from email.message import Message
from types import TracebackType
from typing import Self

import aiosmtplib

from bridge.config import Smarthost, parse_host_port


class Relay:
    """One connection to a smarthost: ``async with Relay(smarthost, timeout) as relay`` connects
    (and logs in, with the smarthost's login); ``await relay.send(message)`` hands one over."""

    def __init__(self, smarthost: Smarthost, timeout: float) -> None:
        host, port = parse_host_port(smarthost.address)
        self.smarthost = smarthost
        self._client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=smarthost.tls == "tls",
            start_tls=smarthost.tls == "starttls",
            timeout=timeout,
        )

    def __repr__(self) -> str:
        return f"Relay({self.smarthost.address!r})"

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def connect(self) -> None:
        """Connect, and log in with the smarthost's login if it has one."""
        await self._client.connect()
        try:
            login = self.smarthost.login()
            if login is not None:
                await self._client.login(*login)
        except BaseException:
            self._client.close()
            raise

    async def send(self, message: Message, *, sender: str | None = None, recipients: list[str] | None = None) -> None:
        """Hand ``message`` over: from ``sender`` (``""``: the null sender ``<>``), to
        ``recipients`` (default: the message's own From: and To:)."""
        await self._client.send_message(message, sender=sender, recipients=recipients)

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Quit politely; drop the connection if the smarthost does not answer."""
        if self._client.is_connected:
            try:
                await self._client.quit()
            except (aiosmtplib.SMTPException, OSError):
                self._client.close()


async def send_once(
    smarthost: Smarthost, message: Message, *, sender: str, recipients: list[str], seconds: float
) -> None:
    """Connect, send ``message``, quit: for mail that needs no phase told apart (notices)."""
    async with Relay(smarthost, seconds) as relay:
        await relay.send(message, sender=sender, recipients=recipients)


__all__ = ["Relay", "Smarthost", "send_once"]
