"""The KwtSMS HTTP provider against the simulator over real HTTP on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from bridge.errors import AmbiguousDelivery, DeliveryError, PermanentDelivery, TransientDelivery
from bridge.providers import RateLimiter
from bridge.providers.kwtsms_http import KwtSmsHttp
from bridge.simulator import SimAccount
from tests.helpers import SIM_PASSWORD, account, running_simulator, sim_accounts, sms


async def send_once(url: str, request: Any = None, **acct: Any) -> Any:
    async with httpx.AsyncClient() as client:
        provider = KwtSmsHttp("kwt", account("kwtsms-http", url, **acct), client, RateLimiter(50))
        return await provider.send(request or sms())


@pytest.mark.parametrize("reply_format", ["json", "text"])
async def test_v41_posts_the_documented_fields_and_reads_ok(reply_format: str) -> None:
    async with running_simulator() as (sim, url):
        sent = await send_once(url, sms("Meet me", ("96597119440", "96566074414")), reply_format=reply_format)
    assert sent.numbers == 2
    assert sent.points == 2
    assert sent.balance_after == 998
    assert len(sent.message_id) == 32
    (req,) = sim.requests
    assert (req["method"], req["api"], req["command"]) == ("POST", "v4.1", "send")
    assert req["params"] == {
        "username": "corp",
        "password": "***",
        "sender": "KWT-SMS",
        "mobile": "96597119440,96566074414",
        "message": "Meet me",
        "test": "0",
    }
    assert sim.delivered[0].text == "Meet me"


async def test_test_mode_sends_test_1() -> None:
    async with running_simulator() as (sim, url):
        await send_once(url, test=True)
    assert sim.requests[0]["params"]["test"] == "1"
    assert sim.delivered[0].test is True


@pytest.mark.parametrize(("lang", "text"), [(2, "تنبيه: انقطاع الكهرباء"), (3, "مرحبا بكم"), (4, "Ünïcødé ő")])
async def test_v099_gets_with_lang_and_the_right_charset(lang: int, text: str) -> None:
    async with running_simulator() as (sim, url):
        sent = await send_once(url, sms(text, lang=lang), api="0.99")
    assert sent.numbers == 1
    (req,) = sim.requests
    assert (req["method"], req["api"]) == ("GET", "v0.99")
    assert req["params"]["lang"] == str(lang)
    assert sim.delivered[0].text == text


async def test_v099_sends_english_as_lang_1_with_plus_for_spaces() -> None:
    async with running_simulator() as (sim, url):
        await send_once(url, sms("a b+c"), api="0.99")
    assert sim.requests[0]["params"]["lang"] == "1"
    assert sim.delivered[0].text == "a b+c"


ERROR_CASES: list[tuple[str, dict[str, Any], Any, str, type[DeliveryError]]] = [
    ("wrong password", {"password": "nope"}, sms(), "ERR003", PermanentDelivery),
    ("missing username", {"username": ""}, sms(), "ERR002", PermanentDelivery),
    ("unknown sender", {}, sms(sender="kwt-sms"), "ERR008", PermanentDelivery),
    ("empty message", {}, sms(" "), "ERR009", PermanentDelivery),
    ("plus in number", {}, sms(numbers=("+96597119440",)), "ERR025", PermanentDelivery),
    ("no valid number", {}, sms(numbers=("1234",)), "ERR006", PermanentDelivery),
    ("country not active", {}, sms(numbers=("966501234567",)), "ERR026", PermanentDelivery),
    ("html", {}, sms("<b>hi</b>"), "ERR027", PermanentDelivery),
    ("too many pages", {}, sms("x" * 153 * 7), "ERR012", PermanentDelivery),
]


@pytest.mark.parametrize(("case", "acct", "request_", "code", "kind"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_error_replies_are_classified(
    case: str, acct: dict[str, Any], request_: Any, code: str, kind: type[DeliveryError]
) -> None:
    async with running_simulator() as (sim, url):
        with pytest.raises(kind) as caught:
            await send_once(url, request_, **acct)
    assert caught.value.code == code
    assert caught.value.reason
    assert not sim.delivered
    assert SIM_PASSWORD not in str(caught.value) + caught.value.raw


@pytest.mark.parametrize(("balance", "code"), [(0, "ERR010"), (1, "ERR011")])
async def test_low_balance_is_permanent(balance: float, code: str) -> None:
    async with running_simulator(accounts=sim_accounts(balance=balance)) as (_, url):
        with pytest.raises(PermanentDelivery) as caught:
            await send_once(url, sms(numbers=("96597119440", "96566074414")))
    assert caught.value.code == code


async def test_same_number_within_15_seconds_is_transient_with_a_delay() -> None:
    async with running_simulator(repeat_window=15) as (sim, url):
        await send_once(url)
        with pytest.raises(TransientDelivery) as caught:
            await send_once(url)
    assert (caught.value.code, caught.value.retry_after) == ("ERR028", 15)
    assert len(sim.delivered) == 1


async def test_an_ip_above_the_rate_is_locked_out_and_our_limiter_prevents_it() -> None:
    async with running_simulator(max_rate=5) as (sim, url), httpx.AsyncClient() as client:
        fast = KwtSmsHttp("kwt", account("kwtsms-http", url), client, RateLimiter(50))
        codes = []
        for i in range(8):
            try:
                await fast.send(sms(numbers=(f"9655000000{i}",)))
            except PermanentDelivery as exc:
                codes.append(exc.code)
        assert "ERR024" in codes
    async with running_simulator(max_rate=5) as (sim, url), httpx.AsyncClient() as client:
        paced = KwtSmsHttp("kwt", account("kwtsms-http", url), client, RateLimiter(4))
        for i in range(8):
            await paced.send(sms(numbers=(f"9655000000{i}",)))
        assert len(sim.delivered) == 8


async def test_balance_and_sender_ids_in_both_formats() -> None:
    async with running_simulator(max_rate=0) as (_, url), httpx.AsyncClient() as client:
        for fmt in ("json", "text"):
            provider = KwtSmsHttp("kwt", account("kwtsms-http", url, reply_format=fmt), client, RateLimiter(50))
            balance = await provider.balance()
            assert (balance.available, balance.purchased) == (1000, 1000)
            assert await provider.sender_ids() == ["KWT-SMS", "MY-COMPANY"]
        old = KwtSmsHttp("kwt", account("kwtsms-http", url, api="0.99"), client, RateLimiter(50))
        assert (await old.balance()).available == 1000
        bad = KwtSmsHttp("kwt", account("kwtsms-http", url, password="nope"), client, RateLimiter(50))
        with pytest.raises(PermanentDelivery, match="wrong KwtSMS username or password"):
            await bad.balance()


async def test_a_dropped_connection_after_sending_is_ambiguous_and_was_sent() -> None:
    async with running_simulator() as (sim, url):
        sim.arm("drop")
        with pytest.raises(AmbiguousDelivery):
            await send_once(url)
    assert len(sim.delivered) == 1


async def test_a_slow_reply_past_the_timeout_is_ambiguous() -> None:
    async with running_simulator() as (sim, url):
        sim.arm("slow", delay=3)
        with pytest.raises(AmbiguousDelivery):
            await send_once(url, timeout=0.5)
    assert len(sim.delivered) == 1


async def test_http_500_is_ambiguous() -> None:
    async with running_simulator() as (sim, url):
        sim.arm("http500")
        with pytest.raises(AmbiguousDelivery, match="HTTP 500"):
            await send_once(url)


async def test_nothing_listening_is_transient() -> None:
    async with running_simulator() as (_, url):
        pass  # stopped: the port is closed now
    with pytest.raises(TransientDelivery, match="could not reach"):
        await send_once(url)


async def test_passthrough_credentials_are_used_for_the_call() -> None:
    from bridge.core.model import Credentials

    accounts = sim_accounts()
    accounts["kwtsms"].append(SimAccount("other", "other-pw", senders=["KWT-SMS"]))
    async with running_simulator(accounts=accounts) as (sim, url):
        await send_once(url, sms(credentials=Credentials("other", "other-pw")))
    assert sim.delivered[0].account == "other"


# -- reply parsing, one provider's replies at a time (MockTransport) -----------


def mock_provider(body: str, status: int = 200, **acct: Any) -> KwtSmsHttp:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=body))
    client = httpx.AsyncClient(transport=transport)
    return KwtSmsHttp("kwt", account("kwtsms-http", "http://kwtsms.invalid", **acct), client, RateLimiter(1000))


@pytest.mark.parametrize(
    ("body", "status", "kind", "code"),
    [
        ('{"result":"ERROR","code":"ERR013","description":"queue full"}', 200, TransientDelivery, "ERR013"),
        ('{"result":"ERROR","code":"ERR001","description":"off"}', 200, TransientDelivery, "ERR001"),
        ("ERR007", 200, PermanentDelivery, "ERR007"),
        ("ERR031: bad language", 200, PermanentDelivery, "ERR031"),
        ("ERR032", 200, PermanentDelivery, "ERR032"),
        ("<html>Error ERR004 no api access</html>", 403, PermanentDelivery, "ERR004"),
        ("ERR005", 401, PermanentDelivery, "ERR005"),
        ("ERR099 something new", 200, PermanentDelivery, "ERR099"),
        ("<html>maintenance</html>", 503, TransientDelivery, ""),
        ("<html>oops</html>", 502, AmbiguousDelivery, ""),
        ("<html>not found</html>", 404, PermanentDelivery, ""),
        ("Thank you", 200, AmbiguousDelivery, ""),
        ("", 200, AmbiguousDelivery, ""),
    ],
)
async def test_reply_classification(body: str, status: int, kind: type[DeliveryError], code: str) -> None:
    with pytest.raises(kind) as caught:
        await mock_provider(body, status).send(sms())
    assert caught.value.code == code


async def test_text_ok_reply_fields_are_read() -> None:
    sent = await mock_provider("OK:f4c841adee210f31307633ceaebff2ec:1:1:180:1242667894").send(sms())
    assert (sent.message_id, sent.numbers, sent.points, sent.balance_after) == (
        "f4c841adee210f31307633ceaebff2ec",
        1,
        1,
        180,
    )
    assert sent.raw.startswith("OK:")


async def test_more_than_200_numbers_in_one_call_is_refused_before_sending() -> None:
    numbers = tuple(f"9655{i:07d}" for i in range(201))
    with pytest.raises(PermanentDelivery, match="split"):
        await mock_provider("OK:x:1:1:1:1").send(sms(numbers=numbers))
