"""Mail the bridge must never answer: it would loop, or go nowhere. Pure."""

from __future__ import annotations

from bridge.config import Config
from bridge.core.routing import route_for


def should_not_answer(mail_from: str, auto_submitted: str, config: Config, own: tuple[str, ...] = ()) -> str | None:
    """Why no notice may go to ``mail_from`` (loops, null senders), or None."""
    sender = mail_from.strip().strip("<>").lower()
    if not sender or "@" not in sender:
        return "the mail had no sender address (<>)"
    if auto_submitted and auto_submitted.strip().lower() != "no":
        return "the mail was sent automatically (Auto-Submitted)"
    local = sender.partition("@")[0]
    if local in ("mailer-daemon", "postmaster"):
        return "the mail came from a mail system"
    if route_for(sender, config) is not None or sender == config.notify.sender.lower() or sender in own:
        return "the sender is an address of this bridge"
    return None
