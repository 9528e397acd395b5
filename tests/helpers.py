"""Test helpers: accounts, requests and a simulator on a free loopback port."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml

from bridge import outbox
from bridge.config import AccountConfig, Config, account_config, load_text
from bridge.core.model import SmsRequest
from bridge.outbox import Row
from bridge.simulator import SimAccount, Simulator
from tests.ports import free_port as free_port  # re-exported: the tests import it from here

SIM_PASSWORD = "sim-canary-5150"

T = TypeVar("T")


def sim_accounts(balance: float = 1000.0) -> dict[str, list[SimAccount]]:
    return {
        "kwtsms": [SimAccount("corp", SIM_PASSWORD, balance=balance, senders=["KWT-SMS", "MY-COMPANY"])],
        "opentech": [SimAccount("corp", SIM_PASSWORD, balance=balance, senders=["OpenTech"], uid="77")],
    }


@asynccontextmanager
async def running_simulator(**kwargs: Any) -> AsyncIterator[tuple[Simulator, str]]:
    kwargs.setdefault("out", None)
    kwargs.setdefault("repeat_window", 0)
    accounts = kwargs.pop("accounts", None) or sim_accounts()
    simulator = Simulator(accounts, **kwargs)
    runner, port = await simulator.start("127.0.0.1", 0)
    try:
        yield simulator, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def account(provider: str, url: str, **overrides: Any) -> AccountConfig:
    base: dict[str, Any] = {
        "provider": provider,
        "url": url,
        "username": "corp",
        "password": SIM_PASSWORD,
        "sender": "KWT-SMS",
        "rate": 50,
        "timeout": 5,
    }
    if provider == "kwtsms-http":
        base["url"] = url + "/API/"
    if provider == "opentech-http":
        base |= {"url": url + "/ap/static/api/", "uid": "77", "sender": "OpenTech"}
    if provider == "kwtsms-smtp":
        del base["url"]  # a relay account has a smarthost, not a URL
    return account_config(base | overrides)


def sms(text: str = "hello", numbers: tuple[str, ...] = ("96597119440",), **overrides: Any) -> SmsRequest:
    from bridge.core.encoding import measure

    m = measure(text)
    values: dict[str, Any] = {
        "route": "r",
        "account": "a",
        "provider": "kwtsms-http",
        "sender": "KWT-SMS",
        "numbers": numbers,
        "text": text,
        "lang": 1 if m.encoding == "gsm7" else 3,
        "encoding": m.encoding,
        "pages": m.pages,
        "points": m.pages * len(numbers),
    }
    return SmsRequest(**(values | overrides))


# -- the daemon in tests ----------------------------------------------------------


class Sink:
    """An aiosmtpd handler standing in for an upstream mail relay."""

    def __init__(self, reply: str = "250 OK") -> None:
        self.reply = reply
        self.messages: list[Any] = []
        self.arrived = asyncio.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.reply.startswith("250"):
            self.messages.append(envelope)
            self.arrived.set()
        return self.reply


@asynccontextmanager
async def running_sink() -> AsyncIterator[tuple[Sink, int]]:
    from aiosmtpd.smtp import SMTP

    handler = Sink()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(handler, hostname="sink.test"), "127.0.0.1", 0)
    try:
        yield handler, server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


#: the PostgreSQL outbox the configs made here use (set by the ``backend`` fixture), else SQLite
QUEUE_URL: str | None = None


def queue_section(tmp_path: Path, **more: Any) -> dict[str, Any]:
    """The ``queue`` section for the backend under test."""
    section: dict[str, Any] = {"path": str(tmp_path / "outbox.sqlite3")}
    if QUEUE_URL is not None:
        section |= {"url": QUEUE_URL, "lease": 5}
    return section | more


def config_data(
    tmp_path: Path,
    sim_url: str,
    *,
    sink_port: int | None = None,
    account: dict[str, Any] | None = None,
    body_route: dict[str, Any] | None = None,
    smtp: dict[str, Any] | None = None,
    dispatch: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "smtp": {"listen": ["127.0.0.1:0"], "hostname": "bridge.test"} | (smtp or {}),
        "queue": queue_section(tmp_path),
        "accounts": {
            "kwt": {
                "provider": "kwtsms-http",
                "url": sim_url + "/API/",
                "username": "corp",
                "password": SIM_PASSWORD,
                "sender": "KWT-SMS",
                "rate": 20,
                "timeout": 5,
                "repeat_interval": 0,  # the test simulator has no repeat window unless a test asks for one
            }
            | (account or {})
        },
        "routes": {
            "body": {"format": "kwtsms", "account": "kwt", "recipients": ["sms@bridge.test"]} | (body_route or {}),
            "alerts": {"format": "address", "account": "kwt", "domain": "alerts.bridge.test"},
        },
        "aliases": {"oncall": ["96597119440", "96566074414"]},
        "dispatch": {"retry_schedule": [0.2], "jitter": 0, "grace": 5} | (dispatch or {}),
    }
    if sink_port is not None:
        data["notify"] = {"smarthost": f"127.0.0.1:{sink_port}", "tls": "none", "sender": "mailer-daemon@bridge.test"}
    return data | (extra or {})


def make_config(tmp_path: Path, sim_url: str, **kwargs: Any) -> Config:
    return load_text(yaml.safe_dump(config_data(tmp_path, sim_url, **kwargs)), env={})


@dataclass
class RunningBridge:
    config: Config
    port: int

    def rows(self, ident: str | None = None) -> list[Row]:
        with outbox.transaction(self.config.queue) as conn:
            return outbox.views.rows_of(conn, ident) if ident else outbox.views.listing(conn, None, 10_000)

    def history(self, ident: str) -> list[outbox.Event]:
        with outbox.transaction(self.config.queue) as conn:
            return list(outbox.views.history(conn, ident))


@asynccontextmanager
async def running_bridge(config: Config) -> AsyncIterator[RunningBridge]:
    from bridge.app.serve import serve

    stop = asyncio.Event()
    bound: asyncio.Future[list[tuple[str, int]]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(config, stop=stop, ready=bound.set_result, handle_signals=False))
    done, _ = await asyncio.wait([task, bound], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        task.result()
    assert bound.done(), "the bridge did not start in 30 s"
    try:
        yield RunningBridge(config, bound.result()[0][1])
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


def mail(
    body: str,
    *,
    to: str = "sms@bridge.test",
    mail_from: str = "app@corp.example.com",
    subject: str = "x",
    message_id: str | None = None,
) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = mail_from
    msg["To"] = to
    msg["Subject"] = subject
    if message_id:
        msg["Message-ID"] = message_id
    msg.set_content(body)
    return msg


async def submit(port: int, msg: EmailMessage, **kwargs: Any) -> tuple[int, str]:
    """Send ``msg`` over SMTP; the final reply (code, text), whichever stage answered."""
    import aiosmtplib

    try:
        _, response = await aiosmtplib.send(msg, hostname="127.0.0.1", port=port, timeout=30, **kwargs)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0]
        return first.code, first.message
    except aiosmtplib.SMTPResponseException as exc:
        return exc.code, exc.message
    return 250, response


async def eventually(check: Callable[[], bool], what: str, within: float = 20.0) -> None:
    """Poll ``check`` until it holds, failing after ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.0f} s waiting for {what}")
        await asyncio.sleep(0.02)


