"""``sms-bridge sendmail``: the sendmail command line, for cron, PHP's ``mail()``, logwatch, scripts.

Reads a message on standard input and submits it to the local bridge over
SMTP, where it meets the same clients, validation and limits as any SMTP
client. Installed as (or linked to as) ``/usr/sbin/sendmail`` on a host with
no other MTA, a symlink named ``sendmail`` behaves the same.

Flags: ``-t`` (recipients from To:, Cc: and Bcc:, Bcc: then removed),
recipients as arguments, ``-f``/``-r`` sender, ``-F`` full name, ``-i``/``-oi``
(a lone dot does not end the input), ``-odi``/``-odb`` and other ``-o…``
accepted; ``-bm`` (the default) and ``-v``.

Exit statuses follow ``sysexits.h``: 0 accepted (the bridge answered 250);
64 wrong usage; 65 refused, with every problem on standard error, one per
line, naming its field; 75 the bridge is unreachable or answered 4xx after
retrying for ``sendmail.retry_for`` seconds (default 30), so the caller retries
or reports; 78 bad configuration. A message gets a Message-ID if it has none,
so that a resubmission after a lost reply is recognised and not queued twice.
"""

from __future__ import annotations

import getpass
import smtplib
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.utils import formatdate, getaddresses, make_msgid
from typing import BinaryIO, TextIO

from bridge.config import Config, parse_host_port

USAGE = """\
usage: sms-bridge sendmail [-t] [-f FROM] [-F NAME] [-i] [-C FILE] [RECIPIENT ...] < MESSAGE
       (the same as /usr/sbin/sendmail, when that is a link to sms-bridge)

Hand a message on standard input to the local bridge over SMTP, as cron, PHP's mail(),
logwatch and `mail -s` do; it meets the same clients, validation and limits as any mail.

  -t             recipients from To:, Cc: and Bcc: (Bcc: is then removed), besides any named
  -f, -r FROM    the envelope sender (default: USER@this host)
  -F NAME        the sender's full name, for a From: the message lacks
  -i, -oi        a line with a lone dot does not end the message
  -C, -c FILE    the bridge's config (default: $SMS_BRIDGE_CONFIG, else /etc/sms-bridge/config.yaml)
  -v             say each retry
  -h, --help     this text
  -odi, -odb, -oem, -B8BITMIME, -bm and other -o... flags are accepted and change nothing.

Recipients: a number or alias address (96597119440@alerts.example.com), or a local user
(root) that local_users maps. It retries for sendmail.retry_for seconds while the bridge
is away or answers 4xx.

exit status: 0 accepted; 64 wrong usage; 65 refused, each problem on standard error;
75 the bridge is away or busy: try again later; 78 bad configuration.

example:
  printf 'To: root\\nSubject: backup failed\\n\\npg_dump: exit 1\\n' | sms-bridge sendmail -t"""

EX_OK = 0
EX_USAGE = 64
EX_DATAERR = 65
EX_TEMPFAIL = 75


class Usage(ValueError):
    """The command line is not one sendmail would take."""


@dataclass
class Options:
    recipients: list[str] = field(default_factory=list)
    from_headers: bool = False
    sender: str | None = None
    full_name: str | None = None
    dot_ends: bool = True
    verbose: bool = False
    #: ``-C FILE`` (sendmail's own) or ``-c FILE``: the bridge's config
    config: str | None = None


def parse_args(argv: Sequence[str]) -> Options:
    """sendmail's own flag syntax (``-fADDR`` and ``-f ADDR``, ``-oi``, ``-odb`` …)."""
    opts = Options()
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if arg == "--":
            opts.recipients += args[i:]
            break
        if not arg.startswith("-") or arg == "-":
            opts.recipients.append(arg)
            continue
        flag, value = arg[:2], arg[2:]
        if flag in ("-f", "-r", "-F", "-C", "-c"):
            if not value:
                if i >= len(args):
                    raise Usage(f"{flag} needs a value")
                value = args[i]
                i += 1
            if flag == "-F":
                opts.full_name = value
            elif flag in ("-C", "-c"):
                opts.config = value
            else:
                opts.sender = value
        elif arg == "-t":
            opts.from_headers = True
        elif arg in ("-i", "-oi"):
            opts.dot_ends = False
        elif arg == "-v":
            opts.verbose = True
        elif flag == "-o" or arg in ("-bm", "-U") or arg.startswith(("-od", "-oe", "-B", "-N", "-R", "-V", "-X")):
            continue  # accepted and without meaning here (delivery modes, error modes, DSN options)
        elif flag == "-b":
            raise Usage(f"{arg}: only -bm (deliver a message) is supported")
        else:
            raise Usage(f"{arg}: unknown option")
    return opts


def read_message(stream: BinaryIO, dot_ends: bool) -> bytes:
    """Standard input, line ends made CRLF; without ``-i``, a lone ``.`` line ends it."""
    lines: list[bytes] = []
    for line in stream:
        body = line.rstrip(b"\r\n")
        if dot_ends and body == b".":
            break
        lines.append(body)
    return b"".join(body + b"\r\n" for body in lines)


