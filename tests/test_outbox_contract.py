"""The outbox contract, run against each backend: SQLite and a real PostgreSQL.

Then what only a shared outbox promises: two instances on one PostgreSQL
database never claim one row twice, never queue one mail twice, take back
what a dead instance held (and never resend what it may have sent), share
an account's rate, wake each other, and hand leaderships over.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest

from bridge.config import LimitsConfig
from bridge.errors import LeaseLost, LimitExceeded, OutboxError
from bridge.outbox import (
    Accepted,
    Notice,
    Outbox,
    Search,
    SqliteOutbox,
    State,
    actions,
    claims,
    intake,
    notices,
    results,
    upkeep,
    views,
)
from bridge.outbox.pg import PgOutbox, presence_name
from tests.helpers import eventually, free_port, later, sms
from tests.pg import PASSWORD, name_taken_from


@asynccontextmanager
async def opened(backend: str, tmp_path: Path, pg: str | None, instance: str = "a") -> AsyncIterator[Outbox]:
    store: Outbox
    if backend == "sqlite":
        store = SqliteOutbox(tmp_path / "outbox.sqlite3")
    else:
        assert pg is not None
        store = PgOutbox(pg, instance=instance, lease=5)
    async with store:
        await store.start_up([])
        yield store


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Outbox]:
    pg = request.getfixturevalue("pg_url") if request.param == "postgresql" else None
    async with opened(request.param, tmp_path, pg) as opened_store:
        yield opened_store


def mail(text: str = "hello", *, fingerprint: str | None = None, numbers: tuple[str, ...] = ()) -> Accepted:
    request = sms(text=text)
    if numbers:
        request = replace(request, numbers=numbers, points=len(numbers))
    return Accepted("smtp", "Ops@Corp.example", ("sms@b",), "<m@x>", "s", (request,), fingerprint=fingerprint)


async def test_a_queued_row_is_claimed_once(store: Outbox) -> None:
    done = await store.run(intake.enqueue, mail())
    first = await store.run(claims.claim, "a")
    assert first.ids == list(done.ids)
    assert first.rows[0].delivery.state == State.QUEUED  # as read; claimed in the outbox
    assert (await store.run(claims.claim, "a")).rows == []
    assert (await store.run(views.counts))[State.CLAIMED] == 1


async def test_a_resubmitted_mail_is_queued_once(store: Outbox) -> None:
    first = await store.run(intake.enqueue, mail(fingerprint="fp"))
    again = await store.run(intake.enqueue, mail(fingerprint="fp"))
    assert again.duplicate
    assert again.mail_id == first.mail_id
    assert sum((await store.run(views.counts)).values()) == 1


async def test_an_imap_message_is_taken_once(store: Outbox) -> None:
    key = ("INBOX", 4_000_000_000, 7)  # UIDVALIDITY beyond 32-bit signed
    first = await store.run(intake.enqueue, mail(), key)
    again = await store.run(intake.enqueue, mail("other"), key)
    assert again.duplicate
    assert again.mail_id == first.mail_id
    assert await store.run(intake.imap_outcome, key) == ("queued", first.mail_id)


async def test_limits_count_and_refuse_without_storing(store: Outbox) -> None:
    limits = LimitsConfig(messages_per_minute=2)
    await store.run(intake.enqueue, mail("one"), usage=[("client:a", limits)])
    await store.run(intake.enqueue, mail("two"), usage=[("client:a", limits)])
    with pytest.raises(LimitExceeded):
        await store.run(intake.enqueue, mail("three"), usage=[("client:a", limits)])
    assert sum((await store.run(views.counts)).values()) == 2


async def test_a_sent_group_is_recorded_and_its_history_kept(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    group = await store.run(claims.claim, "a")
    await store.run(claims.mark_sending, group)
    await store.run(results.sent, group, msg_id="M1", raw="OK", balance_after=9.5, confirmed=True)
    [row] = await store.run(views.search, Search(text="ops@corp.example"))  # a sender matches in any case
    assert (row.delivery.state, row.delivery.provider_msg_id, row.delivery.attempts) == (State.SENT, "M1", 1)
    assert [e.event for e in await store.run(views.history, row.id)] == ["accepted", "sent"]


async def test_a_row_whose_lease_ran_out_is_not_sent_by_its_old_holder(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    stale = await store.run(claims.claim, "a")
    # the holder stopped renewing: its lease runs out, and the row is claimed again
    await store.run(later(60, upkeep.recover), [], expired_only=True)
    fresh = await store.run(claims.claim, "a")
    assert fresh.ids == stale.ids
    assert fresh.rows[0].delivery.fence == stale.rows[0].delivery.fence + 1
    with pytest.raises(LeaseLost):
        await store.run(claims.mark_sending, stale)
    await store.run(claims.mark_sending, fresh)
    [row] = await store.run(views.search, Search())
    assert (row.delivery.state, row.delivery.attempts) == (State.SENDING, 1)


async def test_a_row_left_sending_becomes_unknown_and_is_never_resent(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    group = await store.run(claims.claim, "a")
    await store.run(claims.mark_sending, group)
    counts = await store.run(later(60, upkeep.recover), [], expired_only=True)
    assert counts == {"requeued": 0, "unknown": 1, "resent": 0}
    [row] = await store.run(views.search, Search())
    assert row.delivery.state == State.UNKNOWN
    assert row.delivery.notice == Notice.PENDING
    assert row.delivery.operator == Notice.PENDING
    assert (await store.run(claims.claim, "a")).rows == []
    # a late answer from the old holder does not turn it into something else
    await store.run(results.sent, group, msg_id="late", raw="OK", balance_after=None, confirmed=True)
    [row] = await store.run(views.search, Search())
    assert row.delivery.state == State.UNKNOWN
    assert "late answer" in [e.event for e in await store.run(views.history, row.id)]


async def test_at_least_once_accounts_queue_a_row_left_sending_again(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    await store.run(claims.mark_sending, await store.run(claims.claim, "a"))
    counts = await store.run(later(60, upkeep.recover), ["a"], expired_only=True)
    assert counts["resent"] == 1
    [row] = await store.run(views.search, Search())
    assert (row.delivery.state, row.delivery.attempts) == (State.QUEUED, 1)


async def test_a_refusal_held_for_a_session_that_never_answered_is_noticed_after_all(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    group = await store.run(claims.claim, "a")
    await store.run(claims.mark_sending, group)
    await store.run(
        results.finish, group.ids, state=State.FAILED, error="ERR008", code="ERR008", raw="", notice=Notice.HELD
    )
    assert await store.run(notices.pending_notices, held_before=time.time() - 180) == []  # the session may still answer
    [row] = await store.run(
        notices.pending_notices, held_before=time.time() + 1
    )  # it has had longer than any session waits
    assert row.delivery.notice == Notice.PENDING
    assert "notice released" in [e.event for e in await store.run(views.history, row.id)]


async def test_a_refusal_held_when_the_bridge_stopped_is_noticed_after_its_restart(store: Outbox) -> None:
    await store.run(intake.enqueue, mail())
    group = await store.run(claims.claim, "a")
    await store.run(claims.mark_sending, group)
    await store.run(
        results.finish, group.ids, state=State.FAILED, error="ERR008", code="ERR008", raw="", notice=Notice.HELD
    )
    await store.start_up([])  # as after a restart: no session of the old run is left
    [row] = await store.run(notices.pending_notices)
    assert row.delivery.notice == Notice.PENDING


async def test_the_outbox_clock_is_the_one_every_bridge_reckons_by(store: Outbox) -> None:
    # tools outside a bridge (sms-bridge queue) read it from the transaction they work in
    from_a_transaction = await store.run(lambda tx: tx.clock())
    assert abs(from_a_transaction - store.clock()) < 2
    assert abs(from_a_transaction - time.time()) < 60  # the test's database runs on this host


async def test_operator_actions_only_apply_in_their_states(store: Outbox) -> None:
    done = await store.run(intake.enqueue, mail())
    assert await store.run(actions.act, "retry", done.mail_id, "t") == []  # queued: nothing to retry
    assert await store.run(actions.act, "cancel", done.mail_id, "t") == list(done.ids)
    assert await store.run(actions.act, "cancel", done.mail_id, "t") == []
    assert await store.run(actions.act, "retry", done.mail_id, "t") == list(done.ids)
    assert (await store.run(claims.claim, "a")).ids == list(done.ids)


# -- several instances on one PostgreSQL database ------------------------------------


@asynccontextmanager
async def two(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[PgOutbox, PgOutbox]]:
    async with opened("postgresql", tmp_path, pg_url, "a") as a, opened("postgresql", tmp_path, pg_url, "b") as b:
        assert isinstance(a, PgOutbox)
        assert isinstance(b, PgOutbox)
        yield a, b


async def test_two_instances_never_claim_the_same_row(pg_url: str, tmp_path: Path) -> None:
    async with two(pg_url, tmp_path) as (a, b):
        queued = set()
        for i in range(120):
            queued.update((await a.run(intake.enqueue, mail(f"text {i}"))).ids)

        async def drain(store: PgOutbox) -> list[str]:
            got: list[str] = []
            while (group := await store.run(claims.claim, "a", combine=False)).rows:
                got += group.ids
            return got

        from_a, from_b = await asyncio.gather(drain(a), drain(b))
        assert not set(from_a) & set(from_b)
        assert set(from_a) | set(from_b) == queued
        assert from_a
        assert from_b


async def test_the_same_mail_given_to_both_at_once_is_queued_once(pg_url: str, tmp_path: Path) -> None:
    async with two(pg_url, tmp_path) as (a, b):
        for i in range(20):
            results = await asyncio.gather(
                a.run(intake.enqueue, mail(fingerprint=f"fp{i}")), b.run(intake.enqueue, mail(fingerprint=f"fp{i}"))
            )
            assert sorted(r.duplicate for r in results) == [False, True]
            assert results[0].mail_id == results[1].mail_id
        assert (await a.run(views.counts))[State.QUEUED] == 20


async def test_the_same_imap_message_taken_by_both_at_once_is_queued_once(pg_url: str, tmp_path: Path) -> None:
    """As when a mailbox's leadership changes hands while the old holder finishes a message."""
    async with two(pg_url, tmp_path) as (a, b):
        for uid in range(1, 21):
            key = ("INBOX", 7, uid)
            results = await asyncio.gather(
                a.run(intake.enqueue, mail(f"u{uid}"), key), b.run(intake.enqueue, mail(f"u{uid}"), key)
            )
            assert sorted(r.duplicate for r in results) == [False, True]
        assert (await a.run(views.counts))[State.QUEUED] == 20


