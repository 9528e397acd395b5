"""The status page: what the bridge is doing, what became of each message, and a few actions.

Server-rendered HTML (Jinja2, autoescaped), no JavaScript. On ``admin.listen``:

- ``/`` overview: the queue by state, the oldest waiting SMS, each account's
  balance and last provider result, each mailbox's connection, failures and
  unknown outcomes in the last 24 h, and the mail refused on the spot lately;
- ``?refresh=N`` on any page reloads it every N seconds (a meta refresh: no JavaScript);
- ``/messages`` the list, filtered by state, route, client and time, searched by
  id, Message-ID, sender, phone number (any spelling) or text; ``/messages/<id>`` one message and its history;
- ``POST /messages/<id>/<retry|cancel|not-sent>``: actions, for users in
  ``admin.users`` only, behind a login (scrypt hashes, the same slow-down and
  lockout as SMTP AUTH) and a CSRF token, recorded in the history with who.

Phone numbers are masked and passwords never shown. With no ``admin.users``
the page is read-only and says how to enable the actions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
from aiohttp import web

from bridge import __version__
from bridge.config import Config
from bridge.core.access import verify_password
from bridge.core.phone import mask, normalise
from bridge.outbox import Outbox, Row, Search, State, views
from bridge.outbox.actions import ACTIONS, act
from bridge.runtime import Runtime
from bridge.runtime.guard import AuthGuard

log = logging.getLogger("bridge.status")

COOKIE = "sms_bridge_session"
_ID = re.compile(r"[0-9a-f]{22}(?:\.\d{1,3})?")
_WHEN = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2})?")
_PHONEISH = re.compile(r"\+?[\d\s().-]{3,30}")


class BadParameter(ValueError):
    """A page parameter that is not valid; the message names it."""


@dataclass
class Login:
    user: str
    csrf: str
    expires: float


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(seconds: float) -> str:
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def points(value: float | None) -> str:
    """A balance as the provider gives it: ``999``, ``1,250.5``, never ``999.00``."""
    if value is None:
        return "not known yet"
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.3f}".rstrip("0")


def refresh(query: Any) -> int:
    """``?refresh=N``: the page reloads itself every N seconds (5 to 3600), with no JavaScript."""
    value = str(query.get("refresh", ""))
    return max(5, min(int(value), 3600)) if value.isdigit() else 0


def numbers(row: Row) -> str:
    shown = ", ".join(mask(n) for n in row.request.numbers[:5])
    more = len(row.request.numbers) - 5
    return shown + (f" and {more} more" if more > 0 else "")


def _time(value: str, name: str) -> float:
    if not _WHEN.fullmatch(value):
        raise BadParameter(f"{name}: give a date as YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)")
    try:
        parsed = dt.datetime.fromisoformat(value.replace(" ", "T"))
    except ValueError:
        raise BadParameter(f"{name}: {value!r} is not a date") from None
    return parsed.replace(tzinfo=dt.UTC).timestamp()


def parse_search(query: Any, config: Config) -> Search:
    """The list page's filters, each checked; anything else is a :class:`BadParameter`."""
    state = query.get("state", "")
    if state and state not in {s.value for s in State}:
        raise BadParameter(f"state: {state!r} is not a state ({', '.join(s.value for s in State)})")
    route = query.get("route", "")
    if route and route not in config.routes:
        raise BadParameter(f"route: no route named {route!r}")
    client = query.get("client", "")
    if client and client not in config.clients:
        raise BadParameter(f"client: no client named {client!r}")
    text = query.get("q", "").strip()
    if len(text) > 200:
        raise BadParameter("q: at most 200 characters")
    number = ""
    if _PHONEISH.fullmatch(text):  # +965 9711 9440, 97119440, (965) 9711-9440: a number, or a part of one
        digits = re.sub(r"\D", "", text)
        whole = normalise(text, config.numbers.default_region, strict=False).number if len(digits) >= 7 else None
        number = whole or digits
    limit_text = query.get("limit", "100")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
        raise BadParameter("limit: a number from 1 to 1000")
    return Search(
        state=State(state) if state else None,
        route=route or None,
        client=client or None,
        since=_time(query["since"], "since") if query.get("since") else None,
        until=_time(query["until"], "until") if query.get("until") else None,
        text=text,
        number=number,
        limit=int(limit_text),
    )


