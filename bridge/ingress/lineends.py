"""Bare line feeds read as CRLF, as Postfix 3.9's ``smtpd_forbid_bare_newline = normalize``.

Python's ``smtplib.sendmail(from, to, msg.as_bytes())`` and many scripts end
lines in a bare ``<LF>``. This filter sits between the socket and aiosmtpd's
reader and turns each such line ending into ``<CR><LF>``, so those mails are
read line by line like any other (and a long one does not hit the 1001-byte
line limit).

What it never does is create an end of data. The only end of data is
``<CR><LF>.<CR><LF>``: a line holding a lone dot that ends in a bare ``<LF>``,
or that follows a line that did (``<LF>.<LF>``, ``<LF>.<CR><LF>``,
``<CR><LF>.<LF>``: the SMTP smuggling sequences), is passed on as ``..``
(an ordinary line) and marks the message as :attr:`smuggling`, which the
server then refuses whole. A bare ``<CR>`` is passed on unchanged and refused
at the end of data. At most two bytes are held back between reads (a dot at
the start of a line, and a ``<CR>`` after it), so memory stays bounded.
"""

from __future__ import annotations

import re

_BARE_LF = re.compile(rb"(?<!\r)\n")


class LineEnds:
    def __init__(self) -> None:
        #: bytes of the current line already passed on
        self.line_out = 0
        #: the last byte passed on was a CR
        self.last_cr = False
        #: the previous line ended in a bare LF
        self.prev_bare = False
        #: the start of a line, held back until it is known not to be a lone dot
        self.held = b""
        #: a lone-dot line with a non-standard ending was seen (since :meth:`reset`)
        self.smuggling = False
        #: a bare LF was read as CRLF (since :meth:`reset`)
        self.normalised = False

    def reset(self) -> None:
        """After a message: forget what the last one had."""
        self.smuggling = False
        self.normalised = False

    def feed(self, data: bytes) -> bytes:
        if not data:
            return data
        if not self.held and not self.prev_bare and not (data[:1] == b"\n" and not self.last_cr):
            fast = self._standard(data)
            if fast is not None:
                return fast
        return self._slow(data)

    def _standard(self, data: bytes) -> bytes | None:
        """The common case, without copying: every line ends in CRLF and none is held."""
        if _BARE_LF.search(data):
            return None
        last = data.rfind(b"\n")
        tail = data if last < 0 else data[last + 1 :]
        at_line_start = last >= 0 or self.line_out == 0
        if at_line_start and tail in (b".", b".\r"):
            return None  # a possible lone dot: the careful path holds it back
        if last >= 0:
            self.line_out = 0
        self.line_out += len(tail)
        self.last_cr = data.endswith(b"\r")
        return data

    def _slow(self, data: bytes) -> bytes:
        buf = self.held + data
        self.held = b""
        if not buf:
            return b""
        out = bytearray()
        pieces = buf.split(b"\n")
        tail = pieces.pop()
        for i, piece in enumerate(pieces):
            whole_line = self.line_out == 0 if i == 0 else True
            # an empty piece right after the previous read: its CR came in that read
            crlf = piece.endswith(b"\r") if piece else (i == 0 and self.last_cr)
            content = piece[:-1] if piece.endswith(b"\r") else piece
            bare = not crlf
            if whole_line and content == b"." and (bare or self.prev_bare):
                self.smuggling = True
                out += b"..\r\n"
            elif bare:
                self.normalised = True
                out += piece + b"\r\n"
            else:
                out += piece + b"\n"
            self.prev_bare = bare
            self.line_out = 0
            self.last_cr = False
        if self.line_out == 0 and tail in (b".", b".\r"):
            self.held = tail  # wait for what ends this line
        elif tail:
            out += tail
            self.line_out += len(tail)
            self.last_cr = tail.endswith(b"\r")
        return bytes(out)