async def run_cli(*args: str) -> tuple[int, str]:
    """``sms-bridge ARGS`` as a child process: (exit status, stdout and stderr)."""
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode("utf-8", "replace")


def later(seconds: float, op: Callable[..., T]) -> Callable[..., T]:
    """``op``, run as if ``seconds`` later on the transaction's clock: ``store.run(later(60, op), ...)``."""

    def work(tx: outbox.Tx, *args: Any, **kwargs: Any) -> T:
        saved = tx.now
        tx.now = saved + seconds
        try:
            return op(tx, *args, **kwargs)
        finally:
            tx.now = saved

    return work


def before_each_operation(
    monkeypatch: pytest.MonkeyPatch, hook: Callable[[Any, tuple[Any, ...], dict[str, Any]], Awaitable[None]]
) -> None:
    """Fault injection: await ``hook(op, args, kwargs)`` before every outbox operation, on both
    backends (it may wait, record, or raise in the operation's place)."""
    from bridge.outbox.pg import PgOutbox

    for backend in (outbox.SqliteOutbox, PgOutbox):

        async def hooked(self: Any, op: Any, /, *args: Any, _run: Any = backend.run, **kwargs: Any) -> Any:
            await hook(op, args, kwargs)
            return await _run(self, op, *args, **kwargs)

        monkeypatch.setattr(backend, "run", hooked)
