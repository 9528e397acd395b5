r"""IMAP ingress: a mailbox the bridge watches (aioimaplib).

Each new mail is taken exactly as if it had come over SMTP: same parsing,
validation, outbox and dispatch. Exactly once:

1. fetch with ``BODY.PEEK[]`` (never sets ``\Seen`` by itself);
2. commit the message and its identity (mailbox, UIDVALIDITY, UID) to the
   outbox in one transaction, or, for a refused mail, the refusal and its
   notice;
3. only then move it to the processed (or rejected) folder, or flag it.

A crash between 2 and 3 finds the identity at the next start and just moves
the mail. After a UIDVALIDITY change every mail looks new; the Message-ID
(or, without one, the message's bytes) still identifies it.

IDLE is used where offered and re-issued every ``idle_interval`` (≤ 10 min);
otherwise the folder is polled. Every IMAP command runs under ``timeout``
(aioimaplib can wait forever on a dead connection); a broken connection is
retried with jittered exponential backoff up to ``max_backoff``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import replace

from bridge.config import Config, ImapConfig
from bridge.core.access import Peer, find_client, sender_allowed
from bridge.core.intake import decide
from bridge.core.loops import should_not_answer
from bridge.core.mail import parse_mail
from bridge.core.model import InboundMail, Problem
from bridge.core.routing import route_for
from bridge.errors import OutboxError
from bridge.ingress.accept import admit, fingerprint
from bridge.ingress.imap.session import ImapFailure, Session
from bridge.outbox import Outbox, Rejection, intake
from bridge.runtime import Runtime
from bridge.runtime.aio import wait_any

log = logging.getLogger("bridge.imap")


FETCH_BATCH = 25


class MailboxWatcher:
    """Takes every mail from one mailbox, for as long as the bridge runs."""

    def __init__(
        self,
        box: ImapConfig,
        config: Config,
        outbox: Outbox,
        runtime: Runtime,
        *,
        on_notice: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.box = box
        self.config = config
        self.outbox = outbox
        self.runtime = runtime
        self.on_notice = on_notice
        self.rng = rng or random.Random()  # noqa: S311  (jitter, not secrets)
        self.label = box.label()
        self.taken = 0
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        delay = 1.0
        down_since: float | None = None
        while not stop.is_set():
            session = Session(self.box)
            try:
                await session.open()
                if down_since is not None:
                    log.warning("imap %s: connected again after %.0f s", self.label, time.monotonic() - down_since)
                else:
                    log.info("imap %s: connected to %s:%d", self.label, self.box.host, self.box.real_port())
                down_since = None
                delay = 1.0
                await self._watch(session, stop)
            except (ImapFailure, OutboxError) as exc:  # the mailbox or the outbox is away: later
                self.connected.clear()
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning("imap %s: %s; reconnecting", self.label, exc)
                else:
                    log.info("imap %s: still unreachable (%s)", self.label, exc)
                wait = min(delay, self.box.max_backoff) * self.rng.uniform(0.5, 1.0)
                delay = min(delay * 2, self.box.max_backoff)
                await wait_any(stop, seconds=wait)
            finally:
                await session.close()
        self.connected.clear()

    async def _watch(self, session: Session, stop: asyncio.Event) -> None:
        box = self.box
        if box.after == "move":
            await session.ensure_folder(box.processed_folder)
        await session.ensure_folder(box.rejected_folder)
        uidvalidity = await session.select(box.folder)
        self.connected.set()
        use_idle = box.idle and session.has("IDLE")
        while not stop.is_set():
            await self._take_all(session, uidvalidity)
            if stop.is_set():
                return
            if use_idle:
                await session.idle(box.idle_interval, stop)
            else:
                await wait_any(stop, seconds=box.poll_interval)
            current = await session.select(box.folder)
            if current != uidvalidity:
                log.warning(
                    "imap %s: UIDVALIDITY changed (%d -> %d); resynchronising", self.label, uidvalidity, current
                )
                uidvalidity = current

    async def _take_all(self, session: Session, uidvalidity: int) -> None:
        uids = await session.search("ALL" if self.box.after == "move" else "UNSEEN")
        for start in range(0, len(uids), FETCH_BATCH):
            batch = uids[start : start + FETCH_BATCH]
            for uid, raw in await session.fetch(batch):
                await self._take(session, uidvalidity, uid, raw)

    def _recipients(self, mail: InboundMail) -> tuple[str, ...]:
        if self.box.route is None:
            return mail.rcpt_tos
        route = self.config.routes[self.box.route]
        if route.format == "kwtsms":
            return (route.recipients[0],) if route.recipients else mail.rcpt_tos
        return tuple(r for r in mail.rcpt_tos if (found := route_for(r, self.config)) and found[0] == self.box.route)

    async def _take(self, session: Session, uidvalidity: int, uid: int, raw: bytes) -> None:
        key = (self.label, uidvalidity, uid)
        seen = await self.outbox.run(intake.imap_outcome, key)
        if seen is not None:  # committed before a crash; only the move was missing
            log.info("imap %s: uid %d already taken as %s (%s); finishing", self.label, uid, seen[1], seen[0])
            await self._finish(session, uid, rejected=seen[0] == "rejected")
            return
        parsed = parse_mail(raw)
        mail = replace(parsed, rcpt_tos=self._recipients(parsed))
        verdict = decide(mail, self.config)
        via = f"imap:{self.label}"
        if not verdict.ok:
            self.runtime.metrics.refused("imap", "data", "field")
            await self._reject(session, key, uid, raw, mail, list(verdict.problems))
            return
        found = find_client(self.config, Peer(mailbox=self.label))
        if found is None:
            await self._reject(
                session, key, uid, raw, mail, [Problem("sender", "no client may send from this mailbox")]
            )
            return
        name, client = found
        if not sender_allowed(client, mail.mail_from):
            problem = Problem("sender", f"{mail.mail_from or '<>'} may not send SMS through this mailbox")
            await self._reject(session, key, uid, raw, mail, [problem])
            return
        admission = await admit(
            self.config,
            self.outbox,
            self.runtime,
            client_name=name,
            mail=mail,
            verdict=verdict,
            via=via,
            fingerprint=fingerprint(mail.message_id, mail.mail_from, raw) or _content_fingerprint(raw),
            key=key,
        )
        if admission.kind == "refused":
            await self._reject(session, key, uid, raw, mail, list(admission.problems))
        elif admission.kind == "over":
            await self._reject(session, key, uid, raw, mail, [Problem("limit", admission.reason)])
        elif admission.kind == "later":  # left in the folder: taken at a later pass
            log.warning("imap %s: uid %d left in place: %s", self.label, uid, admission.reason)
        else:
            if admission.kind == "queued":
                self.taken += 1
            await self._finish(session, uid, rejected=False)

    async def _reject(
        self,
        session: Session,
        key: tuple[str, int, int],
        uid: int,
        raw: bytes,
        mail: InboundMail,
        problems: list[Problem],
    ) -> None:
        """Record the refusal and its notice, then move the mail to the rejected folder."""
        auto = _header_value(raw, b"auto-submitted")
        own = (self.box.address.lower(),) if self.box.address else ()
        skip = should_not_answer(mail.mail_from, auto, self.config, own)
        via = f"imap:{self.label}"
        rejection = Rejection(
            via=via,
            mail_from=mail.mail_from,
            rcpts=mail.rcpt_tos,
            message_id=mail.message_id,
            subject=mail.subject,
            problems=tuple((p.field, p.message) for p in problems),
            notify=skip is None,
            warnings=tuple(mail.notes),
        )
        rejection_id = await self.outbox.run(intake.reject, rejection, key)
        log.info(
            "rejected id=%s via=%s uid=%d from=%s: %s%s",
            rejection_id,
            via,
            uid,
            mail.mail_from,
            "; ".join(map(str, problems)),
            f" (no notice: {skip})" if skip else "",
        )
        if skip is None:
            self.on_notice()
        await self._finish(session, uid, rejected=True)

    async def _finish(self, session: Session, uid: int, *, rejected: bool) -> None:
        if rejected:
            await session.move(uid, self.box.rejected_folder)
        elif self.box.after == "move":
            await session.move(uid, self.box.processed_folder)
        else:
            await session.flag_seen(uid)


def _content_fingerprint(raw: bytes) -> str:
    """A mail without Message-ID is identified by its bytes (a stored message does not change)."""
    return "raw:" + hashlib.sha256(raw).hexdigest()


def _header_value(raw: bytes, name: bytes) -> str:
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    for line in head.splitlines():
        if line.lower().startswith(name + b":"):
            return line.split(b":", 1)[1].strip().decode("ascii", "replace")
    return ""
