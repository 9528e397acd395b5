"""The IMAP protocol (aioimaplib), as the watcher uses it: one session with a deadline on every
command, UID search and fetch, move or flag, IDLE; and ``imap-check``."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import aioimaplib

from bridge.config import ImapConfig
from bridge.errors import BridgeError

T = TypeVar("T")


_FETCH = re.compile(rb"^\d+ FETCH \(.*?BODY\[\] \{(\d+)\}$")


_UID = re.compile(rb"UID (\d+)")


_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")


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
