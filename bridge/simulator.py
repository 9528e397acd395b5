"""``sms-bridge simulate``: a local stand-in for the KwtSMS and OpenTech HTTP APIs.

Written from the provider documents (the v0.99 and v4.1 KwtSMS APIs and the
OpenTech page), not from the bridge: it imports none of the bridge's parsing,
validation, encoding or provider code, so that when the two disagree a test
fails instead of both being wrong together.

KwtSMS (``/API/<command>/``): ``send``, ``balance``, ``senderid``. GET is
v0.99 (``lang`` decides the message charset: 2 is Windows-1256, otherwise
UTF-8); POST is v4.1, answered in JSON when the request is JSON or asks for
it, in plain text otherwise. Send checks, in order: the IP's request rate
(above ``max_rate`` per second the IP is locked out: ERR024), credentials
(ERR002/ERR003), parameters (ERR002, empty message ERR009), number format
(ERR025), more than 200 numbers (ERR007), valid numbers (ERR006), country
(ERR026), sender ID, case sensitive (ERR008), HTML (ERR027), v0.99 ``lang:1``
with Arabic (ERR031), pages (ERR012), the same number within the repeat
window (ERR028, nothing charged), balance (ERR010/ERR011). One point per
number per page; a page is 160 GSM characters or 70 Unicode, 153/67 when split.

OpenTech (``/ap/static/api/``): ``sms_send_bulk.php`` and ``sms_balance.php``,
with the four documented error sentences. The success reply is not
documented; this stand-in answers ``OK:<message id>``.

Faults on request, for testing what a bridge does when things go wrong:
``drop`` (the SMS is sent, then the connection is cut before the reply),
``drop-before`` (cut without sending), ``http500`` (an error page, nothing
sent), ``http503`` (unavailable, nothing sent) and ``slow`` (sent, the reply
held back). Arm them with
``POST /_sim/faults {"fault": "drop", "count": 1}`` or ``--fault``.
``GET /_sim/messages`` lists what was delivered, ``GET /_sim/requests`` every
request as received, ``GET /_sim/refusals`` the error replies given by code,
``POST /_sim/reset`` forgets them.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import parse_qsl

import yaml
from aiohttp import web

GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM_EXTENDED = set("^{}\\[]~|€\f")
HTML_TAG = re.compile(r"<\s*/?\s*[a-zA-Z][^>]*>")
OT_SUCCESS = "OK:{id}"


@dataclass
class SimAccount:
    username: str
    password: str
    balance: float = 1000.0
    purchased: float = 1000.0
    senders: list[str] = field(default_factory=lambda: ["KWT-SMS"])
    countries: list[str] = field(default_factory=lambda: ["965"])
    uid: str = ""
    api: bool = True


@dataclass
class Delivered:
    provider: str
    api: str
    account: str
    sender: str
    numbers: list[str]
    text: str
    encoding: str
    pages: int
    points: int
    msg_id: str
    test: bool
    at: float


def default_accounts() -> dict[str, list[SimAccount]]:
    return {
        "kwtsms": [SimAccount("demo", "demo-password", senders=["KWT-SMS", "MY-COMPANY"])],
        "opentech": [SimAccount("demo", "demo-password", senders=["OpenTech", "MY-COMPANY"], uid="1001")],
    }


def load_accounts(path: Path) -> dict[str, list[SimAccount]]:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    out: dict[str, list[SimAccount]] = {"kwtsms": [], "opentech": []}
    for provider in out:
        for item in data.get(provider, []) or []:
            item = dict(item)
            item.setdefault("purchased", item.get("balance", 1000.0))
            out[provider].append(SimAccount(**{k: v for k, v in item.items()}))
    return out


def sms_size(text: str) -> tuple[str, int]:
    """(encoding, pages) as the KwtSMS document states the rules."""
    if all(c in GSM_BASIC or c in GSM_EXTENDED for c in text):
        units = sum(2 if c in GSM_EXTENDED else 1 for c in text)
        single, multi, encoding = 160, 153, "gsm7"
    else:
        units = len(text.encode("utf-16-be")) // 2
        single, multi, encoding = 70, 67, "ucs2"
    if units <= single:
        return encoding, 1
    return encoding, -(-units // multi)


class Simulator:
    """The simulated providers' state and HTTP handlers."""

    def __init__(
        self,
        accounts: dict[str, list[SimAccount]] | None = None,
        *,
        max_rate: float = 5.0,
        block_seconds: float = 60.0,
        repeat_window: float = 15.0,
        max_pages: int = 6,
        out: TextIO | None = sys.stdout,
        jsonl: Path | None = None,
    ) -> None:
        accounts = accounts if accounts is not None else default_accounts()
        self.kwtsms = {a.username: a for a in accounts.get("kwtsms", [])}
        self.opentech = {a.username: a for a in accounts.get("opentech", [])}
        self.max_rate = max_rate
        self.block_seconds = block_seconds
        self.repeat_window = repeat_window
        self.max_pages = max_pages
        self.out = out
        self.jsonl = jsonl
        self.delivered: list[Delivered] = []
        self.requests: list[dict[str, Any]] = []
        #: error replies given, by code (``ERR028``: 3)
        self.refusals: dict[str, int] = defaultdict(int)
        self.faults: deque[dict[str, Any]] = deque()
        self.last_sent: dict[str, float] = {}
        self.hits: dict[str, deque[float]] = defaultdict(deque)
        self.blocked_until: dict[str, float] = {}
        self.delivered_event = asyncio.Event()

    # -- plumbing ---------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/API/{command}/", self.kwtsms_handler)
        app.router.add_route("*", "/API/{command}", self.kwtsms_handler)
        app.router.add_route("*", "/ap/static/api/{script}", self.opentech_handler)
        app.router.add_get("/_sim/messages", self.messages_handler)
        app.router.add_get("/_sim/requests", self.requests_handler)
        app.router.add_get("/_sim/refusals", self.refusals_handler)
        app.router.add_post("/_sim/faults", self.faults_handler)
        app.router.add_post("/_sim/reset", self.reset_handler)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 8800) -> tuple[web.AppRunner, int]:
        runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner, int(runner.addresses[0][1])

    def arm(self, fault: str, count: int = 1, delay: float = 5.0) -> None:
        if fault not in ("drop", "drop-before", "http500", "http503", "slow"):
            raise ValueError(f"unknown fault {fault!r}")
        self.faults.append({"fault": fault, "count": count, "delay": delay})

    def _take_fault(self) -> dict[str, Any] | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault["count"] > 0:
            fault["count"] -= 1
            if fault["count"] == 0:
                self.faults.popleft()
        return fault  # count <= 0 means every request

    async def _with_faults(
        self, produce: Callable[[], Awaitable[web.Response]], request: web.Request
    ) -> web.StreamResponse:
        fault = self._take_fault()
        if fault is None:
            return await produce()
        kind = fault["fault"]
        if kind == "http500":
            return web.Response(
                status=500, text="<html><body>Internal Server Error</body></html>", content_type="text/html"
            )
        if kind == "http503":
            return web.Response(
                status=503, text="<html><body>Service Unavailable</body></html>", content_type="text/html"
            )
        if kind == "drop-before":
            return self._drop(request)
        response = await produce()
        if kind == "drop":
            return self._drop(request)
        await asyncio.sleep(float(fault["delay"]))
        return response

    @staticmethod
    def _drop(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.abort()
        raise asyncio.CancelledError  # aiohttp treats this as a vanished client: nothing is written

    def _deliver(self, item: Delivered) -> None:
        self.delivered.append(item)
        self.delivered_event.set()
        for number in item.numbers:
            self.last_sent[number] = item.at
        if self.out is not None:
            flag = " [TEST: not delivered]" if item.test else ""
            print(
                f"[simulator] {item.provider} {item.api} {item.account} → {','.join(item.numbers)} "
                f"from {item.sender} ({item.encoding}, {item.pages} page(s), {item.points} point(s)){flag}: {item.text}",
                file=self.out,
                flush=True,
            )
        if self.jsonl is not None:
            with self.jsonl.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(item), ensure_ascii=False) + "\n")

    def _rate_limited(self, ip: str) -> bool:
        now = time.monotonic()
        if self.blocked_until.get(ip, 0.0) > now:
            return True
        if self.max_rate <= 0:
            return False
        hits = self.hits[ip]
        hits.append(now)
        while hits and hits[0] <= now - 1.0:
            hits.popleft()
        if len(hits) > self.max_rate:
            self.blocked_until[ip] = now + self.block_seconds
            return True
        return False

    # -- test endpoints ---------------------------------------------------

    async def messages_handler(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(d) for d in self.delivered])

    async def requests_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.requests)

    async def refusals_handler(self, request: web.Request) -> web.Response:
        return web.json_response(self.refusals)

    async def faults_handler(self, request: web.Request) -> web.Response:
        data = await request.json()
        try:
            self.arm(str(data.get("fault")), int(data.get("count", 1)), float(data.get("delay", 5.0)))
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"armed": list(self.faults)})

    async def reset_handler(self, request: web.Request) -> web.Response:
        self.delivered.clear()
        self.requests.clear()
        self.refusals.clear()
        self.faults.clear()
        self.last_sent.clear()
        self.hits.clear()
        self.blocked_until.clear()
        return web.json_response({"reset": True})

    # -- KwtSMS -----------------------------------------------------------

    async def _kwtsms_params(self, request: web.Request) -> tuple[str, dict[str, str], bool]:
        """(api generation, parameters, reply in JSON)."""
        if request.method == "GET":
            raw = request.query_string
            latin = dict(parse_qsl(raw, keep_blank_values=True, encoding="latin-1"))
            charset = "cp1256" if latin.get("lang") == "2" else "utf-8"
            params = dict(parse_qsl(raw, keep_blank_values=True, encoding=charset, errors="replace"))
            return "v0.99", params, False
        ctype = request.headers.get("Content-Type", "")
        wants_json = "application/json" in request.headers.get("Accept", "") or "application/json" in ctype
        if "application/json" in ctype:
            try:
                data = await request.json()
            except ValueError:
                data = {}
            params = {str(k): str(v) for k, v in (data or {}).items()} if isinstance(data, dict) else {}
        else:
            form = await request.post()
            params = {k: str(v) for k, v in form.items()}
        return "v4.1", params, wants_json

    async def kwtsms_handler(self, request: web.Request) -> web.StreamResponse:
        api, params, as_json = await self._kwtsms_params(request)
        command = request.match_info["command"].lower()
        shown = {k: ("***" if k == "password" else v) for k, v in params.items()}
        self.requests.append(
            {
                "provider": "kwtsms",
                "api": api,
                "method": request.method,
                "command": command,
                "params": shown,
                "at": time.monotonic(),  # arrival, for checking a client's request rate
            }
        )

        def error(code: str, description: str) -> web.Response:
            self.refusals[code] += 1
            if as_json:
                return web.json_response({"result": "ERROR", "code": code, "description": description})
            return web.Response(text=f"{code}: {description}", content_type="text/html")

        async def produce() -> web.Response:
            ip = request.remote or "?"
            if self._rate_limited(ip):
                return error("ERR024", "Your IP is blocked: more than the allowed requests per second")
            if not params.get("username") or not params.get("password"):
                return error("ERR002", "Missing username or password")
            account = self.kwtsms.get(params["username"])
            if account is None or account.password != params["password"]:
                return error("ERR003", "Wrong username or password")
            if not account.api:
                return error("ERR004", "This account has no API access")
            if command == "balance":
                if as_json:
                    return web.json_response(
                        {"result": "OK", "available": account.balance, "purchased": account.purchased}
                    )
                fmt = "{:.0f}/{:.0f}" if api == "v0.99" else "{:.2f}/{:.2f}"
                return web.Response(text=fmt.format(account.balance, account.purchased), content_type="text/html")
            if command == "senderid":
                if as_json:
                    return web.json_response({"result": "OK", "senderid": account.senders})
                return web.Response(text="\n".join(account.senders), content_type="text/html")
            if command == "send":
                return self._kwtsms_send(api, params, account, error, as_json)
            return error("ERR002", f"Unknown command {command}")

        return await self._with_faults(produce, request)

    def _kwtsms_send(
        self,
        api: str,
        params: dict[str, str],
        account: SimAccount,
        error: Callable[[str, str], web.Response],
        as_json: bool,
    ) -> web.Response:
        sender = params.get("sender", "")
        mobile = params.get("mobile", "")
        text = params.get("message", params.get("text"))
        if not sender or not mobile or text is None:
            return error("ERR002", "Missing sender, mobile or message")
        if not text.strip():
            return error("ERR009", "Empty message")
        numbers = mobile.split(",")
        if any(not re.fullmatch(r"[0-9]+", n) or n.startswith("00") for n in numbers):
            return error("ERR025", "Numbers must be digits with the country code, without +, 00, spaces or dashes")
        if len(numbers) > 200:
            return error("ERR007", "More than 200 numbers")
        valid = list(dict.fromkeys(n for n in numbers if 8 <= len(n) <= 15))
        if not valid:
            return error("ERR006", "No valid numbers")
        routable = [n for n in valid if any(n.startswith(c) for c in account.countries)]
        if not routable:
            return error("ERR026", "No route for these numbers: country not activated")
        if sender not in account.senders:
            return error("ERR008", "Sender ID is banned or unknown")
        if HTML_TAG.search(text):
            return error("ERR027", "HTML tags are not allowed")
        encoding, pages = sms_size(text)
        if api == "v0.99" and params.get("lang") == "1" and re.search("[\u0600-\u06ff]", text):
            return error("ERR031", "Bad language detected")
        if pages > self.max_pages:
            return error("ERR012", f"Message is longer than {self.max_pages} pages")
        now = time.time()
        if self.repeat_window > 0 and any(now - self.last_sent.get(n, -1e18) < self.repeat_window for n in routable):
            return error("ERR028", "Same number within 15 seconds")
        points = pages * len(routable)
        if account.balance <= 0:
            return error("ERR010", "Zero balance")
        if account.balance < points:
            return error("ERR011", "Insufficient balance")
        account.balance -= points
        msg_id = uuid.uuid4().hex
        test = params.get("test") == "1"
        self._deliver(
            Delivered(
                "kwtsms", api, account.username, sender, routable, text, encoding, pages, points, msg_id, test, now
            )
        )
        stamp = int(now)
        if as_json:
            return web.json_response(
                {
                    "result": "OK",
                    "msg-id": msg_id,
                    "numbers": len(routable),
                    "points-charged": points,
                    "balance-after": account.balance,
                    "unix-timestamp": stamp,
                }
            )
        balance = f"{account.balance:.0f}" if api == "v0.99" else f"{account.balance:.2f}"
        return web.Response(text=f"OK:{msg_id}:{len(routable)}:{points}:{balance}:{stamp}", content_type="text/html")

    # -- OpenTech ---------------------------------------------------------

    async def opentech_handler(self, request: web.Request) -> web.StreamResponse:
        script = request.match_info["script"]
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: str(v) for k, v in (await request.post()).items()})
        shown = {k: ("***" if k == "password" else v) for k, v in params.items()}
        self.requests.append(
            {"provider": "opentech", "api": "", "method": request.method, "command": script, "params": shown}
        )

        def reply(text: str) -> web.Response:
            return web.Response(text=text, content_type="text/html")

        async def produce() -> web.Response:
            account = self.opentech.get(params.get("username", ""))
            if account is None:
                return reply("The Username wasn't found in our system or the password provided was wrong!")
            if account.password != params.get("password"):
                return reply("Invalid credential!")
            if account.uid != params.get("uid"):
                return reply("Invalid customer!")
            if script == "sms_balance.php":
                return reply(f"{account.balance:.0f}")
            if script != "sms_send_bulk.php":
                return web.Response(status=404, text="Not Found")
            if params.get("sender") not in account.senders:
                return reply("Invalid Sender or not activated yet!")
            raw = params.get("msg", "")
            if params.get("dcs") == "1":
                if not re.fullmatch(r"(?:[0-9A-Fa-f]{4})+", raw):
                    return reply("Invalid message!")
                text = bytes.fromhex(raw).decode("utf-16-be", errors="replace")
            else:
                text = raw
            numbers = [n for n in params.get("recipient", "").split(",") if n]
            if not numbers or not text:
                return reply("Invalid recipient or message!")
            encoding, pages = sms_size(text)
            points = pages * len(numbers)
            account.balance -= points
            msg_id = uuid.uuid4().hex[:12]
            item = Delivered(
                "opentech",
                "",
                account.username,
                params.get("sender", ""),
                numbers,
                text,
                encoding,
                pages,
                points,
                msg_id,
                False,
                time.time(),
            )
            self._deliver(item)
            return reply(OT_SUCCESS.format(id=msg_id))

        return await self._with_faults(produce, request)


async def serve(
    host: str,
    port: int,
    simulator: Simulator,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run ``simulator`` on ``host:port`` until ``stop`` is set."""
    runner, bound = await simulator.start(host, port)
    try:
        if ready is not None:
            ready(bound)
        await stop.wait()
    finally:
        await runner.cleanup()
