"""Failure notices, built by pure functions: an RFC 3464 delivery status notification to the sender,
the rejection notice for mail refused after it was taken (IMAP), and the operator's digest.

A notice names the reason in plain words, the numbers and the SMS text, never the original mail
body (it may hold a password)."""

from __future__ import annotations

from email.message import EmailMessage, Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

from bridge.config import Config
from bridge.core.phone import mask
from bridge.outbox import MAYBE_SENT, RejectionRow, Row, State

KINDS = {"notice": "sender", "rejection notice": "rejection"}


WHY = {
    State.FAILED: "could not be sent as SMS",
    State.EXPIRED: "could not be sent as SMS in time and was given up",
    State.UNKNOWN: "may or may not have been sent as SMS",
}


UNKNOWN_EXPLAINED = (
    "The provider did not confirm this SMS: the request may have reached it, so the SMS\n"
    "may or may not have been sent. It was not resent automatically, because a second\n"
    "try could deliver it, and charge for it, twice. The operator can check the\n"
    "provider's records and send it again (sms-bridge queue retry {id}) or mark it as\n"
    "not sent.\n"
)


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build_dsn(
    config: Config,
    *,
    to: str,
    subject: str,
    human: str,
    status: str,
    diagnostic: str,
    rcpts: tuple[str, ...],
    message_id: str,
    arrival: float,
    last_attempt: float,
) -> MIMEMultipart:
    """An RFC 3464 delivery status notification (pure: builds a message, sends nothing)."""
    outer = MIMEMultipart("report", report_type="delivery-status")
    outer["From"] = f"SMS bridge <{config.notify.sender}>"
    outer["To"] = to
    outer["Subject"] = subject[:200]
    outer["Date"] = formatdate(localtime=False)
    outer["Message-ID"] = make_msgid(domain=config.notify.sender.rpartition("@")[2] or None)
    outer["Auto-Submitted"] = "auto-replied"
    if message_id:
        outer["In-Reply-To"] = message_id
        outer["References"] = message_id
    outer.attach(MIMEText(human, "plain", "utf-8"))
    report = MIMEBase("message", "delivery-status")
    blocks = [_fields([("Reporting-MTA", f"dns; {config.smtp.hostname}"), ("Arrival-Date", formatdate(arrival))])]
    for rcpt in rcpts or ("unknown",):
        blocks.append(
            _fields(
                [
                    ("Final-Recipient", f"rfc822; {rcpt}"),
                    ("Action", "failed"),
                    ("Status", status),
                    ("Diagnostic-Code", f"x-sms; {diagnostic}"[:900]),
                    ("Last-Attempt-Date", formatdate(last_attempt)),
                ]
            )
        )
    report.set_payload(blocks)  # type: ignore[arg-type]  # message/delivery-status holds header blocks
    outer.attach(report)
    return outer


def build_notice(row: Row, config: Config) -> MIMEMultipart:
    """The notice for an SMS that failed or expired."""
    origin, request, delivery = row.origin, row.request, row.delivery
    reason = delivery.last_error or "the provider refused it"
    code = f" ({delivery.last_code})" if delivery.last_code else ""
    warned = "".join(f"  Warning:    {w}\n" for w in origin.warnings)
    if delivery.state == State.UNKNOWN or delivery.last_error.endswith(MAYBE_SENT):
        after = UNKNOWN_EXPLAINED.format(id=row.id)
    else:
        after = "Nothing was charged for this SMS. Correct the problem and send the mail again.\n"
    human = (
        f"Your message {WHY.get(delivery.state, 'could not be sent as SMS')}.\n\n"
        f"  Reason:     {reason}{code}\n"
        f"  Numbers:    {', '.join(request.numbers)}\n"
        f"  Sender ID:  {request.sender}\n"
        f"  Account:    {request.account}{' (after ' + ', '.join(delivery.tried) + ')' if delivery.tried else ''}\n"
        f"  Text:       {request.text}\n"
        f"  Subject:    {origin.subject or '(none)'}\n"
        f"  Message-ID: {origin.message_id or '(none)'}\n"
        f"  Bridge id:  {row.id} (attempts: {delivery.attempts})\n"
        f"{warned}\n"
        f"{after}"
        "This notice was written by sms-bridge; replies to it are not read.\n"
    )
    return build_dsn(
        config,
        to=origin.mail_from,
        subject=f"SMS {'may not have been' if delivery.state == State.UNKNOWN else 'not'} sent: {reason}",
        human=human,
        status="5.0.0",
        diagnostic=f"{delivery.last_code + ' ' if delivery.last_code else ''}{reason}",
        rcpts=origin.rcpts,
        message_id=origin.message_id,
        arrival=row.created,
        last_attempt=row.updated,
    )


