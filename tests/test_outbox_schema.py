"""The outbox's schema versions: an outbox written by an older release is migrated and keeps working."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bridge.outbox import Notice, SqliteOutbox, State, connect, views
from bridge.outbox.schema import LATEST, MIGRATIONS, migrate, version
from tests.helpers import eventually, make_config, running_bridge, running_simulator

FIXTURE = Path(__file__).parent / "data" / "outbox-v0.sql"


def old_outbox(path: Path) -> Path:
    """An outbox as sms-bridge 0.1.0 wrote it (no schema version): one SMS sent, one queued."""
    conn = sqlite3.connect(path)
    conn.executescript(FIXTURE.read_text(encoding="utf-8"))
    conn.close()
    return path


def test_a_new_outbox_is_at_the_latest_version(tmp_path: Path) -> None:
    conn = connect(tmp_path / "new.sqlite3")
    assert version(conn) == LATEST == len(MIGRATIONS)


def test_an_unversioned_outbox_is_adopted_and_its_rows_read(tmp_path: Path) -> None:
    conn = connect(old_outbox(tmp_path / "old.sqlite3"))
    assert version(conn) == LATEST
    rows = {r.request.text: r for r in views.listing(conn)}
    sent, queued = rows["Problem: disk full on db01"], rows["Invoice 42 is due"]
    assert (sent.delivery.state, sent.delivery.provider_msg_id, sent.delivery.points_charged) == (
        State.SENT,
        "oldmsgid",
        2,
    )
    assert sent.request.numbers == ("96597119440", "96566074414")
    assert sent.origin.message_id == "<old-1@corp.example>"
    assert (queued.delivery.state, queued.delivery.notice) == (State.QUEUED, Notice.NONE)
    assert views.rows_of(conn, queued.id) == [queued]


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    conn = connect(tmp_path / "o.sqlite3")
    assert migrate(conn) == (LATEST, LATEST)


def test_an_outbox_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    conn = connect(tmp_path / "o.sqlite3")
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    with pytest.raises(sqlite3.DatabaseError, match="newer release"):
        migrate(conn)
    assert version(conn) == LATEST + 1


async def test_the_outbox_opens_an_old_file(tmp_path: Path) -> None:
    async with SqliteOutbox(old_outbox(tmp_path / "old.sqlite3")) as box:
        counts = await box.run(views.counts)
    assert (counts["sent"], counts["queued"]) == (1, 1)


async def test_a_message_queued_before_the_upgrade_is_delivered_after_it(tmp_path: Path) -> None:
    async with running_simulator() as (sim, url):
        config = make_config(tmp_path, url)
        old_outbox(Path(config.queue.path))
        async with running_bridge(config) as bridge:
            await eventually(lambda: len(sim.delivered) == 1, "the queued SMS to be sent")
            await eventually(lambda: all(r.delivery.state == State.SENT for r in bridge.rows()), "both rows to be sent")
    assert [(d.numbers, d.text) for d in sim.delivered] == [(["96597119440"], "Invoice 42 is due")]