async def test_limits_hold_over_both_instances(pg_url: str, tmp_path: Path) -> None:
    limits = LimitsConfig(messages_per_hour=10)

    async def take(store: PgOutbox, i: int) -> bool:
        try:
            await store.run(intake.enqueue, mail(f"m{i}"), usage=[("client:c", limits)])
        except LimitExceeded:
            return False
        return True

    async with two(pg_url, tmp_path) as (a, b):
        taken = await asyncio.gather(*(take(a if i % 2 else b, i) for i in range(30)))
        assert sum(taken) == 10
        assert (await a.run(views.counts))[State.QUEUED] == 10


async def test_the_rate_is_one_queue_of_slots_for_every_instance(pg_url: str, tmp_path: Path) -> None:
    async with two(pg_url, tmp_path) as (a, b):
        waits = await asyncio.gather(*(s.rate_slot("kwt", 0.25) for s in (a, b, a, b, a, b)))
    # six slots 0.25 s apart, whichever instance took each: the last is about 1.25 s away
    assert sorted(round(w / 0.25) for w in waits) == [0, 1, 2, 3, 4, 5]


async def test_a_mail_kept_for_a_waiting_session_is_due_to_the_other_instance_when_the_keeping_ends(
    pg_url: str, tmp_path: Path
) -> None:
    async with two(pg_url, tmp_path) as (a, b):
        await a.run(intake.enqueue, replace(mail(), keep=20))
        assert (await b.run(claims.claim, "a")).rows == []
        due_to_b = await b.run(claims.next_due, "a")
        assert due_to_b is not None
        assert 15 < due_to_b - time.time() < 25  # not now: b would ask again and again
        due_to_a = await a.run(claims.next_due, "a")
        assert due_to_a is not None
        assert due_to_a <= time.time()
        assert len((await a.run(claims.claim, "a")).rows) == 1


