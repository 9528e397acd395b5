"""The KwtSMS mail relay against an aiosmtpd sink on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from typing import Any

import pytest

from bridge.errors import PermanentDelivery, TransientDelivery
from bridge.providers import RateLimiter
from bridge.providers.kwtsms_smtp import KwtSmsSmtp
from tests.helpers import Sink, account, running_sink, sms


@pytest.fixture
async def sink() -> AsyncIterator[tuple[Sink, int]]:
    async with running_sink() as running:
        yield running


def relay(port: int, **overrides: Any) -> KwtSmsSmtp:
    acct = account(
        "kwtsms-smtp",
        "",
        smarthost=f"127.0.0.1:{port}",
        smarthost_tls="none",
        mail_from="bridge@corp.example.com",
        **overrides,
    )
    return KwtSmsSmtp("relay", acct, RateLimiter(50))


async def test_the_body_is_kwtsms_layout_one_key_per_line(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    sent = await relay(port).send(sms("Meet me at Starbucks!", ("96597119440", "96566074414")))
    assert sent.confirmed is False
    assert sent.numbers == 2
    (envelope,) = handler.messages
    assert envelope.rcpt_tos == ["sms@kwtsms.com"]
    assert envelope.mail_from == "bridge@corp.example.com"
    msg = message_from_bytes(envelope.original_content or b"", policy=policy.default)
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert str(msg.get_content()).replace("\r\n", "\n") == (
        "username:corp\n"
        "password:sim-canary-5150\n"
        "sender:KWT-SMS\n"
        "mobile:96597119440,96566074414\n"
        "lang:1\n"
        "text:Meet+me+at+Starbucks!\n"
    )


async def test_arabic_goes_as_utf8_with_lang_3(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    await relay(port).send(sms("مرحبا بكم"))
    msg = message_from_bytes(handler.messages[0].original_content or b"", policy=policy.default)
    body = str(msg.get_content()).replace("\r\n", "\n")
    assert "lang:3\n" in body
    assert "text:مرحبا+بكم\n" in body


async def test_a_line_break_in_a_value_cannot_inject_a_key(sink: tuple[Sink, int]) -> None:
    handler, port = sink
    await relay(port).send(sms("hi\npassword:evil\r\nmobile:96500000000", sender="KWT-SMS"))
    msg = message_from_bytes(handler.messages[0].original_content or b"", policy=policy.default)
    lines = str(msg.get_content()).splitlines()
    assert [line.split(":", 1)[0] for line in lines] == ["username", "password", "sender", "mobile", "lang", "text"]
    assert lines[-1] == "text:hi+password:evil+mobile:96500000000"


@pytest.mark.parametrize(
    ("reply", "kind"), [("554 5.7.1 rejected", PermanentDelivery), ("451 4.3.0 try later", TransientDelivery)]
)
async def test_smarthost_refusals_are_classified(sink: tuple[Sink, int], reply: str, kind: type[Exception]) -> None:
    handler, port = sink
    handler.reply = reply
    with pytest.raises(kind):
        await relay(port).send(sms())


async def test_an_unreachable_smarthost_is_transient(sink: tuple[Sink, int]) -> None:
    with pytest.raises(TransientDelivery, match="could not reach"):
        await relay(1).send(sms())
