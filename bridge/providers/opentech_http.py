"""OpenTech (ot-sms.com) over HTTP: ``sms_send_bulk.php`` and ``sms_balance.php``.

The API documents its four error sentences and nothing else: not the success
reply, not the separator for several recipients. So: the known sentences are
permanent failures; a reply matching the account's ``success_pattern`` is a
success; anything else is ambiguous (the SMS may have gone out), never success.
Text that GSM-7 cannot carry goes as UCS-2 big-endian hex with ``dcs=1``.
"""

from __future__ import annotations

import re

from bridge.config import OpentechHttpAccount
from bridge.core.model import SmsRequest
from bridge.errors import AmbiguousDelivery, PermanentDelivery
from bridge.providers._http import HttpProvider, raise_for_server_status, request
from bridge.providers.base import MAX_NUMBERS_PER_CALL, Balance, OnStart, Sent, credentials

#: documented error sentence (lower case) → plain words
ERRORS: dict[str, str] = {
    "invalid credential!": "wrong OpenTech username or password",
    "the username wasn't found in our system or the password provided was wrong!": (
        "OpenTech does not know this username, or the password is wrong"
    ),
    "invalid customer!": "this OpenTech user is not set up as a customer (check the uid)",
    "invalid sender or not activated yet!": "the sender ID is unknown or not yet activated at OpenTech",
}


def ucs2_hex(text: str) -> str:
    """``"Tت"`` → ``"0054062A"``: four hex digits per character."""
    if any(ord(ch) > 0xFFFF for ch in text):
        raise PermanentDelivery(
            "the text has characters outside the Basic Multilingual Plane, which OpenTech cannot send"
        )
    return "".join(f"{ord(ch):04X}" for ch in text)


def parse_send_reply(body: str, success_pattern: str) -> Sent:
    text = body.strip()
    words = ERRORS.get(text.lower())
    if words is None:
        for sentence, plain in ERRORS.items():
            if sentence in text.lower():
                words = plain
                break
    if words is not None:
        # credentials and customer setup: this account cannot send now; another may
        raise PermanentDelivery(words, code=text[:80], raw=text[:500], failover="sender" not in words)
    if text and re.search(success_pattern, text):
        match = re.search(r"[A-Za-z0-9-]{6,}|\d+", text.split(":", 1)[-1])
        return Sent(message_id=match.group(0) if match else "", numbers=0, raw=text[:500])
    raise AmbiguousDelivery(
        "OpenTech replied with something that is neither a known error nor a success", raw=text[:500]
    )


class OpenTechHttp(HttpProvider):
    """One OpenTech account over HTTP."""

    account: OpentechHttpAccount

    def _auth(self, request: SmsRequest | None = None) -> dict[str, str]:
        username, password = credentials(self.account, request)
        return {"uid": self.account.uid or "", "username": username, "password": password}

    async def _get(self, script: str, params: dict[str, str], on_start: OnStart | None = None) -> str:
        await self.limiter.wait()
        if on_start is not None:
            await on_start()
        response = await request(
            self.client, "GET", self.base + script, params=params, reply_within=self.account.timeout
        )
        body = response.text
        if response.status_code >= 400:
            raise_for_server_status(response, body)
        return body

    async def send(self, request: SmsRequest, *, test: bool = False, on_start: OnStart | None = None) -> Sent:
        if len(request.numbers) > MAX_NUMBERS_PER_CALL:
            raise PermanentDelivery(f"{len(request.numbers)} numbers in one call; split them first")
        if test:
            raise PermanentDelivery("OpenTech has no test mode; send without --test")
        params = self._auth(request) | {"sender": request.sender, "recipient": ",".join(request.numbers)}
        if request.encoding == "gsm7":
            params["msg"] = request.text
        else:
            params["msg"] = ucs2_hex(request.text)
            params["dcs"] = "1"
        body = await self._get("sms_send_bulk.php", params, on_start)
        sent = parse_send_reply(body, self.account.success_pattern)
        return Sent(sent.message_id, len(request.numbers), request.points, None, sent.raw)

    async def balance(self) -> Balance:
        body = await self._get("sms_balance.php", self._auth())
        text = body.strip()
        if text.lower() in ERRORS:
            raise PermanentDelivery(ERRORS[text.lower()], raw=text[:500])
        match = re.search(r"-?\d+(?:\.\d+)?", text)
        return Balance(float(match.group(0)) if match else None, None, raw=text[:500])

    async def sender_ids(self) -> list[str]:
        raise PermanentDelivery("OpenTech has no API to list sender IDs")