async def test_what_one_instance_queues_wakes_the_other(pg_url: str, tmp_path: Path) -> None:
    async with two(pg_url, tmp_path) as (a, b):
        heard: list[str | None] = []
        b.listen(heard.append, lambda: None)
        await eventually(b._present.is_set, "b listening")
        heard.clear()
        await a.run(intake.enqueue, mail())
        await eventually(lambda: "a" in heard, "b hearing of a's mail", within=5)


async def test_a_second_bridge_with_the_same_instance_name_is_refused(pg_url: str, tmp_path: Path) -> None:
    async with opened("postgresql", tmp_path, pg_url, "same"):
        with pytest.raises(OutboxError, match="another running bridge is instance 'same'"):
            async with opened("postgresql", tmp_path, pg_url, "same"):
                pass


async def test_bridges_on_one_host_without_a_name_take_the_host_s_name_then_the_next_free_one(
    pg_url: str, tmp_path: Path
) -> None:
    host = socket.gethostname()
    async with PgOutbox(pg_url) as first, PgOutbox(pg_url) as second:
        assert (first.instance, second.instance) == (host, f"{host}-2")
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            cur = await conn.execute(
                "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE '%presence'"
            )
            names = sorted(r[0] for r in await cur.fetchall())
        assert names == [presence_name(host), presence_name(f"{host}-2")]  # as operators see them
    async with PgOutbox(pg_url) as again:  # both gone: the host's own name is free again
        assert again.instance == host