class StatusPage:
    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        runtime: Runtime,
        mailboxes: Callable[[], Sequence[tuple[str, bool]]],
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.runtime = runtime
        self.mailboxes = mailboxes
        self.guard = AuthGuard(config.admin.login_failures, config.admin.lockout)
        self.logins: dict[str, Login] = {}
        self._scrypt = asyncio.Semaphore(2)
        self.env = jinja2.Environment(
            loader=jinja2.PackageLoader("bridge.web", "templates"),
            autoescape=jinja2.select_autoescape(["html"]),
            undefined=jinja2.StrictUndefined,
        )
        self.env.globals.update(
            when=when, age=age, numbers=numbers, points=points, version=__version__, actions=ACTIONS
        )

    @property
    def users(self) -> bool:
        return bool(self.config.admin.users)

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.overview)
        app.router.add_get("/messages", self.messages)
        app.router.add_get("/messages/{id}", self.message)
        app.router.add_post("/messages/{id}/{action}", self.act)
        app.router.add_get("/login", self.login_form)
        app.router.add_post("/login", self.login)
        app.router.add_post("/logout", self.logout)

    # -- sessions ----------------------------------------------------------------

    def _login(self, request: web.Request) -> Login | None:
        sid = request.cookies.get(COOKIE, "")
        login = self.logins.get(sid)
        if login is None:
            return None
        if login.expires < time.time():
            self.logins.pop(sid, None)
            return None
        return login

    def _page(self, request: web.Request, template: str, status: int = 200, **values: Any) -> web.Response:
        login = self._login(request)
        values.setdefault("refresh", refresh(request.query))
        html = self.env.get_template(template).render(login=login, users=self.users, **values)
        response = web.Response(text=html, status=status, content_type="text/html", charset="utf-8")
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        )
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["Cache-Control"] = "no-store"
        return response

    # -- pages -------------------------------------------------------------------

    async def overview(self, request: web.Request) -> web.Response:
        now = self.outbox.clock()
        counts = await self.outbox.run(views.counts)
        oldest = await self.outbox.run(views.oldest_queued)
        problems = await self.outbox.run(views.recent_problems, now - 86400)
        recent = await self.outbox.run(views.search, Search(since=now - 86400, limit=10, state=None))
        failing = [r for r in recent if r.delivery.state in (State.FAILED, State.UNKNOWN, State.EXPIRED)]
        accounts = []
        for name, account in self.config.accounts.items():
            last = self.runtime.last_result.get(name)
            accounts.append(
                {
                    "name": name,
                    "provider": account.provider,
                    "balance": self.runtime.balances.get(name),
                    "last": last,
                }
            )
        return self._page(
            request,
            "overview.html",
            counts=counts,
            oldest=None if oldest is None else now - oldest,
            problems=problems,
            failing=failing,
            accounts=accounts,
            mailboxes=[
                (name, "connected" if up else "watched by another bridge" if self._elsewhere(name) else "not connected")
                for name, up in self.mailboxes()
            ],
            outbox=self.outbox.describe(),
            instance=self.outbox.instance,
            bridges=await self.outbox.instances() if self.outbox.shared else [],
            refusals=await self.outbox.run(views.refusals, 20),
            now=now,
        )

    def _elsewhere(self, mailbox: str) -> bool:
        """Whether another bridge sharing the outbox watches ``mailbox`` (holds its lock)."""
        return self.outbox.shared and not self.outbox.leadership(f"imap {mailbox}").held.is_set()

    async def messages(self, request: web.Request) -> web.Response:
        try:
            search = parse_search(request.query, self.config)
        except BadParameter as exc:
            return self._page(
                request, "messages.html", status=400, error=str(exc), rows=[], form=request.query, config=self.config
            )
        rows = await self.outbox.run(views.search, search)
        return self._page(request, "messages.html", rows=rows, form=request.query, config=self.config, error="")

    async def message(self, request: web.Request, note: str = "", status: int = 200) -> web.Response:
        ident = request.match_info["id"]
        if not _ID.fullmatch(ident):
            return self._page(request, "error.html", status=400, error="id: not a message id (22 hex digits)")
        rows = await self.outbox.run(views.search, Search(text=ident, limit=50))
        rows = [r for r in rows if r.id == ident or r.mail_id == ident]
        if not rows:
            return self._page(request, "error.html", status=404, error=f"no message {ident}")
        histories = {r.id: await self.outbox.run(views.history, r.id) for r in rows}
        return self._page(request, "message.html", status=status, rows=rows, histories=histories, note=note)

    # -- login -------------------------------------------------------------------

    async def login_form(self, request: web.Request) -> web.Response:
        return self._page(request, "login.html", error="")

    async def login(self, request: web.Request) -> web.Response:
        ip = request.remote or "?"
        if not self.users:
            return self._page(
                request, "login.html", status=403, error="Actions are off: no admin.users are configured."
            )
        if self.guard.locked(ip):
            return self._page(request, "login.html", status=429, error="Too many failed logins; try again later.")
        form = await request.post()
        user = str(form.get("user", ""))[:100]
        password = str(form.get("password", ""))[:200].encode()
        stored = self.config.admin.users.get(user)
        async with self._scrypt:  # scrypt takes tens of milliseconds: off the event loop, a few at a time
            ok = stored is not None and await asyncio.to_thread(verify_password, stored.get_secret_value(), password)
        if not ok:
            delay = self.guard.failed(ip)
            log.warning("status page login failed user=%s peer=%s", user, ip)
            await asyncio.sleep(delay)
            return self._page(request, "login.html", status=403, error="Wrong user name or password.")
        self.guard.succeeded(ip)
        sid = secrets.token_urlsafe(32)
        self.logins = {k: v for k, v in self.logins.items() if v.expires > time.time()}
        self.logins[sid] = Login(user, secrets.token_urlsafe(32), time.time() + self.config.admin.session_ttl)
        log.info("status page login user=%s peer=%s", user, ip)
        response = web.HTTPSeeOther("/")
        response.set_cookie(
            COOKIE, sid, httponly=True, samesite="Strict", path="/", max_age=int(self.config.admin.session_ttl)
        )
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        login = self._login(request)
        form = await request.post()
        if login is None or not hmac.compare_digest(str(form.get("csrf", "")), login.csrf):
            return self._page(request, "error.html", status=403, error="The form has expired; reload the page.")
        self.logins.pop(request.cookies.get(COOKIE, ""), None)
        response = web.HTTPSeeOther("/")
        response.del_cookie(COOKIE, path="/")
        raise response

    # -- actions -----------------------------------------------------------------

    async def act(self, request: web.Request) -> web.Response:
        ident, action = request.match_info["id"], request.match_info["action"]
        if action not in ACTIONS or not _ID.fullmatch(ident):
            return self._page(request, "error.html", status=404, error="no such action")
        login = self._login(request)
        if login is None:
            return self._page(request, "error.html", status=403, error="Log in to act on messages.")
        form = await request.post()
        if not hmac.compare_digest(str(form.get("csrf", "")), login.csrf):
            log.warning("status page: %s on %s refused, bad CSRF token (user=%s)", action, ident, login.user)
            return self._page(
                request, "error.html", status=403, error="The form has expired or was not ours; reload the page."
            )
        done = await self.outbox.run(act, action, ident, f"status:{login.user}")
        if not done:
            what = ACTIONS[action]
            return await self.message(request, note=f"{what.label}: nothing changed; {what.why}.", status=409)
        log.info("status page: %s on %s by %s", action, ",".join(done), login.user)
        if action == "retry":
            for row in await self.outbox.run(views.search, Search(text=ident, limit=50)):
                self.runtime.wake(row.request.account)
        raise web.HTTPSeeOther(f"/messages/{ident}")
