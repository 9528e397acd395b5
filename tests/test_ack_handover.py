"""``ack: delivered`` hand-over between the dispatcher and a waiting SMTP session."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from bridge.runtime.outcomes import Outcome, Outcomes


def row(ident: str, mail_id: str = "m1") -> Any:
    return SimpleNamespace(id=ident, mail_id=mail_id)


async def test_a_session_hears_every_outcome_once_all_are_reported() -> None:
    outcomes = Outcomes()
    outcomes.watch("m1", ("a", "b"))
    assert outcomes.expects([row("a")])
    assert not outcomes.expects([row("x", "m2")])
    assert outcomes.report([row("a")], Outcome("failed", "ERR008")) == []
    assert outcomes.report([row("b")], Outcome("sent", msg_id="M")) == []
    told = await outcomes.outcome("m1", within=30)
    assert told.complete
    assert {i: o.state for i, o in told.outcomes.items()} == {"a": "failed", "b": "sent"}


async def test_a_session_that_stops_waiting_owns_what_it_heard_and_nothing_after() -> None:
    outcomes = Outcomes()
    outcomes.watch("m1", ("a", "b"))
    outcomes.report([row("a")], Outcome("failed", "ERR008"))
    told = await outcomes.outcome("m1", within=0.05)  # "b" never comes in time
    assert not told.complete
    assert list(told.outcomes) == ["a"]
    late = [row("b")]
    assert not outcomes.expects(late)
    assert outcomes.report(late, Outcome("failed", "ERR008")) == late  # the dispatcher's to tell


async def test_rows_of_other_mails_in_one_group_are_left_to_the_dispatcher() -> None:
    outcomes = Outcomes()
    outcomes.watch("m1", ("a",))
    group = [row("a"), row("c", "m2")]
    assert outcomes.expects(group)
    assert [r.id for r in outcomes.report(group, Outcome("failed"))] == ["c"]