async def test_a_leadership_passes_to_the_other_instance_when_its_holder_stops(pg_url: str, tmp_path: Path) -> None:
    async with opened("postgresql", tmp_path, pg_url, "b") as b:
        assert isinstance(b, PgOutbox)
        async with opened("postgresql", tmp_path, pg_url, "a") as a:
            assert isinstance(a, PgOutbox)
            held_by_a = a.leadership("imap box")
            await asyncio.wait_for(held_by_a.held.wait(), 10)
            sought_by_b = b.leadership("imap box")
            ticks = b.ticks
            await eventually(lambda: b.ticks >= ticks + 2, "b trying for the leadership twice")
            assert not sought_by_b.held.is_set()
        await asyncio.wait_for(sought_by_b.held.wait(), 10)


async def test_leases_are_reckoned_on_the_database_clock_whatever_a_host_s_clock_says(
    pg_url: str, tmp_path: Path
) -> None:
    async with opened("postgresql", tmp_path, pg_url, "b") as b:
        assert isinstance(b, PgOutbox)
        behind = PgOutbox(pg_url, instance="a", lease=5)
        behind._host_clock = lambda: time.time() - 3600  # a's host is an hour behind
        async with behind as a:
            await a.start_up(at_least_once=[])
            await a.run(intake.enqueue, mail())
            group = await a.run(claims.claim, "a")
            lease_until = group.rows[0].delivery.lease_until
            assert lease_until is not None
            assert abs(lease_until - (time.time() + 5)) < 2
            beats = b.beats
            await eventually(lambda: b.beats >= beats + 2, "b's heartbeat, twice")
            await a.run(claims.mark_sending, group)  # b did not take the row back: a's lease had not run out


async def test_a_bridge_whose_name_was_taken_while_it_had_lost_the_database_stops(pg_url: str, tmp_path: Path) -> None:
    async with opened("postgresql", tmp_path, pg_url, "x") as a:
        assert isinstance(a, PgOutbox)
        async with name_taken_from(pg_url, "x"):  # a's session is cut, and a bridge named "x" starts meanwhile
            await asyncio.wait_for(a.displaced.wait(), 20)
        assert not a.leadership("notices").held.is_set()


def test_an_error_echoing_the_password_is_masked_however_it_is_written() -> None:
    from bridge.outbox.pg import redact

    url = "postgresql://bridge:p%40ss-w0rd@db:5432/sms"
    echoed = "invalid percent-encoded token: p%40ss-w0rd; decoded p@ss-w0rd; in postgresql://bridge:p%40ss-w0rd@db"
    masked = redact(echoed, url)
    assert "p%40ss-w0rd" not in masked
    assert "p@ss-w0rd" not in masked
    assert "postgresql://bridge:***@db" in masked


async def test_the_database_password_is_never_in_repr_or_errors(pg_url: str, tmp_path: Path) -> None:
    nothing_there = re.sub(r":\d+/", f":{free_port()}/", pg_url)  # the same URL, a port with no server
    store = PgOutbox(nothing_there, instance="x", connect_timeout=1)
    assert PASSWORD not in repr(store)
    assert PASSWORD not in store.describe()
    with pytest.raises(OutboxError) as caught:
        async with store:
            pass
    assert PASSWORD not in str(caught.value)
