"""KwtSMS's mail path: a validated, rewritten message to ``sms@kwtsms.com``.

The body is KwtSMS's layout, one ``key:value`` per line, text/plain UTF-8;
no value can carry a line break, so no value can add a key. The mail goes
through the account's smarthost with STARTTLS (or implicit TLS) and AUTH.
KwtSMS never answers mail, so acceptance by the smarthost is the most this
path can know: the result is recorded as ``confirmed=False``.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import aiosmtplib

from bridge.config import KwtsmsSmtpAccount
from bridge.core.model import SmsRequest
from bridge.errors import AmbiguousDelivery, DeliveryError, PermanentDelivery, TransientDelivery
from bridge.providers.base import MAX_NUMBERS_PER_CALL, Balance, OnStart, RateLimiter, Sent, credentials
from bridge.relay import Relay

_BREAKS = re.compile(r"[\r\n\u2028\u2029\x0b\x0c\x85]+")


def one_line(value: str) -> str:
    """``value`` with every line break turned into a space."""
    return _BREAKS.sub(" ", value).strip()


def kwtsms_body(username: str, password: str, request: SmsRequest) -> str:
    """The body KwtSMS's mail path reads: spaces in sender and text as ``+``."""
    lang = 1 if request.encoding == "gsm7" else 4 if request.lang == 4 else 3  # the body is UTF-8
    lines = [
        f"username:{one_line(username)}",
        f"password:{one_line(password)}",
        f"sender:{one_line(request.sender).replace(' ', '+')}",
        f"mobile:{','.join(request.numbers)}",
        f"lang:{lang}",
        f"text:{one_line(request.text).replace(' ', '+')}",
    ]
    return "\n".join(lines) + "\n"


def _reply_error(exc: aiosmtplib.SMTPResponseException, what: str) -> DeliveryError:
    words = f"the smarthost refused {what} ({exc.code} {exc.message.strip()[:200]})"
    if 400 <= exc.code < 500:
        return TransientDelivery(words, code=str(exc.code))
    return PermanentDelivery(words, code=str(exc.code))


class KwtSmsSmtp:
    """One KwtSMS account reached by mail through a smarthost."""

    def __init__(self, name: str, account: KwtsmsSmtpAccount, limiter: RateLimiter) -> None:
        self.name = name
        self.account = account
        self.limiter = limiter

    def __repr__(self) -> str:
        return f"KwtSmsSmtp(account={self.name!r}, smarthost={self.account.smarthost!r}, to={self.account.relay_to!r})"

    def build_message(self, request: SmsRequest) -> EmailMessage:
        username, password = credentials(self.account, request)
        sender = self.account.mail_from or ""
        msg = EmailMessage()
        msg["From"] = sender
        msg["To"] = self.account.relay_to
        msg["Subject"] = "SMS"
        msg["Date"] = formatdate(localtime=False)
        msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or "sms-bridge.invalid")
        msg.set_content(kwtsms_body(username, password, request), charset="utf-8", cte="8bit")
        return msg

    async def send(self, request: SmsRequest, *, test: bool = False, on_start: OnStart | None = None) -> Sent:
        if len(request.numbers) > MAX_NUMBERS_PER_CALL:
            raise PermanentDelivery(f"{len(request.numbers)} numbers in one mail; split them first")
        if test:
            raise PermanentDelivery("KwtSMS's mail path has no test mode; send without --test")
        message = self.build_message(request)
        relay = Relay(self.account.relay(), self.account.timeout)
        await self.limiter.wait()
        try:
            await relay.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise PermanentDelivery(f"the smarthost refused the login ({exc.code})", code=str(exc.code)) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_error(exc, "the connection") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise TransientDelivery(f"could not reach the smarthost ({type(exc).__name__})", failover=True) from exc
        try:
            if on_start is not None:
                await on_start()
            await relay.send(message)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            if first is not None:
                raise _reply_error(first, "the recipient") from exc
            raise PermanentDelivery("the smarthost refused the recipient") from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise _reply_error(exc, "the message") from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise AmbiguousDelivery(
                f"the connection to the smarthost broke while sending ({type(exc).__name__}); it may have been taken"
            ) from exc
        finally:
            await relay.close()
        return Sent(
            message_id=str(message["Message-ID"]),
            numbers=len(request.numbers),
            points=request.points,
            raw="accepted by the smarthost",
            confirmed=False,
        )

    async def balance(self) -> Balance:
        raise PermanentDelivery("KwtSMS's mail path cannot report a balance; use a kwtsms-http account")

    async def sender_ids(self) -> list[str]:
        raise PermanentDelivery("KwtSMS's mail path cannot list sender IDs; use a kwtsms-http account")
