"""The notifier: mails pending notices through ``notify.smarthost``, retrying while it is away.

Sent with the null reverse-path (``MAIL FROM:<>``) so that a notice can never cause another
notice, never to ``<>`` itself, never to an address the bridge serves."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from email.message import EmailMessage, Message

import aiosmtplib

from bridge.config import ACK_TIMEOUT_MAX, Config
from bridge.core.loops import should_not_answer
from bridge.errors import OutboxError
from bridge.notify.notices import KINDS, build_low_balance, build_notice, build_operator_mail, build_rejection_notice
from bridge.outbox import UNANSWERABLE, Notice, Outbox, notices
from bridge.relay import send_once
from bridge.runtime.aio import wait_any
from bridge.runtime.metrics import Metrics

log = logging.getLogger("bridge.notify")


class Notifier:
    """Mails pending notices; retries when the smarthost is away."""

    def __init__(self, config: Config, outbox: Outbox, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.outbox = outbox
        self._wake = asyncio.Event()
        self._retry_at: dict[str, float] = {}
        #: balance warnings for the operator, mailed by :meth:`run_warnings`
        self._warnings: asyncio.Queue[tuple[EmailMessage, str]] = asyncio.Queue()
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
        await send_once(smarthost, message, sender="", recipients=[to], seconds=30.0)

    def low_balance(self, account: str, balance: float, threshold: float) -> None:
        """Mail the operator (``notify.operator``) that an account runs low; best effort."""
        operator = self.config.notify.operator
        if not operator or self.config.notify.smarthost is None:
            return
        self._warnings.put_nowait((build_low_balance(account, balance, threshold, self.config), operator))

    async def run_warnings(self, stop: asyncio.Event) -> None:
        """Mail the balance warnings as they come, until ``stop`` (then the ones still waiting,
        for up to 10 s). Every bridge runs this: the balance it saw is its own news."""
        while not stop.is_set() or not self._warnings.empty():
            if self._warnings.empty():
                taking = asyncio.ensure_future(self._warnings.get())
                stopping = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({taking, stopping}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                if taking not in done:
                    taking.cancel()
                    continue
                message, operator = taking.result()
            else:
                message, operator = self._warnings.get_nowait()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10 if stop.is_set() else None):
                    await self._send_operator(message, operator)

    async def _send_operator(self, message: EmailMessage, operator: str) -> None:
        try:
            await self._send(message, operator)
        except (aiosmtplib.SMTPException, OSError) as exc:
            log.warning("balance warning to %s not sent (%s)", operator, type(exc).__name__)
        else:
            log.info("balance warning sent to %s", operator)

    async def _mark(self, row_id: str, notice: Notice, detail: str) -> None:
        await self.outbox.run(notices.set_notice, [row_id], notice, detail)

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
        for row in await self.outbox.run(notices.pending_notices, held_before=held_before):
            build = functools.partial(build_notice, row, self.config)
            sent += await self._deliver("notice", row.id, row.origin.mail_from, build, self._mark, now)
        for rejection in await self.outbox.run(notices.pending_rejections):
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
        rows, rejections = await self.outbox.run(notices.pending_operator)
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
            await self.outbox.run(notices.set_operator, ids, rejection_ids, Notice.SKIPPED)
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
        await self.outbox.run(notices.set_operator, ids, rejection_ids, Notice.SENT)
        self._operator_next = now + settings.operator_interval
        self._operator_first = None
        self.operator_mails += 1
        self.metrics.notices.labels("operator", "sent").inc()
        log.info(
            "operator mail sent to %s: %d message(s), %d refusal(s)", settings.operator, len(rows), len(rejections)
        )
        return 1

    async def _mark_rejection(self, rejection_id: str, notice: Notice, detail: str) -> None:
        await self.outbox.run(notices.set_rejection_notice, [rejection_id], notice)

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
