"""The KwtSMS body format, line by line."""

from __future__ import annotations

from bridge.core.formats.kwtsms import parse


def test_pairs_on_one_line_as_the_v099_seed_prints_them() -> None:
    draft = parse("username:u1 password:p1 sender:SenderID\nmobile:96597119220\ntext: hi there", "r")
    assert (draft.username, draft.password, draft.sender) == ("u1", "p1", "SenderID")
    assert draft.numbers == ("96597119220",)
    assert draft.text == "hi there"


def test_keys_are_case_insensitive_and_message_is_text() -> None:
    draft = parse("MOBILE:96597119440\nMessage:Hello", "r")
    assert draft.text == "Hello"
    assert draft.numbers == ("96597119440",)


def test_text_runs_to_the_end_of_its_line_even_over_key_lookalikes() -> None:
    draft = parse("mobile:96597119440 text:call me: sender:X now", "r")
    assert draft.text == "call me: sender:X now"
    assert draft.sender is None


def test_plus_means_space_unless_turned_off() -> None:
    assert parse("text:Meet+me", "r").text == "Meet me"
    assert parse("text:1+1=2", "r", plus_as_space=False).text == "1+1=2"
    assert parse("sender:MY+CO\ntext:x", "r").sender == "MY CO"


def test_mobile_list_accepts_separators_and_spacing() -> None:
    draft = parse("mobile: +965 9711 9440 , 0096566074414;٩٧١١٩٤٤٠،51234567\ntext:x", "r")
    assert draft.numbers == ("+965 9711 9440", "0096566074414", "٩٧١١٩٤٤٠", "51234567")


def test_a_repeated_key_is_an_error_naming_both_lines() -> None:
    draft = parse("text:a\nmobile:1\nmessage:b", "r")
    assert [(p.field, p.message) for p in draft.problems] == [("text", "is given twice (lines 1 and 3); give it once")]


def test_signatures_quotes_and_other_lines_are_warnings_not_directives() -> None:
    body = "Hi team,\nmobile:96597119440\ntext:ok\n> text:quoted\n\n-- \nsender:NOPE"
    draft = parse(body, "r")
    assert draft.text == "ok"
    assert draft.sender is None
    assert not draft.problems
    assert any("signature" in w for w in draft.warnings)
    assert any("lines 1, 4" in w for w in draft.warnings)


def test_a_misspelled_key_gets_a_did_you_mean() -> None:
    draft = parse("mobil:96597119440\ntext:x", "r")
    assert draft.numbers == ()
    assert any("did you mean 'mobile'" in w for w in draft.warnings)


def test_the_password_never_shows_in_repr() -> None:
    draft = parse("password:hunter2-canary\ntext:x", "r")
    assert "hunter2-canary" not in repr(draft)
