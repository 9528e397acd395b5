"""Logging for journald: plain lines on stderr, and nothing private in them."""

from __future__ import annotations

import logging
import sys

#: loggers that would print what must stay private: httpx and httpcore log request
#: URLs (a KwtSMS v0.99 URL carries the password); aiosmtpd logs every recipient
NOISY_LOGGERS = ("httpx", "httpcore", "aiohttp.access", "mail.log")


def quiet_noisy_loggers() -> None:
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    quiet_noisy_loggers()
