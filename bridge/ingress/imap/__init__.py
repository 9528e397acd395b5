"""IMAP: a mailbox the bridge watches (:mod:`~bridge.ingress.imap.watcher`), over one session of
the protocol (:mod:`~bridge.ingress.imap.session`)."""

from __future__ import annotations

from bridge.ingress.imap.session import ImapFailure, Report, Session, check
from bridge.ingress.imap.watcher import MailboxWatcher

__all__ = ["ImapFailure", "MailboxWatcher", "Report", "Session", "check"]