def prepare(raw: bytes, opts: Options, default_sender: str) -> tuple[str, list[str], bytes]:
    """(envelope sender, recipients, the message as submitted)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, body = raw.rstrip(b"\r\n"), b""
    message = message_from_bytes(head + b"\r\n\r\n", policy=policy.compat32)
    recipients = list(opts.recipients)
    if opts.from_headers:
        fields = [str(v) for name in ("To", "Cc", "Bcc") for v in message.get_all(name, [])]
        recipients += [addr for _, addr in getaddresses(fields) if addr]
    recipients = list(dict.fromkeys(r.strip() for r in recipients if r.strip()))
    if not recipients:
        raise Usage("no recipients: name them as arguments, or use -t to take them from To:, Cc: and Bcc:")
    sender = opts.sender or default_sender
    added = []
    if "Bcc" in message:
        del message["Bcc"]
    if "From" not in message:
        added.append(f"From: {opts.full_name} <{sender}>" if opts.full_name else f"From: {sender}")
    if "Date" not in message:
        added.append(f"Date: {formatdate(localtime=True)}")
    if "Message-ID" not in message:
        added.append(f"Message-ID: {make_msgid(domain=socket.getfqdn() or 'localhost')}")
    headers = message.as_bytes().rstrip(b"\r\n").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    extra = "".join(f"{line}\r\n" for line in added).encode("utf-8")
    return sender, recipients, extra + (headers + b"\r\n" if headers else b"") + b"\r\n" + body


def server_for(config: Config) -> tuple[str, int]:
    """``sendmail.server``, else the first SMTP listener (a wildcard address means loopback)."""
    address = config.sendmail.server or config.smtp.listeners()[0].address
    host, port = parse_host_port(address)
    return ({"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port)  # noqa: S104


class TemporaryFailure(Exception):
    """Unreachable, or a 4xx: worth trying again."""


def submit_once(config: Config, sender: str, recipients: list[str], message: bytes) -> dict[str, tuple[int, str]]:
    """One SMTP submission; the recipients refused for good (code, reply). Raises
    :class:`TemporaryFailure` for what may pass later, :class:`Refused` for a 5xx."""
    host, port = server_for(config)
    settings = config.sendmail
    try:
        with smtplib.SMTP(host, port, timeout=30, local_hostname="localhost") as client:
            client.ehlo()
            if settings.user and settings.password is not None:
                if client.has_extn("starttls"):
                    client.starttls()
                    client.ehlo()
                client.login(settings.user, settings.password.get_secret_value())
            refused = client.sendmail(sender, recipients, message)
    except smtplib.SMTPRecipientsRefused as exc:
        temporary = {r: v for r, v in exc.recipients.items() if 400 <= v[0] < 500}
        if temporary:
            raise TemporaryFailure(_said(*next(iter(temporary.values())))) from None
        return {r: (code, _said(code, text)) for r, (code, text) in exc.recipients.items()}
    except smtplib.SMTPResponseException as exc:
        if 400 <= exc.smtp_code < 500:
            raise TemporaryFailure(_said(exc.smtp_code, exc.smtp_error)) from None
        raise Refused(_said(exc.smtp_code, exc.smtp_error)) from None
    except (OSError, smtplib.SMTPException) as exc:
        raise TemporaryFailure(
            f"cannot reach the bridge at {host}:{port}: {getattr(exc, 'strerror', None) or exc}"
        ) from None
    temporary = {r: v for r, v in refused.items() if 400 <= v[0] < 500}
    if temporary and len(temporary) == len(recipients):
        raise TemporaryFailure(_said(*next(iter(temporary.values()))))
    return {r: (code, _said(code, text)) for r, (code, text) in refused.items()}


class Refused(Exception):
    """A 5xx for the whole message."""


def _said(code: int, text: bytes | str) -> str:
    words = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {words}"


def run(argv: Sequence[str], config: Config, *, stdin: BinaryIO | None = None, stderr: TextIO | None = None) -> int:
    err = stderr or sys.stderr
    try:
        opts = parse_args(argv)
    except Usage as exc:
        print(f"sendmail: {exc}", file=err)
        return EX_USAGE
    raw = read_message(stdin or sys.stdin.buffer, opts.dot_ends)
    default_sender = f"{getpass.getuser()}@{socket.getfqdn() or 'localhost'}"
    try:
        sender, recipients, message = prepare(raw, opts, default_sender)
    except Usage as exc:
        print(f"sendmail: {exc}", file=err)
        return EX_USAGE
    deadline = time.monotonic() + config.sendmail.retry_for
    delay = 1.0
    while True:
        try:
            refused = submit_once(config, sender, recipients, message)
        except Refused as exc:
            _problems(str(exc), err)
            return EX_DATAERR
        except TemporaryFailure as exc:
            if time.monotonic() + delay > deadline:
                print(f"sendmail: not accepted, try again later: {exc}", file=err)
                return EX_TEMPFAIL
            if opts.verbose:
                print(f"sendmail: {exc}; retrying in {delay:.0f} s", file=err)
            time.sleep(delay)  # a short-lived command: nothing else runs meanwhile
            delay = min(delay * 2, 8.0)
            continue
        if refused:
            for rcpt, (_, said) in refused.items():
                print(f"sendmail: {rcpt}: refused:", file=err)
                _problems(said, err)
            accepted = [r for r in recipients if r not in refused]
            if accepted:
                print(f"sendmail: accepted for {', '.join(accepted)} only", file=err)
            return EX_DATAERR
        return EX_OK


def _problems(said: str, err: TextIO) -> None:
    """A multi-line 5xx, one problem a line: ``mobile: '123' is not a Kuwait mobile number``."""
    for line in said.splitlines():
        text = line.strip()
        for prefix in ("550", "551", "552", "553", "554", "5.6.0", "5.7.1", "5.1.1", "5.0.0", "5.3.4"):
            text = text.removeprefix(prefix).strip(" -")
        print(f"sendmail: {text}", file=err)
