"""The alert webhook: Alertmanager's and Grafana's real payloads over HTTP, into the same outbox."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.config import ConfigError, load_text
from bridge.outbox import State
from tests.helpers import (
    RunningBridge,
    config_data,
    eventually,
    free_port,
    running_bridge,
    running_simulator,
)

PAYLOADS = Path(__file__).parent / "webhook"
TOKEN = "webhook-token-canary-0123456789"
K1, K2 = "96597119440", "96566074414"


def payload(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((PAYLOADS / f"{name}.json").read_text())
    return result


@asynccontextmanager
async def webhook_bridge(tmp_path: Path, **extra: Any) -> AsyncIterator[tuple[Any, RunningBridge, str]]:
    admin = free_port()
    async with running_simulator() as (sim, url):
        data = config_data(tmp_path, url, extra={"admin": {"listen": f"127.0.0.1:{admin}"}})
        data["clients"] = {
            "local": {"networks": ["127.0.0.0/8"]},
            "prometheus": {"token": TOKEN, "routes": ["alerts"]} | extra,
        }
        config = load_text(json.dumps(data), env={})
        async with running_bridge(config) as bridge:
            yield sim, bridge, f"http://127.0.0.1:{admin}"


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_alertmanager_payload_is_queued_and_sent_after_a_200(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with webhook_bridge(tmp_path) as (sim, bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/alerts/alerts?to=oncall", json=payload("alertmanager"), headers=auth())
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert (body["status"], body["alerts"]) == ("queued", 2)
        (row,) = bridge.rows(body["id"])  # committed before the 200
        assert row.origin.via == "webhook"
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
    (sms,) = sim.delivered
    assert sms.numbers == [K1, K2]
    assert sms.text.startswith("FIRING critical 2 alerts:")
    assert "db01" in sms.text
    assert "db02" in sms.text
    assert "http" not in sms.text
    assert TOKEN not in caplog.text


async def test_grafana_payload_is_read_as_a_resolution(tmp_path: Path) -> None:
    async with webhook_bridge(tmp_path) as (sim, bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/alerts/alerts?to={K1}", json=payload("grafana"), headers=auth())
        assert reply.status_code == 200, reply.text
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
        await eventually(lambda: bridge.rows()[0].delivery.state == State.SENT, "the sent state")
    assert sim.delivered[0].text == "RESOLVED warning api01: High API latency - p99 latency above 2 s for 5 minutes"
    assert sim.delivered[0].encoding == "gsm7"


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no bearer token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "no bearer token"),
        (auth("a-wrong-token-of-some-length"), "not one this bridge knows"),
    ],
)
async def test_a_missing_or_wrong_token_gets_401_and_stores_nothing(
    tmp_path: Path, headers: dict[str, str], why: str
) -> None:
    async with webhook_bridge(tmp_path) as (_, bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/alerts/alerts?to=oncall", json=payload("alertmanager"), headers=headers)
        assert bridge.rows() == []
    assert reply.status_code == 401
    assert why in reply.json()["error"]
    assert reply.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("path", "body", "status", "why"),
    [
        ("/alerts/alerts?to=oncall", b"{not json", 400, "not JSON"),
        ("/alerts/alerts?to=oncall", b'{"alerts": "x"}', 422, "alerts: missing, or not a list"),
        ("/alerts/alerts?to=oncall", b'{"alerts": []}', 422, "the list is empty"),
        ("/alerts/alerts?to=oncall", b'{"alerts": [{"labels": {}}]}', 422, "alerts.0.labels: no alertname"),
        ("/alerts/alerts", b'{"alerts": []}', 400, "to: missing"),
        ("/alerts/nosuch?to=oncall", b"{}", 404, "no route named 'nosuch'"),
        ("/alerts/body?to=oncall", b"{}", 400, "does not take alerts"),
        ("/alerts/alerts?to=12", None, 422, "recipient"),
    ],
)
async def test_bad_requests_get_a_4xx_naming_the_problem_and_store_nothing(
    tmp_path: Path, path: str, body: bytes | None, status: int, why: str
) -> None:
    content = body if body is not None else json.dumps(payload("alertmanager")).encode()
    async with webhook_bridge(tmp_path) as (_, bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}{path}", content=content, headers=auth())
        assert bridge.rows() == []
    assert reply.status_code == status, reply.text
    assert why in reply.json()["error"]


async def test_a_route_the_client_may_not_use_gets_403(tmp_path: Path) -> None:
    async with webhook_bridge(tmp_path, routes=["body"]) as (_, bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/alerts/alerts?to=oncall", json=payload("alertmanager"), headers=auth())
        assert bridge.rows() == []
    assert reply.status_code == 403


def test_a_short_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"clients.hook.token: is too short"):
        load_text(
            json.dumps(
                {
                    "accounts": {"a": {"provider": "opentech-http", "uid": "1", "username": "u", "password": "p"}},
                    "routes": {"r": {"format": "address", "account": "a", "domain": "x.test"}},
                    "clients": {"hook": {"token": "short"}},
                }
            ),
            env={},
        )


def test_a_token_client_is_not_an_smtp_client_by_network() -> None:
    from bridge.core.access import Peer, find_client

    config = load_text(
        json.dumps(
            {
                "accounts": {"a": {"provider": "opentech-http", "uid": "1", "username": "u", "password": "p"}},
                "routes": {"r": {"format": "address", "account": "a", "domain": "x.test"}},
                "clients": {"hook": {"token": TOKEN, "networks": ["127.0.0.0/8"]}},
            }
        ),
        env={},
    )
    assert find_client(config, Peer(ip="127.0.0.1")) is None


async def test_nul_characters_in_a_payload_are_removed_on_either_backend(tmp_path: Path, backend: str) -> None:
    """PostgreSQL text cannot hold NUL: a payload with ``\\u0000`` is sent without it, not refused."""
    body = payload("grafana")
    body["alerts"][0]["annotations"]["summary"] = "p99 latency\u0000 above 2 s"
    async with webhook_bridge(tmp_path) as (sim, _bridge, base), httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/alerts/alerts?to={K1}", json=body, headers=auth())
        assert reply.status_code == 200, reply.text
        await eventually(lambda: len(sim.delivered) == 1, "the SMS")
    assert "\x00" not in sim.delivered[0].text
    assert "p99 latency above 2 s" in sim.delivered[0].text
