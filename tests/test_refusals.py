"""Refusals made visible: counted per address and reason on both backends, logged once a
minute, recorded once a second, whatever the flood."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bridge.ingress.refusals import RefusalLog
from bridge.outbox import Outbox, Refusal, intake, upkeep, views
from bridge.outbox.intake import MAX_REFUSALS
from tests.test_outbox_contract import opened


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outbox]:
    pg = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    async with opened(request.param, tmp_path, pg) as opened_store:
        yield opened_store


def refusal(address: str = "nobody@a.test", reason: str = "no such alias", times: int = 1) -> Refusal:
    return Refusal("smtp", "rcpt", "127.0.0.1:5000", "local", "zabbix@corp", address, reason, times=times)


async def test_repeats_of_one_address_and_reason_are_one_row_counted(store: Outbox) -> None:
    await store.run(intake.refused, refusal(times=2))
    await store.run(intake.refused, refusal(times=3))
    await store.run(intake.refused, refusal(address="other@a.test"))
    rows = await store.run(views.refusals)
    assert [(r.address, r.times) for r in rows] == [("other@a.test", 1), ("nobody@a.test", 5)]
    assert rows[1].first_at <= rows[1].last_at


async def test_refusals_are_pruned_by_age_and_kept_to_a_bound(store: Outbox) -> None:
    for i in range(MAX_REFUSALS + 5):
        await store.run(intake.refused, refusal(address=f"n{i}@a.test"))
    await store.run(upkeep.prune, store.clock() - 3600)  # none is that old: only the bound applies
    assert len(await store.run(views.refusals, limit=10_000)) == MAX_REFUSALS
    await store.run(upkeep.prune, store.clock() + 1)
    assert await store.run(views.refusals) == []


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_flood_is_one_log_line_a_minute_and_every_refusal_counted(
    store: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    refusals = RefusalLog(store, clock=clock)
    kwargs = {"via": "smtp", "stage": "rcpt", "peer": "p", "client": "local", "mail_from": "z@corp"}
    with caplog.at_level(logging.WARNING, logger="bridge.refused"):
        for step in range(300):  # one refusal every 0.5 s for 150 s
            clock.now = 1000.0 + step * 0.5
            await refusals.refused(address="nobody@a.test", reason="no such alias", **kwargs)  # type: ignore[arg-type]
        clock.now += 1.0
        await refusals.refused(address="nobody@a.test", reason="no such alias", **kwargs)  # type: ignore[arg-type]
    lines = [r.getMessage() for r in caplog.records if r.name == "bridge.refused"]
    assert len(lines) == 3  # at 0 s, 60 s and 120 s
    assert "more like it" not in lines[0]
    assert "(119 more like it since the last line)" in lines[1]
    (row,) = await store.run(views.refusals)
    assert row.times == 301