def build_rejection_notice(rejection: RejectionRow, config: Config) -> MIMEMultipart:
    """The notice for a mail taken from a mailbox and refused: every problem, by field."""
    problems = "\n".join(f"  {field}: {message}" for field, message in rejection.problems)
    human = (
        "Your message was not sent as SMS, because:\n\n"
        f"{problems}\n\n"
        f"  Subject:    {rejection.origin.subject or '(none)'}\n"
        f"  Message-ID: {rejection.origin.message_id or '(none)'}\n"
        f"  Bridge id:  {rejection.id}\n\n"
        "Nothing was sent or charged. Correct the problems and send the mail again.\n"
        "This notice was written by sms-bridge; replies to it are not read.\n"
    )
    first = rejection.problems[0] if rejection.problems else ("mail", "refused")
    return build_dsn(
        config,
        to=rejection.origin.mail_from,
        subject=f"SMS not sent: {first[0]}: {first[1]}",
        human=human,
        status="5.6.0",
        diagnostic="; ".join(f"{f}: {m}" for f, m in rejection.problems),
        rcpts=rejection.origin.rcpts,
        message_id=rejection.origin.message_id,
        arrival=rejection.created,
        last_attempt=rejection.created,
    )


def build_operator_mail(rows: list[Row], rejections: list[RejectionRow], config: Config) -> EmailMessage:
    """One mail to the operator listing every message that needs a person (pure)."""
    unknown = [r for r in rows if r.delivery.state == State.UNKNOWN or r.delivery.last_error.endswith(MAYBE_SENT)]
    others = [r for r in rows if r not in unknown]
    lines: list[str] = []
    if unknown:
        lines += [
            f"{len(unknown)} SMS may or may not have been sent. The provider did not confirm them, and",
            "they were not resent, because a second try could deliver and charge twice. Check the",
            "provider's records, then `sms-bridge queue retry ID` or mark them as not sent",
            "(the status page, or `sms-bridge queue not-sent ID`).",
            "",
            *(_operator_line(r) for r in unknown),
            "",
        ]
    if others:
        lines += [
            f"{len(others)} SMS failed, and their mail had no address to tell (a webhook, <>, the bridge):",
            "",
            *(_operator_line(r) for r in others),
            "",
        ]
    if rejections:
        lines += [f"{len(rejections)} mail(s) were refused and their sender could not be told:", ""]
        for rejection in rejections:
            problems = "; ".join(f"{f}: {m}" for f, m in rejection.problems)
            lines.append(f"  {rejection.id}  from {rejection.origin.mail_from or '<>'}  {problems}")
        lines.append("")
    lines.append("This mail was written by sms-bridge; `sms-bridge queue show ID` has each message's history.")
    message = EmailMessage()
    message["From"] = f"SMS bridge <{config.notify.sender}>"
    message["To"] = config.notify.operator or ""
    total = len(rows) + len(rejections)
    maybe = f", {len(unknown)} may or may not have been sent" if unknown else ""
    message["Subject"] = f"sms-bridge: {total} message(s) need attention{maybe}"
    message["Date"] = formatdate(localtime=False)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("\n".join(lines) + "\n")
    return message


def _operator_line(row: Row) -> str:
    numbers = ", ".join(mask(n) for n in row.request.numbers[:3]) + (" ..." if len(row.request.numbers) > 3 else "")
    code = f"{row.delivery.last_code} " if row.delivery.last_code else ""
    return (
        f"  {row.id}  {row.delivery.state}  account {row.request.account}  {numbers}  "
        f"from {row.origin.mail_from or row.origin.via}: {code}{row.delivery.last_error}"
    )


def build_low_balance(account: str, balance: float, threshold: float, config: Config) -> EmailMessage:
    """The operator's warning that ``account`` runs low."""
    message = EmailMessage()
    message["From"] = f"SMS bridge <{config.notify.sender}>"
    message["To"] = config.notify.operator or ""
    message["Subject"] = f"SMS account {account}: {balance:g} points left"
    message["Date"] = formatdate(localtime=False)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"The balance of SMS account {account} fell to {balance:g} points "
        f"(warning threshold {threshold:g}).\nTop it up before messages start failing.\n"
    )
    return message
