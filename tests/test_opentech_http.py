"""The OpenTech HTTP provider against the simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bridge.errors import AmbiguousDelivery, PermanentDelivery
from bridge.providers import RateLimiter
from bridge.providers.opentech_http import OpenTechHttp, ucs2_hex
from tests.helpers import account, running_simulator, sms


async def send_once(url: str, request: Any = None, **acct: Any) -> Any:
    async with httpx.AsyncClient() as client:
        provider = OpenTechHttp("ot", account("opentech-http", url, **acct), client, RateLimiter(50))
        return await provider.send(request or sms(sender="OpenTech"))


def test_ucs2_hex_matches_the_documented_example() -> None:
    assert ucs2_hex("TesT" + "ت") == "0054006500730054062A"


def test_characters_outside_the_bmp_cannot_be_expressed() -> None:
    with pytest.raises(PermanentDelivery, match="Basic Multilingual Plane"):
        ucs2_hex("a😀")


async def test_english_goes_as_plain_text_without_dcs() -> None:
    async with running_simulator() as (sim, url):
        sent = await send_once(url, sms("Server down", ("96597119440", "96566074414"), sender="OpenTech"))
    assert sent.numbers == 2
    (req,) = sim.requests
    assert req["method"] == "GET"
    assert req["command"] == "sms_send_bulk.php"
    assert req["params"] == {
        "uid": "77",
        "username": "corp",
        "password": "***",
        "sender": "OpenTech",
        "recipient": "96597119440,96566074414",
        "msg": "Server down",
    }
    assert sim.delivered[0].text == "Server down"


async def test_arabic_goes_as_ucs2_hex_with_dcs_1() -> None:
    text = "تجربة Test"
    async with running_simulator() as (sim, url):
        await send_once(url, sms(text, sender="OpenTech"))
    params = sim.requests[0]["params"]
    assert params["dcs"] == "1"
    assert params["msg"] == ucs2_hex(text)
    assert sim.delivered[0].text == text


@pytest.mark.parametrize(
    ("acct", "request_", "words"),
    [
        ({"password": "wrong"}, None, "wrong OpenTech username or password"),
        ({"username": "stranger"}, None, "does not know this username"),
        ({"uid": "1"}, None, "not set up as a customer"),
        ({}, sms(sender="NotActive"), "sender ID is unknown or not yet activated"),
    ],
)
async def test_the_four_documented_errors_are_permanent(acct: dict[str, Any], request_: Any, words: str) -> None:
    async with running_simulator() as (sim, url):
        with pytest.raises(PermanentDelivery, match=words):
            await send_once(url, request_, **acct)
    assert not sim.delivered


async def test_a_dropped_connection_after_sending_is_ambiguous() -> None:
    async with running_simulator() as (sim, url):
        sim.arm("drop")
        with pytest.raises(AmbiguousDelivery):
            await send_once(url)
    assert len(sim.delivered) == 1


async def test_balance_reads_a_number() -> None:
    async with running_simulator() as (_, url), httpx.AsyncClient() as client:
        provider = OpenTechHttp("ot", account("opentech-http", url), client, RateLimiter(50))
        assert (await provider.balance()).available == 1000


@pytest.mark.parametrize("body", ["", "<html>Welcome</html>", "Error 17", "Invalid number"])
async def test_an_unknown_reply_is_ambiguous_not_success(body: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    async with httpx.AsyncClient(transport=transport) as client:
        provider = OpenTechHttp("ot", account("opentech-http", "http://ot.invalid"), client, RateLimiter(1000))
        with pytest.raises(AmbiguousDelivery):
            await provider.send(sms(sender="OpenTech"))


@pytest.mark.parametrize("body", ["OK:123abc", "Message Sent Successfully", "SUCCESS", "123456"])
async def test_the_default_success_pattern_admits_likely_success_replies(body: str) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text=body))
    async with httpx.AsyncClient(transport=transport) as client:
        provider = OpenTechHttp("ot", account("opentech-http", "http://ot.invalid"), client, RateLimiter(1000))
        sent = await provider.send(sms(sender="OpenTech"))
    assert sent.numbers == 1


async def test_the_success_pattern_is_configurable() -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(200, text="ACK-42"))
    async with httpx.AsyncClient(transport=transport) as client:
        strict = OpenTechHttp("ot", account("opentech-http", "http://ot.invalid"), client, RateLimiter(1000))
        with pytest.raises(AmbiguousDelivery):
            await strict.send(sms(sender="OpenTech"))
        custom = OpenTechHttp(
            "ot", account("opentech-http", "http://ot.invalid", success_pattern="^ACK-"), client, RateLimiter(1000)
        )
        assert (await custom.send(sms(sender="OpenTech"))).numbers == 1
