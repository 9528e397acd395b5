"""Logging for journald and for people: one line per event, nothing private in it.

Under systemd (``JOURNAL_STREAM`` names standard error) each line starts with
its syslog priority, ``<3>`` to ``<7>``, which journald reads, so that
``journalctl -u sms-bridge -p warning`` shows warnings and worse. Elsewhere
each line starts with an ISO 8601 timestamp.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys

#: loggers that would print what must stay private: httpx and httpcore log request
#: URLs (a KwtSMS v0.99 URL carries the password); aiosmtpd logs every recipient
NOISY_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "mail.log")

#: syslog priorities (sd-daemon(3)): err, warning, info, debug
PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


def quiet_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    # one warning per connection attempt while PostgreSQL is away: the outbox says it once a minute
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


class JournalFormatter(logging.Formatter):
    """``<4>bridge.dispatch.dispatcher: retry id=…``: the priority prefix journald turns into a level."""

    def format(self, record: logging.LogRecord) -> str:
        prio = PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        # every line of a multi-line message carries the priority, so none reads as info
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


class HumanFormatter(logging.Formatter):
    """``2026-11-29T23:40:01.123+03:00 WARNING bridge.dispatch.dispatcher: retry id=…``."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return dt.datetime.fromtimestamp(record.created).astimezone().isoformat(timespec="milliseconds")


def under_journald() -> bool:
    """Whether standard error is the journal stream systemd gave us (``JOURNAL_STREAM``)."""
    stream = os.environ.get("JOURNAL_STREAM", "")
    device, _, inode = stream.partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(device), int(inode))


def formatter(journal: bool) -> logging.Formatter:
    if journal:
        return JournalFormatter("%(name)s: %(message)s")
    return HumanFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s")


def setup_logging(level: int | str = logging.INFO, *, journal: bool | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(under_journald() if journal is None else journal))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    quiet_noisy_loggers()


def set_level(level: int | str) -> None:
    logging.getLogger().setLevel(level)
