"""IMAP ingress: a mailbox the bridge watches (aioimaplib).

Each new mail is taken exactly as if it had come over SMTP: same parsing,
validation, outbox and dispatch. Exactly once:

1. fetch with ``BODY.PEEK[]`` (never sets ``\\Seen`` by itself);
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
import contextlib
import hashlib
import logging
import random
import re
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import aioimaplib

from bridge.access import Peer, find_client, sender_allowed
from bridge.aio import wait_any
from bridge.config import Config, ImapConfig
from bridge.errors import BridgeError, OutboxError
from bridge.ingress.accept import admit
from bridge.ingress.context import Intake
from bridge.ingress.smtp import fingerprint
from bridge.intake import decide
from bridge.mail import parse_mail
from bridge.model import InboundMail, Problem
from bridge.notify import should_not_answer
from bridge.outbox import Outbox, Rejection
from bridge.routing import route_for

log = logging.getLogger("bridge.imap")
T = TypeVar("T")
_FETCH = re.compile(rb"^\d+ FETCH \(.*?BODY\[\] \{(\d+)\}$")
_UID = re.compile(rb"UID (\d+)")
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
FETCH_BATCH = 25


class ImapFailure(BridgeError):
    """The IMAP server refused a command or the connection failed."""


@dataclass(frozen=True)
class Report:
    """What ``imap-check`` found in one mailbox."""

    label: str
    capabilities: tuple[str, ...]
    folders: tuple[str, ...]
    messages: int
    unseen: int
    uidvalidity: int


def _ssl_context(box: ImapConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=box.ca_file)
    if not box.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Session:
    """One logged-in IMAP connection, every command under a timeout."""

    def __init__(self, box: ImapConfig) -> None:
        self.box = box
        if box.tls == "implicit":
            self.client: aioimaplib.IMAP4 = aioimaplib.IMAP4_SSL(
                box.host, box.real_port(), timeout=box.timeout, ssl_context=_ssl_context(box)
            )
        else:
            self.client = aioimaplib.IMAP4(box.host, box.real_port(), timeout=box.timeout)
        # aioimaplib notices a dropped connection but does not fail the command waiting on it
        self.lost = asyncio.Event()
        self.client.protocol.conn_lost_cb = lambda exc: self.lost.set()

    async def call(self, what: str, awaitable: Awaitable[T]) -> T:
        """``awaitable`` under the timeout, failing at once if the connection drops."""
        work = asyncio.ensure_future(awaitable)
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({work, lost}, timeout=self.box.timeout, return_when=asyncio.FIRST_COMPLETED)
            if work in done:
                return work.result()
            if lost in done:
                raise ImapFailure(f"{what}: the connection was lost")
            raise TimeoutError
        except TimeoutError as exc:
            raise ImapFailure(f"{what}: no answer in {self.box.timeout:.0f} s") from exc
        except (OSError, aioimaplib.Abort, aioimaplib.CommandTimeout, aioimaplib.Error) as exc:
            raise ImapFailure(f"{what}: {type(exc).__name__}") from exc
        finally:
            lost.cancel()
            if not work.done():
                work.cancel()

    async def ok(self, what: str, awaitable: Awaitable[aioimaplib.Response]) -> aioimaplib.Response:
        response = await self.call(what, awaitable)
        if response.result != "OK":
            text = b" ".join(line for line in response.lines if isinstance(line, bytes)).decode("utf-8", "replace")
            raise ImapFailure(f"{what} refused: {response.result} {text[:200]}")
        return response

    async def open(self) -> None:
        # aioimaplib connects in a task of its own and waits for the greeting forever
        # if that task fails (connection refused): wait for the task first
        connecting = getattr(self.client, "_client_task", None)
        if connecting is not None:
            await self.call("connect", asyncio.shield(connecting))
        await self.call("connect", self.client.wait_hello_from_server())
        password = self.box.password.get_secret_value()
        response = await self.call("login", self.client.login(self.box.user, password))
        if response.result != "OK":
            said = b" ".join(line for line in response.lines if isinstance(line, bytes)).decode("utf-8", "replace")
            raise ImapFailure(f"login as {self.box.user} refused: {said[:200]}")

    def has(self, capability: str) -> bool:
        return bool(self.client.has_capability(capability))

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort on a connection we are leaving
            async with asyncio.timeout(5):
                await self.client.logout()
        # aioimaplib leaves closing to the server; close our side in every case
        transport = getattr(getattr(self.client, "protocol", None), "transport", None)
        if transport is not None:
            transport.close()

    async def ensure_folder(self, name: str) -> None:
        response = await self.call(f"create {name}", self.client.create(name))
        if response.result not in ("OK", "NO"):  # NO: it exists already
            raise ImapFailure(f"cannot create folder {name}")

    async def select(self, folder: str) -> int:
        response = await self.ok(f"select {folder}", self.client.select(folder))
        for line in response.lines:
            if isinstance(line, bytes):
                match = _UIDVALIDITY.search(line)
                if match:
                    return int(match.group(1))
        raise ImapFailure(f"select {folder}: the server gave no UIDVALIDITY")

    async def search(self, criterion: str) -> list[int]:
        response = await self.ok("search", self.client.uid_search(criterion, charset=None))
        uids: list[int] = []
        for line in response.lines[:-1]:
            if isinstance(line, bytes):
                uids.extend(int(token) for token in line.split() if token.isdigit())
        return sorted(uids)

    async def fetch(self, uids: list[int]) -> list[tuple[int, bytes]]:
        response = await self.ok("fetch", self.client.uid("fetch", ",".join(map(str, uids)), "(UID BODY.PEEK[])"))
        out: list[tuple[int, bytes]] = []
        lines = response.lines
        for i, line in enumerate(lines):
            if not isinstance(line, bytes):  # literals come as bytearray
                continue
            if not _FETCH.match(line) or i + 1 >= len(lines):
                continue
            match = _UID.search(line)
            if match is None and i + 2 < len(lines) and isinstance(lines[i + 2], bytes):
                match = _UID.search(lines[i + 2])
            if match is not None:
                out.append((int(match.group(1)), bytes(lines[i + 1])))
        return out

    async def move(self, uid: int, folder: str) -> None:
        if self.has("MOVE"):
            await self.ok(f"move to {folder}", self.client.uid("move", str(uid), folder))
            return
        await self.ok(f"copy to {folder}", self.client.uid("copy", str(uid), folder))
        await self.ok("flag deleted", self.client.uid("store", str(uid), "+FLAGS.SILENT", "(\\Deleted)"))
        if self.has("UIDPLUS"):
            await self.ok("expunge", self.client.uid("expunge", str(uid)))
        else:
            await self.ok("expunge", self.client.expunge())

    async def flag_seen(self, uid: int) -> None:
        await self.ok("flag seen", self.client.uid("store", str(uid), "+FLAGS.SILENT", "(\\Seen)"))

    async def idle(self, seconds: float, stop: asyncio.Event) -> None:
        """IDLE until the server reports a change, ``seconds`` pass, or ``stop`` is set."""
        idle = await self.call("idle", self.client.idle_start(timeout=seconds + self.box.timeout))
        try:
            deadline = time.monotonic() + seconds
            while not stop.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                push = asyncio.ensure_future(self.client.wait_server_push(timeout=left))
                stopping = asyncio.ensure_future(stop.wait())
                lost = asyncio.ensure_future(self.lost.wait())
                done, _ = await asyncio.wait({push, stopping, lost}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                lost.cancel()
                if push not in done:
                    push.cancel()
                    if self.lost.is_set():
                        raise ImapFailure("idle: the connection was lost")
                    return
                try:
                    lines = push.result()
                except TimeoutError:
                    return
                except Exception as exc:
                    raise ImapFailure(f"idle: {type(exc).__name__}") from exc
                if lines == aioimaplib.STOP_WAIT_SERVER_PUSH:
                    return
                if any(b"EXISTS" in line for line in lines if isinstance(line, bytes)):
                    return
        finally:
            if self.client.has_pending_idle():
                self.client.idle_done()
            await self.call("idle done", idle)


class MailboxWatcher:
    """Takes every mail from one mailbox, for as long as the bridge runs."""

    def __init__(
        self,
        box: ImapConfig,
        config: Config,
        outbox: Outbox,
        intake: Intake,
        *,
        on_notice: Callable[[], None],
        rng: random.Random | None = None,
    ) -> None:
        self.box = box
        self.config = config
        self.outbox = outbox
        self.intake = intake
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
        seen = await self.outbox.imap_outcome(key)
        if seen is not None:  # committed before a crash; only the move was missing
            log.info("imap %s: uid %d already taken as %s (%s); finishing", self.label, uid, seen[1], seen[0])
            await self._finish(session, uid, rejected=seen[0] == "rejected")
            return
        parsed = parse_mail(raw)
        mail = replace(parsed, rcpt_tos=self._recipients(parsed))
        verdict = decide(mail, self.config)
        via = f"imap:{self.label}"
        if not verdict.ok:
            self.intake.metrics.refused("imap", "data", "field")
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
            self.intake,
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
        rejection_id = await self.outbox.reject(rejection, key)
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


async def check(box: ImapConfig) -> Report:
    """Log in and look, taking nothing (``sms-bridge imap-check``)."""
    session = Session(box)
    try:
        await session.open()
        capabilities = tuple(sorted(str(c) for c in session.client.protocol.capabilities))
        listing = await session.ok("list", session.client.list('""', "*"))
        folders = []
        for line in listing.lines[:-1]:
            if isinstance(line, bytes) and b")" in line:
                name = line.rsplit(b" ", 1)[-1].strip(b'"')
                folders.append(name.decode("utf-8", "replace"))
        status = await session.ok("status", session.client.status(box.folder, "(MESSAGES UNSEEN UIDVALIDITY)"))
        text = b" ".join(line for line in status.lines if isinstance(line, bytes)).decode("ascii", "replace")

        def number(key: str) -> int:
            match = re.search(rf"{key} (\d+)", text)
            return int(match.group(1)) if match else -1

        return Report(
            box.label(), capabilities, tuple(folders), number("MESSAGES"), number("UNSEEN"), number("UIDVALIDITY")
        )
    finally:
        await session.close()
