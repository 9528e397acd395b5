"""Accepting a valid mail: what SMTP and IMAP ingress share.

The client's checks, the account's balance, the limits, the durable commit,
the log lines and the dispatch loop's wake-up, in one place. Each ingress maps
the :class:`Admission` to its own answer: an SMTP reply, or a folder and a
notice.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Literal

from bridge.config import ClientConfig, Config
from bridge.core.access import check_requests
from bridge.core.model import InboundMail, Problem, SmsRequest, Verdict
from bridge.core.phone import numbers_for_log
from bridge.outbox import Accepted, DailyCapReached, Enqueued, ImapKey, LimitExceeded, Outbox, intake
from bridge.runtime import Runtime

log = logging.getLogger("bridge.accept")


@dataclass(frozen=True)
class Admission:
    """``queued`` or ``duplicate`` (stored, or stored before); ``refused`` (the client
    may not, ``problems``); ``later`` (a limit or the balance, ``status`` 4.7.x: try
    again); ``over`` (a daily limit: ``status`` 5.7.1)."""

    kind: Literal["queued", "duplicate", "refused", "later", "over"]
    enqueued: Enqueued | None = None
    problems: tuple[Problem, ...] = ()
    reason: str = ""
    status: str = ""


def usage_scopes(
    name: str, client: ClientConfig, config: Config, requests: tuple[SmsRequest, ...]
) -> list[tuple[str, Any]]:
    """The limits a mail counts against: its client's and each account's (those that set any)."""
    scopes: list[tuple[str, Any]] = [(f"client {name}", client.limits)]
    for account in dict.fromkeys(r.account for r in requests):
        scopes.append((f"account {account}", config.accounts[account].limits))
    return [(scope, limits) for scope, limits in scopes if _counts_anything(limits)]


def _counts_anything(limits: Any) -> bool:
    return any(
        getattr(limits, f"{what}_per_{window}") is not None
        for what in ("messages", "points")
        for window in ("minute", "hour", "day")
    )


async def admit(
    config: Config,
    outbox: Outbox,
    runtime: Runtime,
    *,
    client_name: str,
    mail: InboundMail,
    verdict: Verdict,
    via: str,
    fingerprint: str | None,
    key: ImapKey | None = None,
    keep: float = 0.0,
) -> Admission:
    client = config.clients[client_name]
    refused = check_requests(client_name, client, config, verdict.requests)
    metrics = runtime.metrics
    way = via.partition(":")[0]  # imap:<mailbox> counts as imap
    stage = "webhook" if via == "webhook" else "data"
    if refused:
        metrics.refused(way, stage, "client")
        log.warning(
            "refused via=%s client=%s from=%s: %s", via, client_name, mail.mail_from, "; ".join(map(str, refused))
        )
        return Admission("refused", problems=tuple(refused))
    empty = runtime.balances.cannot_pay(verdict.requests)
    if empty is not None:
        metrics.refused(way, stage, "balance")
        log.warning("not accepted via=%s from=%s: %s", via, mail.mail_from, empty)
        return Admission("later", reason=empty, status="4.7.1")
    accepted = Accepted(
        via=via,
        mail_from=mail.mail_from,
        rcpts=mail.rcpt_tos,
        message_id=mail.message_id,
        subject=mail.subject,
        requests=verdict.requests,
        fingerprint=fingerprint,
        client=client_name,
        warnings=verdict.warnings,
        keep=keep,
    )
    try:
        enqueued = await outbox.run(
            intake.enqueue, accepted, key, usage_scopes(client_name, client, config, verdict.requests)
        )
    except LimitExceeded as exc:
        metrics.refused(way, stage, "limit")
        log.warning("limit via=%s client=%s from=%s: %s", via, client_name, mail.mail_from, exc)
        if isinstance(exc, DailyCapReached):
            return Admission("over", reason=str(exc), status="5.7.1")
        return Admission("later", reason=str(exc), status="4.7.0")
    if enqueued.duplicate:
        log.info(
            "duplicate id=%s via=%s from=%s message-id=%s: already queued",
            enqueued.mail_id,
            via,
            mail.mail_from,
            mail.message_id,
        )
        return Admission("duplicate", enqueued)
    warned = f" warnings={'; '.join(verdict.warnings)!r}" if verdict.warnings else ""
    for request in verdict.requests:
        log.info(
            "queued id=%s via=%s client=%s from=%s route=%s numbers=%s pages=%d points=%d%s",
            enqueued.mail_id,
            via,
            client_name,
            mail.mail_from,
            request.route,
            numbers_for_log(request.numbers),
            request.pages,
            request.points,
            warned,
        )
    metrics.mail_accepted.labels(way).inc()
    for account in dict.fromkeys(r.account for r in verdict.requests):
        runtime.wake(account)
    return Admission("queued", enqueued)


def fingerprint(message_id: str, mail_from: str, raw: bytes) -> str | None:
    """Same Message-ID, sender and body: a client resubmitting after a lost reply."""
    if not message_id:
        return None
    _, _, body = raw.partition(b"\r\n\r\n")
    digest = hashlib.sha256()
    for part in (message_id.encode(), b"\x00", mail_from.lower().encode(), b"\x00", body):
        digest.update(part)
    return digest.hexdigest()
