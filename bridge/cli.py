"""The ``sms-bridge`` command line.

Exit status: 0 success, 1 the message would be rejected (``check``) or the
command failed, 2 wrong usage, 66 input file missing, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config import Config, RouteConfig, load, parse_host_port, read_env_file
from bridge.config import warnings as config_warnings
from bridge.errors import AmbiguousDelivery, BridgeError, ConfigError, DeliveryError, TransientDelivery
from bridge.intake import decide
from bridge.logs import set_level, setup_logging
from bridge.mail import parse_mail
from bridge.model import Draft, Problem, SmsRequest, Verdict
from bridge.outbox import Event, Notice, Row, State, Tx
from bridge.providers import Provider, Sent, chunks
from bridge.validate import validate

EX_USAGE = 2
EX_NOINPUT = 66
EX_SOFTWARE = 70
EX_CONFIG = 78
log = logging.getLogger("bridge")


class UsageError(Exception):
    """The command line names something that does not exist (exit 2, like argparse's own)."""


DEFAULT_CONFIG = "/etc/sms-bridge/config.yaml"
DEFAULT_ENV_FILE = "/etc/sms-bridge/env"


def config_path(args: argparse.Namespace) -> str:
    """``-c``, else ``$SMS_BRIDGE_CONFIG``, else ``/etc/sms-bridge/config.yaml``."""
    return str(args.config or os.environ.get("SMS_BRIDGE_CONFIG") or DEFAULT_CONFIG)


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The process environment, with what ``--env-file`` (default ``/etc/sms-bridge/env``
    when it exists and is readable) adds: the service's secrets, for CLI commands too."""
    env = dict(os.environ)
    path = args.env_file
    if path is None:
        path = DEFAULT_ENV_FILE if os.access(DEFAULT_ENV_FILE, os.R_OK) else ""
    if path:
        try:
            values = read_env_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([Problem(path, f"cannot be read: {getattr(exc, 'strerror', None) or exc}")]) from None
        env = values | env  # what the shell sets wins over the file
    return env


def _load_config(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    """The config; for a command that needs no provider secret (``secrets=False``), an
    environment variable that is not set is only named as a warning."""
    missing: list[Problem] | None = None if secrets else []
    config = load(config_path(args), env=environment(args), missing=missing)
    for problem in missing or ():
        print(f"sms-bridge: warning: {problem.field}: {problem.message} (not needed for this command)", file=sys.stderr)
    if args.log_level is None:
        set_level(config.logging.level)
    return config


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_config(args, secrets=not args.no_env)
    print(f"{config_path(args)}: OK ({len(config.accounts)} account(s), {len(config.routes)} route(s))")
    for name, route in config.routes.items():
        serves = ", ".join(route.recipients) if route.recipients else ""
        if route.domain:
            serves = (serves + ", " if serves else "") + f"<number or alias>@{route.domain}"
        for rule in route.rules():
            account = config.accounts[rule.account]
            when = "" if rule.default else f" for {rule.prefix or rule.region}"
            fallback = f", then {', '.join(rule.fallback)}" if rule.fallback else ""
            print(
                f"  route {name}: {route.format} format, {serves}{when} → account {rule.account} ({account.provider}){fallback}"
            )
    for warning in config_warnings(config):
        print(f"warning: {warning}")
    return 0


def verdict_json(verdict: Verdict) -> dict[str, Any]:
    return {
        "ok": verdict.ok,
        "problems": [{"field": p.field, "message": p.message} for p in verdict.problems],
        "warnings": list(verdict.warnings),
        "sms": [
            {
                "account": r.account,
                "provider": r.provider,
                "sender": r.sender,
                "numbers": list(r.numbers),
                "text": r.text,
                "encoding": r.encoding,
                "pages": r.pages,
                "points": r.points,
            }
            for r in verdict.requests
        ],
    }


def print_verdict(verdict: Verdict) -> None:
    if verdict.ok:
        print(f"would send {len(verdict.requests)} SMS:")
        for r in verdict.requests:
            page_word = "page" if r.pages == 1 else "pages"
            point_word = "point" if r.points == 1 else "points"
            print(f"  route {r.route} → account {r.account} ({r.provider})")
            print(f"    sender:   {r.sender}")
            print(f"    numbers:  {', '.join(r.numbers)} ({len(r.numbers)})")
            print(f"    text:     {r.text}")
            print(f"    encoding: {r.encoding}, {r.pages} {page_word}, {r.points} {point_word}")
    else:
        count = len(verdict.problems)
        print(f"rejected: {count} problem{'s' if count != 1 else ''}")
        for p in verdict.problems:
            print(f"  {p.field}: {p.message}")
    for warning in verdict.warnings:
        print(f"  warning: {warning}")


def cmd_check(args: argparse.Namespace) -> int:
    config = _load_config(args, secrets=False)
    if args.message == "-":
        raw = sys.stdin.buffer.read()
    else:
        try:
            raw = Path(args.message).read_bytes()
        except OSError as exc:
            print(f"sms-bridge: {args.message}: cannot be read: {exc.strerror or exc}", file=sys.stderr)
            return EX_NOINPUT
    mail = parse_mail(raw, mail_from=args.mail_from, rcpt_tos=args.rcpt or None)
    verdict = decide(mail, config)
    if args.json:
        print(json.dumps(verdict_json(verdict), ensure_ascii=False, indent=2))
    else:
        print_verdict(verdict)
    return 0 if verdict.ok else 1


def describe_failure(exc: DeliveryError) -> str:
    code = f"{exc.code}: " if exc.code else ""
    if isinstance(exc, TransientDelivery):
        after = f" (retry after {exc.retry_after:g} s)" if exc.retry_after else ""
        return f"not sent, try again later: {code}{exc.reason}{after}"
    if isinstance(exc, AmbiguousDelivery):
        return f"unknown: {exc.reason}; not resent, check the provider's records before sending again"
    return f"failed: {code}{exc.reason}"


def describe_sent(sent: Sent) -> str:
    parts = [f"{sent.numbers} number(s)"]
    if sent.message_id:
        parts.append(f"msg-id {sent.message_id}")
    if sent.points is not None:
        parts.append(f"{sent.points} point(s) charged")
    if sent.balance_after is not None:
        parts.append(f"balance after {sent.balance_after:g}")
    verb = "sent" if sent.confirmed else "handed to the mail relay (KwtSMS does not confirm mail)"
    return f"{verb}: " + ", ".join(parts)


def _account(config: Config, name: str) -> None:
    if name not in config.accounts:
        known = ", ".join(sorted(config.accounts))
        raise UsageError(f"--account: no account named {name!r} in the config (accounts: {known})")


async def _send_chunks(provider: Provider, request: SmsRequest, test: bool) -> int:
    failures = 0
    parts = list(chunks(request.numbers))
    for i, numbers in enumerate(parts, start=1):
        part = replace(request, numbers=numbers, points=request.pages * len(numbers))
        label = f"[{i}/{len(parts)}] " if len(parts) > 1 else ""
        try:
            sent = await provider.send(part, test=test)
        except DeliveryError as exc:
            failures += 1
            print(f"{label}{describe_failure(exc)}")
        else:
            print(f"{label}{describe_sent(sent)}")
    return failures


def cmd_send(args: argparse.Namespace) -> int:
    config = _load_config(args)
    _account(config, args.account)
    account = config.accounts[args.account]
    numbers = tuple(n for item in args.to for n in item.split(",") if n.strip())
    draft = Draft(route="cli", numbers=numbers, numbers_field="to", text=args.text, sender=args.sender, lang=args.lang)
    route = RouteConfig(format="kwtsms", account=args.account, recipients=("cli@localhost",))
    outcome = validate(draft, account_name=args.account, account=account, route=route, numbers=config.numbers)
    for warning in outcome.warnings:
        print(f"warning: {warning}")
    if outcome.request is None:
        print(f"not sent: {len(outcome.problems)} problem(s)")
        for p in outcome.problems:
            print(f"  {p.field}: {p.message}")
        return 1
    r = outcome.request
    test = " (test)" if args.test or getattr(account, "test", False) else ""
    print(
        f"sending{test} via {args.account} ({account.provider}): {len(r.numbers)} number(s), {r.encoding}, {r.pages} page(s), {r.points} point(s)"
    )

    interval = account.pacing()
    wait = _paced_for(config, args.account, r.numbers) if interval > 0 else 0.0
    if wait > 0:
        print(f"waiting {wait:.0f} s: the provider refuses a second SMS to the same number within {interval:g} s")

    async def run() -> int:
        from bridge.app import open_providers  # noqa: PLC0415  (keeps `check` free of network imports)

        await asyncio.sleep(wait)
        async with open_providers(config) as providers:
            return await _send_chunks(providers[args.account], r, args.test)

    failures = asyncio.run(run())
    if interval > 0 and failures < len(list(chunks(r.numbers))):
        _pace(config, args.account, r.numbers, interval)
    return 0 if failures == 0 else 1


def _paced_for(config: Config, account: str, numbers: Sequence[str]) -> float:
    """Seconds until every one of ``numbers`` may be sent to again, as the running bridge
    paces them (its outbox); 0 when there is no outbox."""
    from bridge import outbox  # noqa: PLC0415

    try:
        with outbox.transaction(config.queue) as conn:
            now = outbox.op_clock(conn)
            until = outbox.op_paced_until(conn, account, numbers, now)
    except outbox.OutboxError:
        return 0.0
    return 0.0 if until is None else max(until - now, 0.0)


def _pace(config: Config, account: str, numbers: Sequence[str], interval: float) -> None:
    """What ``send`` sent holds its numbers back for the bridge too, as the bridge's own SMS do,
    so that a mail right after it waits instead of meeting the provider's refusal (ERR028)."""
    from bridge import outbox  # noqa: PLC0415

    try:
        with outbox.transaction(config.queue) as conn:
            outbox.op_pace(conn, account, numbers, outbox.op_clock(conn) + interval)
    except outbox.NoOutbox:
        return
    except outbox.OutboxError as exc:
        print(f"warning: the outbox could not record the pacing of these numbers: {exc}", file=sys.stderr)


def cmd_balance(args: argparse.Namespace) -> int:
    config = _load_config(args)
    names = [args.account] if args.account else list(config.accounts)
    for name in names:
        _account(config, name)

    async def run() -> int:
        from bridge.app import open_providers  # noqa: PLC0415

        failures = 0
        async with open_providers(config) as providers:
            for name in names:
                try:
                    balance = await providers[name].balance()
                except DeliveryError as exc:
                    failures += 1
                    print(f"{name}: {describe_failure(exc)}")
                    continue
                available = "unknown" if balance.available is None else f"{balance.available:g}"
                purchased = "" if balance.purchased is None else f" of {balance.purchased:g} purchased"
                print(f"{name}: {available} points available{purchased}")
        return failures

    return 0 if asyncio.run(run()) == 0 else 1


def cmd_senders(args: argparse.Namespace) -> int:
    config = _load_config(args)
    _account(config, args.account)

    async def run() -> int:
        from bridge.app import open_providers  # noqa: PLC0415

        async with open_providers(config) as providers:
            try:
                senders = await providers[args.account].sender_ids()
            except DeliveryError as exc:
                print(f"{args.account}: {describe_failure(exc)}")
                return 1
        for sender in senders:
            print(sender)
        return 0

    return asyncio.run(run())


def cmd_simulate(args: argparse.Namespace) -> int:
    from bridge.simulator import Simulator, default_accounts, load_accounts, serve  # noqa: PLC0415

    try:
        host, port = parse_host_port(args.listen)
    except ValueError as exc:
        print(f"sms-bridge: --listen: {exc}", file=sys.stderr)
        return EX_USAGE
    accounts = load_accounts(Path(args.accounts)) if args.accounts else default_accounts()
    simulator = Simulator(
        accounts,
        max_rate=args.max_rate,
        repeat_window=args.repeat_window,
        jsonl=Path(args.jsonl) if args.jsonl else None,
    )
    for fault in args.fault or []:
        kind, _, count = fault.partition(":")
        simulator.arm(kind, int(count or 0))

    def ready(bound: int) -> None:
        print(f"simulator listening on http://{host}:{bound}", flush=True)
        for provider, items in (("KwtSMS", simulator.kwtsms), ("OpenTech", simulator.opentech)):
            for acc in items.values():
                uid = f" uid={acc.uid}" if acc.uid else ""
                print(
                    f"  {provider} account {acc.username}{uid}: {acc.balance:g} points, senders {', '.join(acc.senders)}"
                )

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal  # noqa: PLC0415

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(host, port, simulator, stop, ready)

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"sms-bridge: cannot listen on {args.listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app import serve  # noqa: PLC0415

    config = _load_config(args)
    try:
        asyncio.run(serve(config, reload=lambda: _load_config(args)))
    except BridgeError as exc:
        log.error("%s", exc)
        return 1
    except Exception as exc:  # a crashed component ends the process; systemd restarts it
        log.critical(
            "sms-bridge stopped after an internal error (%s); nothing acknowledged is lost",
            type(exc).__name__,
            exc_info=exc,
        )
        return EX_SOFTWARE
    return 0


def cmd_hash_password(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from bridge.access import hash_password  # noqa: PLC0415

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("sms-bridge: the two passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("sms-bridge: use at least 8 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def cmd_imap_check(args: argparse.Namespace) -> int:
    from bridge.ingress.imap import ImapFailure, check  # noqa: PLC0415

    config = _load_config(args)
    if not config.imap:
        print("no mailboxes are configured (imap:)")
        return 0

    async def run() -> int:
        failures = 0
        for box in config.imap:
            try:
                report = await check(box)
            except ImapFailure as exc:
                failures += 1
                print(f"{box.label()}: FAILED: {exc}")
                continue
            print(
                f"{report.label}: OK ({box.host}:{box.real_port()}, {'TLS' if box.tls == 'implicit' else 'plain text'})"
            )
            print(f"  capabilities: {' '.join(report.capabilities)}")
            print(f"  folders:      {', '.join(report.folders)}")
            print(
                f"  {box.folder}: {report.messages} message(s), {report.unseen} unseen, UIDVALIDITY {report.uidvalidity}"
            )
            idle = "IDLE" in report.capabilities and box.idle
            print(f"  watching by:  {'IDLE' if idle else f'polling every {box.poll_interval:g} s'}")
            for folder in {box.rejected_folder, box.processed_folder if box.after == "move" else None} - {None}:
                if folder not in report.folders:
                    print(f"  note: folder {folder} does not exist yet; the bridge creates it")
        return failures

    return 0 if asyncio.run(run()) == 0 else 1


def _when(ts: float) -> str:
    import datetime as dt  # noqa: PLC0415

    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def print_row(r: Row, history: Sequence[Event] = ()) -> None:
    """``queue show``: everything about one SMS."""
    o, q, d = r.origin, r.request, r.delivery
    print(f"id:              {r.id}")
    print(f"state:           {d.state} (attempts {d.attempts}; updated {_when(r.updated)})")
    if d.state == State.QUEUED:
        print(f"next attempt:    {_when(d.next_attempt)}")
    print(f"accepted:        {_when(r.created)} via {o.via} from {o.mail_from or '<>'}")
    print(f"recipients:      {', '.join(o.rcpts)}")
    print(f"message-id:      {o.message_id or '(none)'}")
    print(f"route/account:   {q.route} / {q.account} ({q.provider})")
    if d.tried:
        print(f"tried before:    {', '.join(d.tried)} (definitely not sent there; failed over)")
    print(f"sender:          {q.sender}")
    print(f"numbers:         {', '.join(q.numbers)} ({len(q.numbers)})")
    print(f"text:            {q.text}")
    print(f"size:            {q.encoding}, {q.pages} page(s), {q.points} point(s)")
    if q.credentials is not None:
        print("credentials:     from the mail body (held until delivery, then erased)")
    if d.state == State.SENT:
        print(f"sent:            {_when(r.updated)}")
    if d.carrier:
        lead = "this row's" if d.carrier == r.id else f"row {d.carrier}'s"
        print(f"carried in:      {lead} SMS, a digest of several alerts to the same numbers")
    if d.provider_msg_id:
        confirmed = "" if d.confirmed is not False else " (handed to the mail relay)"
        print(f"provider id:     {d.provider_msg_id}{confirmed}")
    if d.points_charged is not None:
        balance = f", balance after {d.balance_after:g}" if d.balance_after is not None else ""
        print(f"points charged:  {d.points_charged}{balance}")
    if d.last_error:
        print(f"last error:      {d.last_code + ' ' if d.last_code else ''}{d.last_error}")
    if d.provider_reply:
        print(f"provider reply:  {d.provider_reply[:300]}")
    if d.notice != Notice.NONE:
        print(f"failure notice:  {d.notice}")
    if d.operator != Notice.NONE:
        print(f"operator notice: {d.operator}")
    for warning in o.warnings:
        print(f"warning:         {warning}")
    if history:
        print("history:")
        for event in history:
            actor = f" (by {event.actor})" if event.actor else ""
            print(f"  {_when(event.at)}  {event.event}{actor}: {event.detail}")
    print()


def cmd_queue(args: argparse.Namespace) -> int:
    import getpass  # noqa: PLC0415

    from bridge import outbox  # noqa: PLC0415

    config = _load_config(args, secrets=False)
    try:
        with outbox.transaction(config.queue) as conn:
            return _queue_action(args, conn, outbox.op_clock(conn), f"cli:{getpass.getuser()}")
    except outbox.NoOutbox as exc:
        running = _running_outbox(config)
        hint = f"; the running bridge's outbox is {running}" if running else "; start the bridge first"
        print(f"sms-bridge: {exc}{hint}", file=sys.stderr)
        return 1
    except outbox.OutboxError as exc:
        print(f"sms-bridge: {exc}", file=sys.stderr)
        return 1


def _running_outbox(config: Config) -> str | None:
    """Where the bridge answering on ``admin.listen`` keeps its outbox (its ``/healthz``), if one answers."""
    if not config.admin.listen:
        return None
    import httpx  # noqa: PLC0415

    host, port = parse_host_port(config.admin.listen)
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  (a wildcard is reached on loopback)
    try:
        reply = httpx.get(f"http://{'[' + host + ']' if ':' in host else host}:{port}/healthz", timeout=2)
        backend = reply.json().get("database", {}).get("backend")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return str(backend) if backend else None


def _queue_action(args: argparse.Namespace, conn: Tx, now: float, actor: str) -> int:
    from bridge import outbox  # noqa: PLC0415
    from bridge.phone import numbers_for_log  # noqa: PLC0415

    if args.action == "list":
        rows = outbox.op_list(conn, args.state, args.limit)
        counts = outbox.op_counts(conn)
        print("  ".join(f"{k}={v}" for k, v in counts.items() if v) or "the outbox is empty")
        for r in rows:
            d = r.delivery
            error = f"  {d.last_code + ' ' if d.last_code else ''}{d.last_error}" if d.last_error else ""
            print(
                f"{r.id:<22} {d.state:<9} {r.request.account:<10} {numbers_for_log(r.request.numbers):<28} "
                f"attempts={d.attempts} {_when(r.updated)}{error}"
            )
        return 0
    if args.action == "show":
        rows = outbox.op_get(conn, args.id)
        if not rows:
            print(f"sms-bridge: no message {args.id}", file=sys.stderr)
            return 1
        for r in rows:
            print_row(r, outbox.op_history(conn, r.id))
        return 0
    if args.action == "retry":
        ids = outbox.op_requeue(conn, args.id, now, actor)
        verb, hint = "queued again", "only failed, unknown, expired or cancelled messages can be retried"
    elif args.action == "not-sent":
        ids = outbox.op_mark_not_sent(conn, args.id, now, actor)
        verb, hint = "marked as not sent", "only unknown messages (may or may not have been sent) can be marked"
    else:
        ids = outbox.op_cancel(conn, args.id, now, actor)
        verb, hint = "cancelled", "only queued messages can be cancelled"
    if not ids:
        print(f"sms-bridge: nothing to do for {args.id}: {hint}", file=sys.stderr)
        return 1
    for i in ids:
        print(f"{i}: {verb}")
    return 0


class _Help(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples as written; each option's default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if "%(default)" in text or default in (None, False, argparse.SUPPRESS) or action.option_strings == []:
            return text
        return f"{text} (default: %(default)s)"


#: what each command is for, and how it is typed; shown by ``sms-bridge COMMAND --help``
EXAMPLES: dict[str, tuple[str, str]] = {
    "serve": (
        "Run the bridge: SMTP (and LMTP, IMAP, the webhook) in, the outbox, dispatch to the providers, failure\n"
        "notices. SIGTERM drains and stops; SIGHUP (systemctl reload) re-reads the config. One bridge per\n"
        "SQLite outbox: a second serve on the same outbox exits at once, naming the one that runs.",
        "sms-bridge serve -c /etc/sms-bridge/config.yaml\nsms-bridge serve -c config.example.yaml --log-level DEBUG",
    ),
    "check-config": (
        "Read the config and list every problem with its path (exit 78), then what works but will surprise.",
        "sms-bridge check-config\nsudo sms-bridge check-config -c /etc/sms-bridge/config.yaml --no-env",
    ),
    "check": (
        "Parse and validate one message as the bridge would, without sending it: exit 0 if it would be\n"
        "accepted (printing each SMS, its encoding, pages and points), 1 if not (printing every problem).",
        "sms-bridge check mail.eml\nsms-bridge check - --rcpt oncall@alerts.example.com < alert.eml\n"
        "sms-bridge check mail.eml --json",
    ),
    "send": (
        "Validate one SMS exactly as mail is validated, then make one provider call per 200 numbers and\n"
        "print each result. It waits out, and counts for, the same-number pacing the running bridge keeps.",
        "sms-bridge send --account demo --to 96597119440 --text 'Hello'\n"
        "sms-bridge send --account kwt --to 96597119440,96566074414 --text 'Test' --test",
    ),
    "balance": ("Ask each account's provider for its balance.", "sms-bridge balance\nsms-bridge balance --account kwt"),
    "senders": ("List the sender IDs the provider allows an account (KwtSMS).", "sms-bridge senders --account kwt"),
    "sendmail": (
        "The sendmail command line (also as a symlink named sendmail): a message on standard input to the\n"
        "local bridge over SMTP. sms-bridge sendmail --help lists its flags.",
        "printf 'Subject: backup failed\\n\\nexit 2\\n' | sms-bridge sendmail root",
    ),
    "hash-password": (
        "Read a password (twice on a terminal, else one line of standard input) and print the scrypt\n"
        "hash for clients.<name>.password or admin.users.",
        "sms-bridge hash-password\necho 'a long password' | sms-bridge hash-password",
    ),
    "imap-check": (
        "Log in to each configured mailbox and report what the bridge would see, taking nothing.",
        "sms-bridge imap-check",
    ),
    "queue": (
        "Look at and act on the outbox; works beside a running bridge.",
        "sms-bridge queue list --state failed\nsms-bridge queue show 01a2299cf0378cf6c95f20\n"
        "sms-bridge queue retry 01a2299cf0378cf6c95f20",
    ),
    "simulate": (
        "A local stand-in for the KwtSMS and OpenTech HTTP APIs, written from their documents, printing\n"
        "each SMS instead of sending it. Point accounts.<name>.url at it.",
        "sms-bridge simulate\nsms-bridge simulate --listen 127.0.0.1:8800 --fault drop:1 --jsonl sent.jsonl",
    ),
}


def _with_common(sub: Any, common: argparse.ArgumentParser) -> None:
    """Every (sub)command takes the common options, before or after its name, and has a
    description and examples."""
    real_add = sub.add_parser

    def add_parser(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        description, examples = EXAMPLES.get(name, (kwargs.get("help", ""), ""))
        kwargs.setdefault("description", description)
        if examples:
            kwargs.setdefault("epilog", "examples:\n" + "\n".join(f"  {line}" for line in examples.splitlines()))
        parser: argparse.ArgumentParser = real_add(name, parents=[common], formatter_class=_Help, **kwargs)
        return parser

    sub.add_parser = add_parser


def build_parser() -> argparse.ArgumentParser:
    # -c, --env-file and --log-level are taken before or after the command
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"the YAML config file (default: $SMS_BRIDGE_CONFIG, else {DEFAULT_CONFIG})",
    )
    common.add_argument(
        "--env-file",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help=f"KEY=VALUE secrets for ${{NAME}} in the config, as systemd reads them "
        f"(default: {DEFAULT_ENV_FILE} when readable; '' for none)",
    )
    common.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=argparse.SUPPRESS,
        help="the least severe level logged (default: the config's logging.level, INFO)",
    )
    parser = argparse.ArgumentParser(
        prog="sms-bridge", description="An email-to-SMS bridge for KwtSMS and OpenTech.", parents=[common]
    )
    parser.add_argument("--version", action="version", version=f"sms-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _with_common(sub, common)

    p = sub.add_parser("check-config", help="read the config and report every problem")
    p.add_argument(
        "--no-env",
        action="store_true",
        help="do not fail on ${NAME} variables that are not set (secrets kept elsewhere)",
    )
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("check", help="parse and validate one message without sending it")
    p.add_argument("message", metavar="MESSAGE.eml", help="the message file, or - for standard input")
    p.add_argument(
        "--rcpt", action="append", metavar="ADDRESS", help="an envelope recipient (repeatable; default: To: and Cc:)"
    )
    p.add_argument("--mail-from", metavar="ADDRESS", default=None, help="the envelope sender (default: From:)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("send", help="validate one SMS exactly as mail is validated, then make one provider call")
    p.add_argument("--account", required=True, help="the account to send with")
    p.add_argument(
        "--to", required=True, nargs="+", action="extend", metavar="NUMBER", help="numbers (also comma-separated)"
    )
    p.add_argument("--text", required=True, help="the SMS text (validated and measured as mail text is)")
    p.add_argument("--sender", default=None, help="sender ID (default: the account's)")
    p.add_argument("--lang", default=None, choices=["1", "2", "3", "4"], help="KwtSMS lang (default: detected)")
    p.add_argument("--test", action="store_true", help="KwtSMS test mode: queued, not delivered (points are deducted)")
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("balance", help="ask the provider for the account balance")
    p.add_argument("--account", default=None, help="one account (default: all)")
    p.set_defaults(func=cmd_balance)

    p = sub.add_parser("senders", help="list the sender IDs the provider allows the account")
    p.add_argument("--account", required=True, help="the account to ask about")
    p.set_defaults(func=cmd_senders)

    p = sub.add_parser("serve", help="run the bridge: SMTP in, outbox, dispatch")
    p.set_defaults(func=cmd_serve)

    sub.add_parser(
        "sendmail",
        help="read a message on standard input and submit it to the bridge (sendmail's flags: -t, -f, -i, ...)",
    )

    p = sub.add_parser("hash-password", help="print a hash for clients.<name>.password (reads the password)")
    p.set_defaults(func=cmd_hash_password)

    p = sub.add_parser("imap-check", help="log in to each configured mailbox and report, taking nothing")
    p.set_defaults(func=cmd_imap_check)

    p = sub.add_parser("queue", help="look at and act on the outbox")
    qsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    _with_common(qsub, common)
    q = qsub.add_parser("list", help="recent messages, newest first")
    q.add_argument("--state", choices=[s.value for s in State], help="only messages in this state")
    q.add_argument("--limit", type=int, default=50, help="at most this many, newest first")
    for action, text in (
        ("show", "everything about one message"),
        ("retry", "send a failed, unknown, expired or cancelled message again"),
        ("cancel", "do not send a queued message"),
        ("not-sent", "an unknown message the provider's records show was not sent: mark it failed"),
    ):
        q = qsub.add_parser(action, help=text)
        q.add_argument("id", help="the id from the 250 reply or queue list")
    p.set_defaults(func=cmd_queue)

    p = sub.add_parser("simulate", help="run a local stand-in for the KwtSMS and OpenTech HTTP APIs")
    p.add_argument("--listen", default="127.0.0.1:8800", metavar="HOST:PORT", help="where to listen")
    p.add_argument(
        "--accounts", default=None, metavar="FILE", help="YAML file of simulated accounts (default: demo accounts)"
    )
    p.add_argument(
        "--jsonl", default=None, metavar="FILE", help="also append each delivered SMS to FILE as a JSON line"
    )
    p.add_argument(
        "--fault",
        action="append",
        metavar="MODE[:COUNT]",
        help="drop, drop-before, http500, http503 or slow, for COUNT requests (default: all)",
    )
    p.add_argument(
        "--max-rate", type=float, default=5.0, help="requests per second per IP before lockout (0: no limit)"
    )
    p.add_argument(
        "--repeat-window", type=float, default=15.0, help="seconds before the same number may be sent again (ERR028)"
    )
    p.set_defaults(func=cmd_simulate)
    return parser


def sendmail_main(argv: list[str], common: list[str]) -> int:
    """``sms-bridge sendmail …`` and a ``sendmail`` symlink: sendmail's own flags, not argparse's."""
    from bridge import sendmail  # noqa: PLC0415

    flags = argv[: argv.index("--")] if "--" in argv else argv
    if "-h" in flags or "--help" in flags:
        print(sendmail.USAGE)
        return 0
    try:
        opts = sendmail.parse_args(argv)
    except sendmail.Usage as exc:
        print(f"sendmail: {exc}", file=sys.stderr)
        return sendmail.EX_USAGE
    parser = argparse.ArgumentParser(prog="sms-bridge", add_help=False)
    parser.add_argument("-c", "--config", default=opts.config)
    parser.add_argument("--env-file", default=None)
    parser.add_argument("--log-level", default=None)
    args, rest = parser.parse_known_args(common)
    if rest:
        print(f"sendmail: unknown option {rest[0]}", file=sys.stderr)
        return sendmail.EX_USAGE
    setup_logging(args.log_level or logging.WARNING)
    try:
        # the providers' secrets are not needed to hand a mail to the bridge
        config = load(config_path(args), env=environment(args), missing=[])
    except ConfigError as exc:
        print(f"sendmail: {exc.describe()}", file=sys.stderr)
        return EX_CONFIG
    return sendmail.run(argv, config)


COMMON_WITH_VALUE = ("-c", "--config", "--env-file", "--log-level")


def _split_sendmail(argv: list[str]) -> tuple[list[str], list[str]] | None:
    """(common options, sendmail's arguments) when the command is ``sendmail``; else None."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "sendmail":
            return argv[:i], argv[i + 1 :]
        if arg in COMMON_WITH_VALUE:
            i += 2
        elif arg.startswith(tuple(f"{o}=" for o in COMMON_WITH_VALUE if o.startswith("--"))):
            i += 1
        else:
            return None
    return None


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if argv is None and Path(sys.argv[0]).name == "sendmail":
        return sendmail_main(args_list, [])
    split = _split_sendmail(args_list)
    if split is not None:
        return sendmail_main(split[1], split[0])
    args = build_parser().parse_args(args_list)
    for name in ("config", "env_file", "log_level"):  # the common options, wherever given
        if not hasattr(args, name):
            setattr(args, name, None)
    setup_logging(args.log_level or logging.INFO)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"sms-bridge: {exc.describe()}", file=sys.stderr)
        return EX_CONFIG
    except UsageError as exc:
        print(f"sms-bridge {args.command}: {exc}", file=sys.stderr)
        return EX_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sms-bridge queue list | head`: the reader has gone, nothing more to say
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  (so that the interpreter's final flush is quiet)
        return 141
    return result
