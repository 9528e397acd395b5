"""Failure notices: an RFC 3464 delivery status notification to the sender.

Sent with the null reverse-path (``MAIL FROM:<>``) so that a notice can never
cause another notice, never to ``<>`` itself, never to an address the bridge
serves, and never quoting a password: the notice names the reason in plain
words, the numbers and the SMS text, not the original mail body.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

import aiosmtplib

from bridge.aio import wait_any
from bridge.config import ACK_TIMEOUT_MAX, Config
from bridge.errors import OutboxError
from bridge.metrics import Metrics
from bridge.outbox import MAYBE_SENT, UNANSWERABLE, Notice, Outbox, RejectionRow, Row, State
from bridge.phone import mask
from bridge.routing import route_for

log = logging.getLogger("bridge.notify")
KINDS = {"notice": "sender", "rejection notice": "rejection"}

WHY = {
    State.FAILED: "could not be sent as SMS",
    State.EXPIRED: "could not be sent as SMS in time and was given up",
    State.UNKNOWN: "may or may not have been sent as SMS",
}
UNKNOWN_EXPLAINED = (
    "The provider did not confirm this SMS: the request may have reached it, so the SMS\n"
    "may or may not have been sent. It was not resent automatically, because a second\n"
    "try could deliver it, and charge for it, twice. The operator can check the\n"
    "provider's records and send it again (sms-bridge queue retry {id}) or mark it as\n"
    "not sent.\n"
)


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build_dsn(
    config: Config,
    *,
    to: str,
    subject: str,
    human: str,
    status: str,
    diagnostic: str,
    rcpts: tuple[str, ...],
    message_id: str,
    arrival: float,
    last_attempt: float,
) -> MIMEMultipart:
    """An RFC 3464 delivery status notification (pure: builds a message, sends nothing)."""
    outer = MIMEMultipart("report", report_type="delivery-status")
    outer["From"] = f"SMS bridge <{config.notify.sender}>"
    outer["To"] = to
    outer["Subject"] = subject[:200]
    outer["Date"] = formatdate(localtime=False)
    outer["Message-ID"] = make_msgid(domain=config.notify.sender.rpartition("@")[2] or None)
    outer["Auto-Submitted"] = "auto-replied"
    if message_id:
        outer["In-Reply-To"] = message_id
        outer["References"] = message_id
    outer.attach(MIMEText(human, "plain", "utf-8"))
    report = MIMEBase("message", "delivery-status")
    blocks = [_fields([("Reporting-MTA", f"dns; {config.smtp.hostname}"), ("Arrival-Date", formatdate(arrival))])]
    for rcpt in rcpts or ("unknown",):
        blocks.append(
            _fields(
                [
                    ("Final-Recipient", f"rfc822; {rcpt}"),
                    ("Action", "failed"),
                    ("Status", status),
                    ("Diagnostic-Code", f"x-sms; {diagnostic}"[:900]),
                    ("Last-Attempt-Date", formatdate(last_attempt)),
                ]
            )
        )
    report.set_payload(blocks)  # type: ignore[arg-type]  # message/delivery-status holds header blocks
    outer.attach(report)
    return outer


def build_notice(row: Row, config: Config) -> MIMEMultipart:
    """The notice for an SMS that failed or expired."""
    origin, request, delivery = row.origin, row.request, row.delivery
    reason = delivery.last_error or "the provider refused it"
    code = f" ({delivery.last_code})" if delivery.last_code else ""
    warned = "".join(f"  Warning:    {w}\n" for w in origin.warnings)
    if delivery.state == State.UNKNOWN or delivery.last_error.endswith(MAYBE_SENT):
        after = UNKNOWN_EXPLAINED.format(id=row.id)
    else:
        after = "Nothing was charged for this SMS. Correct the problem and send the mail again.\n"
    human = (
        f"Your message {WHY.get(delivery.state, 'could not be sent as SMS')}.\n\n"
        f"  Reason:     {reason}{code}\n"
        f"  Numbers:    {', '.join(request.numbers)}\n"
        f"  Sender ID:  {request.sender}\n"
        f"  Account:    {request.account}{' (after ' + ', '.join(delivery.tried) + ')' if delivery.tried else ''}\n"
        f"  Text:       {request.text}\n"
        f"  Subject:    {origin.subject or '(none)'}\n"
        f"  Message-ID: {origin.message_id or '(none)'}\n"
        f"  Bridge id:  {row.id} (attempts: {delivery.attempts})\n"
        f"{warned}\n"
        f"{after}"
        "This notice was written by sms-bridge; replies to it are not read.\n"
    )
    return build_dsn(
        config,
        to=origin.mail_from,
        subject=f"SMS {'may not have been' if delivery.state == State.UNKNOWN else 'not'} sent: {reason}",
        human=human,
        status="5.0.0",
        diagnostic=f"{delivery.last_code + ' ' if delivery.last_code else ''}{reason}",
        rcpts=origin.rcpts,
        message_id=origin.message_id,
        arrival=row.created,
        last_attempt=row.updated,
    )


def build_rejection_notice(rejection: RejectionRow, config: Config) -> MIMEMultipart:
    """The notice for a mail taken from a mailbox and refused: every problem, by field."""
    problems = "\n".join(f"  {field}: {message}" for field, message in rejection.problems)
    human = (
        "Your message was not sent as SMS, because:\n\n"
        f"{problems}\n\n"
        f"  Subject:    {rejection.origin.subject or '(none)'}\n"
        f"  Message-ID: {rejection.origin.message_id or '(none)'}\n"
        f"  Bridge id:  {rejection.id}\n\n"
        "Nothing was sent or charged. Correct the problems and send the mail again.\n"
        "This notice was written by sms-bridge; replies to it are not read.\n"
    )
    first = rejection.problems[0] if rejection.problems else ("mail", "refused")
    return build_dsn(
        config,
        to=rejection.origin.mail_from,
        subject=f"SMS not sent: {first[0]}: {first[1]}",
        human=human,
        status="5.6.0",
        diagnostic="; ".join(f"{f}: {m}" for f, m in rejection.problems),
        rcpts=rejection.origin.rcpts,
        message_id=rejection.origin.message_id,
        arrival=rejection.created,
        last_attempt=rejection.created,
    )


def build_operator_mail(rows: list[Row], rejections: list[RejectionRow], config: Config) -> EmailMessage:
    """One mail to the operator listing every message that needs a person (pure)."""
    unknown = [r for r in rows if r.delivery.state == State.UNKNOWN or r.delivery.last_error.endswith(MAYBE_SENT)]
    others = [r for r in rows if r not in unknown]
    lines: list[str] = []
    if unknown:
        lines += [
            f"{len(unknown)} SMS may or may not have been sent. The provider did not confirm them, and",
            "they were not resent, because a second try could deliver and charge twice. Check the",
            "provider's records, then `sms-bridge queue retry ID` or mark them as not sent",
            "(the status page, or `sms-bridge queue not-sent ID`).",
            "",
            *(_operator_line(r) for r in unknown),
            "",
        ]
    if others:
        lines += [
            f"{len(others)} SMS failed, and their mail had no address to tell (a webhook, <>, the bridge):",
            "",
            *(_operator_line(r) for r in others),
            "",
        ]
    if rejections:
        lines += [f"{len(rejections)} mail(s) were refused and their sender could not be told:", ""]
        for rejection in rejections:
            problems = "; ".join(f"{f}: {m}" for f, m in rejection.problems)
            lines.append(f"  {rejection.id}  from {rejection.origin.mail_from or '<>'}  {problems}")
        lines.append("")
    lines.append("This mail was written by sms-bridge; `sms-bridge queue show ID` has each message's history.")
    message = EmailMessage()
    message["From"] = f"SMS bridge <{config.notify.sender}>"
    message["To"] = config.notify.operator or ""
    total = len(rows) + len(rejections)
    maybe = f", {len(unknown)} may or may not have been sent" if unknown else ""
    message["Subject"] = f"sms-bridge: {total} message(s) need attention{maybe}"
    message["Date"] = formatdate(localtime=False)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + "\n")
    return message


def _operator_line(row: Row) -> str:
    numbers = ", ".join(mask(n) for n in row.request.numbers[:3]) + (" ..." if len(row.request.numbers) > 3 else "")
    code = f"{row.delivery.last_code} " if row.delivery.last_code else ""
    return (
        f"  {row.id}  {row.delivery.state}  account {row.request.account}  {numbers}  "
        f"from {row.origin.mail_from or row.origin.via}: {code}{row.delivery.last_error}"
    )


def should_not_answer(mail_from: str, auto_submitted: str, config: Config, own: tuple[str, ...] = ()) -> str | None:
    """Why no notice may go to ``mail_from`` (loops, null senders), or None."""
    sender = mail_from.strip().strip("<>").lower()
    if not sender or "@" not in sender:
        return "the mail had no sender address (<>)"
    if auto_submitted and auto_submitted.strip().lower() != "no":
        return "the mail was sent automatically (Auto-Submitted)"
    local = sender.partition("@")[0]
    if local in ("mailer-daemon", "postmaster"):
        return "the mail came from a mail system"
    if route_for(sender, config) is not None or sender == config.notify.sender.lower() or sender in own:
        return "the sender is an address of this bridge"
    return None


class Notifier:
    """Mails pending notices; retries when the smarthost is away."""

    def __init__(self, config: Config, outbox: Outbox, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.outbox = outbox
        self._wake = asyncio.Event()
        self._retry_at: dict[str, float] = {}
        self._background: list[asyncio.Future[None]] = []
        self._operator_next = 0.0
        self._operator_first: float | None = None
        self._next_wake: float | None = None
        self.sent = 0
        self.operator_mails = 0

    def wake(self) -> None:
        self._wake.set()

    def _wake_at(self, when: float) -> None:
        """Look again at ``when`` (monotonic) rather than after the usual 10 s."""
        self._next_wake = when if self._next_wake is None else min(self._next_wake, when)

    def _skip_reason(self, mail_from: str) -> str | None:
        reason = should_not_answer(mail_from, "", self.config)
        if reason is not None:
            return f"{UNANSWERABLE}: {reason}"
        if self.config.notify.smarthost is None:
            return "notify.smarthost is not configured"
        return None

    async def _send(self, message: Message, to: str) -> None:
        smarthost = self.config.notify.relay()
        if smarthost is None:
            raise aiosmtplib.SMTPException("notify.smarthost is not configured")
        login = smarthost.login()
        await aiosmtplib.send(
            message,
            sender="",
            recipients=[to],
            username=login[0] if login else None,
            password=login[1] if login else None,
            **smarthost.client_settings(30.0),
        )

    def low_balance(self, account: str, balance: float, threshold: float) -> None:
        """Mail the operator (``notify.operator``) that an account runs low; best effort."""
        operator = self.config.notify.operator
        if not operator or self.config.notify.smarthost is None:
            return
        message = EmailMessage()
        message["From"] = f"SMS bridge <{self.config.notify.sender}>"
        message["To"] = operator
        message["Subject"] = f"SMS account {account}: {balance:g} points left"
        message["Date"] = formatdate(localtime=False)
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(
            f"The balance of SMS account {account} fell to {balance:g} points "
            f"(warning threshold {threshold:g}).\nTop it up before messages start failing.\n"
        )
        self._background.append(asyncio.ensure_future(self._send_operator(message, operator)))

    async def _send_operator(self, message: EmailMessage, operator: str) -> None:
        try:
            await self._send(message, operator)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("balance warning to %s not sent (%s)", operator, type(exc).__name__)
        else:
            log.info("balance warning sent to %s", operator)

    async def _mark(self, row_id: str, notice: Notice, detail: str) -> None:
        await self.outbox.set_notice([row_id], notice, detail)

    async def _deliver(
        self,
        kind: str,
        ident: str,
        mail_from: str,
        build: Callable[[], Message],
        mark: Callable[[str, Notice, str], Awaitable[None]],
        now: float,
    ) -> bool:
        """One pending notice: skipped (and why), sent, or left for a retry in 60 s."""
        if self._retry_at.get(ident, 0.0) > now:
            return False
        skip = self._skip_reason(mail_from)
        if skip is not None:
            self.metrics.notices.labels(KINDS.get(kind, kind), "skipped").inc()
            log.warning("%s id=%s not mailed (%s)", kind, ident, skip)
            await mark(ident, Notice.SKIPPED, skip)
            return False
        try:
            await self._send(build(), mail_from)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._retry_at[ident] = now + 60
            self.metrics.notices.labels(KINDS.get(kind, kind), "failed").inc()
            log.warning(
                "%s id=%s to %s not sent yet (%s); retrying in 60 s", kind, ident, mail_from, type(exc).__name__
            )
            return False
        await mark(ident, Notice.SENT, f"mailed to {mail_from}")
        self.metrics.notices.labels(KINDS.get(kind, kind), "sent").inc()
        self._retry_at.pop(ident, None)
        log.info("%s id=%s sent to %s", kind, ident, mail_from)
        return True

    async def run_once(self) -> int:
        """Send what is pending now; the number sent."""
        now = time.monotonic()
        sent = 0
        # a refusal held for an SMTP session longer than any session waits was never answered by it
        held_before = self.outbox.clock() - ACK_TIMEOUT_MAX - 60
        for row in await self.outbox.pending_notices(held_before=held_before):
            build = functools.partial(build_notice, row, self.config)
            sent += await self._deliver("notice", row.id, row.origin.mail_from, build, self._mark, now)
        for rejection in await self.outbox.pending_rejections():
            build = functools.partial(build_rejection_notice, rejection, self.config)
            sent += await self._deliver(
                "rejection notice", rejection.id, rejection.origin.mail_from, build, self._mark_rejection, now
            )
        self.sent += sent
        sent += await self._operator_batch(now)
        return sent

    async def _operator_batch(self, now: float) -> int:
        """One mail to ``notify.operator`` listing everything pending for it, at most
        one every ``notify.operator_interval`` seconds; 1 if it was sent."""
        rows, rejections = await self.outbox.pending_operator()
        if not rows and not rejections:
            return 0
        settings = self.config.notify
        ids, rejection_ids = [r.id for r in rows], [r.id for r in rejections]
        if not settings.operator or settings.smarthost is None:
            missing = "notify.smarthost" if settings.smarthost is None else "notify.operator"
            for row in rows:
                log.warning("operator not told of %s id=%s (%s is not configured)", row.delivery.state, row.id, missing)
            for rejection in rejections:
                log.warning("operator not told of refused id=%s (%s is not configured)", rejection.id, missing)
            await self.outbox.set_operator(ids, rejection_ids, Notice.SKIPPED)
            self.metrics.notices.labels("operator", "skipped").inc()
            return 0
        if self._operator_first is None:
            self._operator_first = now
        if now < max(self._operator_next, self._operator_first + settings.operator_gather):
            self._wake_at(max(self._operator_next, self._operator_first + settings.operator_gather))
            return 0
        try:
            await self._send(build_operator_mail(rows, rejections, self.config), settings.operator)
        except (aiosmtplib.SMTPException, OSError) as exc:
            self._operator_next = now + 60
            self.metrics.notices.labels("operator", "failed").inc()
            log.warning(
                "operator mail to %s not sent yet (%s); retrying in 60 s", settings.operator, type(exc).__name__
            )
            return 0
        await self.outbox.set_operator(ids, rejection_ids, Notice.SENT)
        self._operator_next = now + settings.operator_interval
        self._operator_first = None
        self.operator_mails += 1
        self.metrics.notices.labels("operator", "sent").inc()
        log.info(
            "operator mail sent to %s: %d message(s), %d refusal(s)", settings.operator, len(rows), len(rejections)
        )
        return 1

    async def _mark_rejection(self, rejection_id: str, notice: Notice, detail: str) -> None:
        await self.outbox.set_rejection_notice([rejection_id], notice)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            self._next_wake = None
            try:
                await self.run_once()
            except OutboxError as exc:
                log.warning("notices wait: %s", exc)
                self._wake_at(time.monotonic() + 5.0)
            pause = 10.0 if self._next_wake is None else min(10.0, max(self._next_wake - time.monotonic(), 0.05))
            await wait_any(self._wake, stop, seconds=pause)
            self._background = [f for f in self._background if not f.done()]
        if self._background:
            await asyncio.wait(self._background, timeout=10)
