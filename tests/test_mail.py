"""Reading real-world mail: charsets, MIME structure, HTML; never raising."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.core.htmltext import html_to_text
from bridge.core.mail import decode_bytes, parse_mail


def test_envelope_overrides_headers() -> None:
    mail = parse_mail(b"From: a@x\r\nTo: b@y\r\n\r\nhi", mail_from="env@x", rcpt_tos=["r@y"])
    assert (mail.mail_from, mail.rcpt_tos) == ("env@x", ("r@y",))


def test_without_envelope_from_to_and_cc_stand_in() -> None:
    mail = parse_mail(b"From: A <a@x>\r\nTo: b@y, C <c@y>\r\nCc: d@y\r\n\r\nhi")
    assert mail.mail_from == "a@x"
    assert mail.rcpt_tos == ("b@y", "c@y", "d@y")


def test_raw_8bit_subject_is_decoded() -> None:
    mail = parse_mail("Subject: تنبيه\r\nTo: a@b\r\n\r\nx".encode())
    assert mail.subject == "تنبيه"


def test_folded_subject_is_one_line() -> None:
    assert parse_mail(b"Subject: one\r\n two\r\n\r\nx").subject == "one two"


def test_windows_1256_without_label_is_read_by_fallback() -> None:
    text, note = decode_bytes("مرحبا".encode("cp1256"), None)
    assert text == "مرحبا"
    assert note is None


def test_a_wrong_utf8_label_falls_back_with_a_note() -> None:
    text, note = decode_bytes("مرحبا".encode("cp1256"), "utf-8")
    assert text == "مرحبا"
    assert note is not None
    assert "windows-1256" in note or "cp1256" in note


def test_an_unknown_charset_label_does_not_crash() -> None:
    mail = parse_mail(b"Content-Type: text/plain; charset=x-klingon\r\n\r\nmobile:1")
    assert mail.body == "mobile:1"


def test_empty_plain_alternative_falls_back_to_html() -> None:
    raw = (
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\n\r\n'
        b"--b\r\nContent-Type: text/html\r\n\r\n<p>text:hello</p>\r\n--b--\r\n"
    )
    mail = parse_mail(raw)
    assert (mail.body, mail.body_source) == ("text:hello", "text/html")


def test_a_forwarded_message_attached_is_not_the_body() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\nContent-Type: text/html\r\n\r\n<p>text:outer</p>\r\n'
        b"--m\r\nContent-Type: message/rfc822\r\n\r\nSubject: old\r\n\r\ntext:forwarded\r\n--m--\r\n"
    )
    assert parse_mail(raw).body == "text:outer"


def test_rfc2047_words_in_any_charset_and_broken_ones_are_kept_readable() -> None:
    raw = b"Subject: =?windows-1256?Q?=C7=E1?= =?utf-8?B?2YXYsdit2Kg=?= =?x-unknown?Q?ok?= plain\r\n\r\nx"
    # white space between adjacent encoded words is not part of the text (RFC 2047, 6.2)
    assert parse_mail(raw).subject == "\u0627\u0644\u0645\u0631\u062d\u0628ok plain"


def test_html_becomes_readable_text() -> None:
    html = (
        "<html><head><style>p{}</style><script>var x=1;</script></head><body>"
        "<h1>Alert</h1><p>Disk&nbsp;full &amp; <b>hot</b></p><ul><li>db1</li><li>db2</li></ul>"
        "line<br>break<table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    assert html_to_text(html) == "Alert\nDisk full & hot\n- db1\n- db2\nline\nbreak\na b"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_parsing_arbitrary_bytes_never_raises(raw: bytes) -> None:
    mail = parse_mail(raw)
    assert isinstance(mail.body, str)


_MIME_BITS = st.sampled_from(
    [
        b"Content-Type: multipart/mixed; boundary=x\r\n",
        b'Content-Type: text/plain; charset="\r\n',
        b"Content-Transfer-Encoding: base64\r\n",
        b"Content-Transfer-Encoding: quoted-printable\r\n",
        b"Subject: =?utf-8?B?2YXYsdit2Kg=?= =?bad?Q?x?=\r\n",
        b"--x\r\n",
        b"--x--\r\n",
        b"\r\n",
        b"=C3=A9=\r\n",
        b"\xff\xfe\x00text:\r\n",
        b"Content-Type: text/html\r\n",
        b"<p>&#xffffff;<li>\r\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_MIME_BITS, max_size=30))
def test_parsing_malformed_mime_never_raises(bits: list[bytes]) -> None:
    parse_mail(b"".join(bits))
