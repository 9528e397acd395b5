"""KwtSMS over HTTP: API v4.1 (POST, JSON or text replies) and v0.99 (GET with ``lang``).

Every reply is classified here and nowhere else. Success is a reply whose
result is ``OK``; otherwise the ``ERRnnn`` code decides (table below); a reply
with neither is ambiguous, because KwtSMS may have sent the SMS anyway.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote_plus

from bridge.config import KwtsmsHttpAccount
from bridge.core.model import SmsRequest
from bridge.errors import AmbiguousDelivery, DeliveryError, PermanentDelivery, TransientDelivery
from bridge.providers._http import HttpProvider, raise_for_server_status, request
from bridge.providers.base import MAX_NUMBERS_PER_CALL, Balance, OnStart, Sent, credentials

#: code → (kind, plain words, seconds to wait before retrying)
ERRORS: dict[str, tuple[str, str, float | None]] = {
    "ERR001": ("transient", "the KwtSMS API is switched off for this account", 300),
    "ERR002": ("permanent", "a required parameter (username, password, sender, mobile or message) is missing", None),
    "ERR003": ("permanent", "wrong KwtSMS username or password", None),
    "ERR004": ("permanent", "this KwtSMS account has no API access", None),
    "ERR005": ("permanent", "this KwtSMS account is blocked", None),
    "ERR006": ("permanent", "none of the numbers is valid", None),
    "ERR007": ("permanent", "more than 200 numbers in one request", None),
    "ERR008": ("permanent", "the sender ID is banned or unknown (sender IDs are case sensitive)", None),
    "ERR009": ("permanent", "the message is empty", None),
    "ERR010": ("permanent", "the account balance is zero; top up the account", None),
    "ERR011": ("permanent", "the balance is not enough for this message; top up the account", None),
    "ERR012": ("permanent", "the message is longer than 6 pages", None),
    "ERR013": ("transient", "1000 messages are already queued at KwtSMS", 60),
    "ERR024": ("permanent", "KwtSMS refuses requests from this IP address (API lockdown)", None),
    "ERR025": ("permanent", "a number is not digits with the country code", None),
    "ERR026": ("permanent", "no route: the destination country is not activated for this account", None),
    "ERR027": ("permanent", "HTML tags are not allowed in the message", None),
    "ERR028": ("transient", "the same number was sent to less than 15 seconds ago", 15),
    "ERR031": ("permanent", "KwtSMS detected a bad language for the message", None),
    "ERR032": ("permanent", "KwtSMS flagged the message as spam", None),
}
_ERR = re.compile(r"ERR\d{3}")
#: refusals after which another account may take the SMS: the API is off, the queue is
#: full, the balance is empty, this IP is locked out. Nothing was sent.
FAILOVER_CODES = frozenset({"ERR001", "ERR010", "ERR011", "ERR013", "ERR024"})


def classify_error(code: str, raw: str, description: str = "") -> DeliveryError:
    kind, words, delay = ERRORS.get(code, ("permanent", description or "KwtSMS refused the request", None))
    failover = code in FAILOVER_CODES
    if kind == "transient":
        return TransientDelivery(words, code=code, raw=raw, retry_after=delay, failover=failover)
    return PermanentDelivery(words, code=code, raw=raw, failover=failover)


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def parse_send_reply(body: str) -> Sent:
    """A send reply (text or JSON) → :class:`Sent`, or the classified error."""
    text = body.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if str(data.get("result", "")).upper() == "OK":
                points = _number(data.get("points-charged"))
                return Sent(
                    message_id=str(data.get("msg-id", "")),
                    numbers=int(_number(data.get("numbers")) or 0),
                    points=None if points is None else int(points),
                    balance_after=_number(data.get("balance-after")),
                    raw=text,
                )
            code = str(data.get("code", ""))
            if _ERR.fullmatch(code):
                raise classify_error(code, text, str(data.get("description", "")))
    if text.upper().startswith("OK"):
        parts = text.split(":")
        if len(parts) >= 5:
            points = _number(parts[3])
            return Sent(
                message_id=parts[1].strip(),
                numbers=int(_number(parts[2]) or 0),
                points=None if points is None else int(points),
                balance_after=_number(parts[4]),
                raw=text,
            )
    match = _ERR.search(text)
    if match:
        raise classify_error(match.group(0), text)
    raise AmbiguousDelivery("KwtSMS replied with something that is neither OK nor an error code", raw=text[:500])


def _raise_for_reply(body: str) -> None:
    """For balance/senderid: raise a clear error if ``body`` is an error reply."""
    match = _ERR.search(body)
    if match and not body.strip().upper().startswith("OK"):
        raise classify_error(match.group(0), body)


def v099_lang(request: SmsRequest) -> int:
    return 1 if request.encoding == "gsm7" else request.lang if request.lang in (2, 3, 4) else 3


class KwtSmsHttp(HttpProvider):
    """One KwtSMS account over HTTP."""

    account: KwtsmsHttpAccount

    def _credentials(self, request: SmsRequest | None = None) -> tuple[str, str]:
        return credentials(self.account, request)

    async def _call(
        self, command: str, fields: dict[str, str], *, v099_query: str | None = None, on_start: OnStart | None = None
    ) -> str:
        await self.limiter.wait()
        if on_start is not None:
            await on_start()
        url = self.base + command + "/"
        timeout = self.account.timeout
        if self.account.api == "0.99":
            query = (
                v099_query if v099_query is not None else "&".join(f"{k}={quote_plus(v)}" for k, v in fields.items())
            )
            response = await request(self.client, "GET", url + "?" + query, reply_within=timeout)
        elif self.account.reply_format == "json":
            headers = {"Accept": "application/json"}
            response = await request(self.client, "POST", url, json=fields, headers=headers, reply_within=timeout)
        else:
            headers = {"Accept": "text/html"}
            response = await request(self.client, "POST", url, data=fields, headers=headers, reply_within=timeout)
        body = response.text
        if response.status_code >= 400 and not _ERR.search(body):
            raise_for_server_status(response, body)
        return body

    async def send(self, request: SmsRequest, *, test: bool = False, on_start: OnStart | None = None) -> Sent:
        if len(request.numbers) > MAX_NUMBERS_PER_CALL:
            raise PermanentDelivery(f"{len(request.numbers)} numbers in one call; split them first")
        username, password = self._credentials(request)
        fields = {
            "username": username,
            "password": password,
            "sender": request.sender,
            "mobile": ",".join(request.numbers),
        }
        if self.account.api == "0.99":
            lang = v099_lang(request)
            charset = "cp1256" if lang == 2 else "utf-8"
            fields["lang"] = str(lang)
            query = "&".join(f"{k}={quote_plus(v)}" for k, v in fields.items())
            query += "&message=" + quote_plus(request.text, encoding=charset)
            body = await self._call("send", fields, v099_query=query, on_start=on_start)
        else:
            fields["message"] = request.text
            fields["test"] = "1" if (test or self.account.test) else "0"
            body = await self._call("send", fields, on_start=on_start)
        return parse_send_reply(body)

    async def balance(self) -> Balance:
        username, password = self._credentials()
        body = await self._call("balance", {"username": username, "password": password})
        text = body.strip()
        if text.startswith("{"):
            data = json.loads(text)
            if str(data.get("result", "")).upper() != "OK":
                raise classify_error(str(data.get("code", "")), text, str(data.get("description", "")))
            return Balance(_number(data.get("available")), _number(data.get("purchased")), raw=text)
        _raise_for_reply(text)
        available, _, purchased = text.removeprefix("OK:").partition("/")
        if _number(available) is None:
            raise AmbiguousDelivery("KwtSMS sent a balance reply that cannot be read", raw=text[:500])
        return Balance(_number(available), _number(purchased), raw=text)

    async def sender_ids(self) -> list[str]:
        username, password = self._credentials()
        body = await self._call("senderid", {"username": username, "password": password})
        text = body.strip()
        if text.startswith("{"):
            data = json.loads(text)
            if str(data.get("result", "")).upper() != "OK":
                raise classify_error(str(data.get("code", "")), text, str(data.get("description", "")))
            return [str(s) for s in data.get("senderid", [])]
        _raise_for_reply(text)
        return [line.strip() for line in text.removeprefix("OK:").splitlines() if line.strip()]
