"""Raw message bytes → :class:`~bridge.core.model.InboundMail`. Pure; never raises.

Copes with what real senders emit: any charset, quoted-printable and base64,
multipart/alternative (text/plain preferred, HTML turned into text when it
is the only text or the plain part is empty), attachments (ignored),
RFC 2047 subjects, raw 8-bit headers and missing or lying charset labels.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Sequence
from email import policy
from email.header import decode_header
from email.message import Message
from email.parser import BytesParser
from email.utils import getaddresses

from bridge.core.htmltext import html_to_text
from bridge.core.model import InboundMail

DEFAULT_FALLBACK_CHARSETS = ("utf-8", "windows-1256")
_LATIN_LABELS = frozenset({"us-ascii", "ascii", "iso-8859-1", "latin-1", "latin1", "windows-1252", "cp1252"})


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    label = label.strip().strip('"').lower()
    if label in ("unknown-8bit", "x-unknown", "default"):
        return None
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def decode_bytes(
    data: bytes, declared: str | None, fallbacks: Sequence[str] = DEFAULT_FALLBACK_CHARSETS
) -> tuple[str, str | None]:
    """Decode ``data`` (declared charset first, then ``fallbacks``); a note if guessed."""
    codec = _codec(declared)
    if codec and declared and declared.strip().lower() in _LATIN_LABELS and not data.isascii():
        # Mail labelled Latin-1/ASCII that is valid UTF-8 is UTF-8: a common lie.
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError:
            pass
    if codec:
        try:
            return data.decode(codec), None
        except UnicodeDecodeError:
            pass
    for fallback in fallbacks:
        try:
            text = data.decode(fallback)
        except (UnicodeDecodeError, LookupError):
            continue
        if declared:
            return text, f"declared charset {declared!r} does not match the text; read as {fallback}"
        return text, None
    return data.decode(codec or "utf-8", errors="replace"), "text has bytes no charset could read; they were replaced"


def decode_header_text(raw: str, fallbacks: Sequence[str] = DEFAULT_FALLBACK_CHARSETS) -> str:
    """A header's raw text → readable text: RFC 2047 words decoded, raw 8-bit bytes
    read by charset guessing, folding undone. Never raises."""
    if any("\udc80" <= ch <= "\udcff" for ch in raw):  # raw 8-bit header bytes
        raw, _ = decode_bytes(raw.encode("ascii", "surrogateescape"), None, fallbacks)
    try:
        chunks = decode_header(raw)
    except Exception:  # noqa: BLE001  (malformed encoded words: keep the text as it is)
        chunks = [(raw, None)]
    out = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            text, _ = decode_bytes(chunk, charset, fallbacks)
            out.append(text)
    return re.sub(r"\s+", " ", "".join(out).replace("\x00", "")).strip()


def _header(msg: Message, name: str, fallbacks: Sequence[str]) -> str:
    wanted = name.lower()
    for key, value in msg.raw_items():
        if key.lower() == wanted:
            return decode_header_text(str(value), fallbacks)
    return ""


def _is_attachment(part: Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    return disposition == "attachment"


def _leaves(part: Message, depth: int = 0) -> list[Message]:
    """The body's leaf parts, in order; attachments and attached messages are not descended into."""
    if _is_attachment(part) or depth > 20:
        return []
    if part.get_content_maintype() == "message" and depth > 0:
        return []
    if part.is_multipart():
        children = part.get_payload()
        if not isinstance(children, list):
            return []
        return [leaf for child in children if isinstance(child, Message) for leaf in _leaves(child, depth + 1)]
    return [part]


def _text_parts(msg: Message) -> tuple[list[Message], list[Message]]:
    plain: list[Message] = []
    html: list[Message] = []
    for part in _leaves(msg):
        ctype = part.get_content_type()
        if ctype == "text/plain":
            plain.append(part)
        elif ctype == "text/html":
            html.append(part)
    return plain, html


def _part_text(part: Message, fallbacks: Sequence[str], notes: list[str]) -> str:
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        payload = str(part.get_payload()).encode("utf-8", "surrogateescape")
    try:
        declared = part.get_content_charset()
    except Exception:  # noqa: BLE001
        declared = None
    text, note = decode_bytes(payload, declared, fallbacks)
    if note:
        notes.append(note)
    if "\x00" in text:  # never meant as text; no SMS carries it, nor can PostgreSQL store it
        text = text.replace("\x00", "")
        notes.append("the text held NUL characters; they were removed")
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def _body(msg: Message, fallbacks: Sequence[str], notes: list[str]) -> tuple[str, str]:
    plain, html = _text_parts(msg)
    for part in plain[:1]:
        text = _part_text(part, fallbacks, notes)
        if text.strip() or not html:
            return text, "text/plain"
    if html:
        return html_to_text(_part_text(html[0], fallbacks, notes)), "text/html"
    if not msg.is_multipart() and msg.get_content_maintype() == "text":
        return _part_text(msg, fallbacks, notes), msg.get_content_type()
    return "", ""


def parse_mail(
    raw: bytes,
    *,
    mail_from: str | None = None,
    rcpt_tos: Sequence[str] | None = None,
    fallback_charsets: Sequence[str] = DEFAULT_FALLBACK_CHARSETS,
) -> InboundMail:
    """Read one message. Without an envelope, ``From:`` and ``To:``/``Cc:`` stand in."""
    notes: list[str] = []
    try:
        # compat32: twenty times faster than policy.default; headers are decoded here
        msg = BytesParser(policy=policy.compat32).parsebytes(raw)
    except Exception:  # noqa: BLE001  (the parser is lenient; this is a last resort)
        return InboundMail(
            mail_from=mail_from or "",
            rcpt_tos=tuple(rcpt_tos or ()),
            subject="",
            body="",
            notes=("the message could not be read as mail",),
        )
    subject = _header(msg, "Subject", fallback_charsets)
    from_header = _header(msg, "From", fallback_charsets)
    message_id = _header(msg, "Message-ID", fallback_charsets)
    try:
        body, source = _body(msg, fallback_charsets, notes)
    except Exception:  # noqa: BLE001
        body, source = "", ""
        notes.append("the message body could not be read")
    if mail_from is None:
        pairs = getaddresses([from_header])
        mail_from = pairs[0][1] if pairs else ""
    if rcpt_tos is None:
        headers = [_header(msg, "To", fallback_charsets), _header(msg, "Cc", fallback_charsets)]
        rcpt_tos = [addr for _, addr in getaddresses([h for h in headers if h]) if "@" in addr]
    return InboundMail(
        mail_from=mail_from,
        rcpt_tos=tuple(rcpt_tos),
        subject=subject,
        body=body,
        from_header=from_header,
        message_id=message_id,
        body_source=source,
        notes=tuple(dict.fromkeys(notes)),
        cron_env=tuple(str(v) for v in msg.get_all("X-Cron-Env", ())),
    )
