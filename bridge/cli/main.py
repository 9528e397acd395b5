"""The ``sms-bridge`` command line.

Exit status: 0 success, 1 the message would be rejected (``check``) or the
command failed, 2 wrong usage, 66 input file missing, 78 bad configuration."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.app.logs import setup_logging
from bridge.cli.checks import cmd_check, cmd_check_config, cmd_imap_check
from bridge.cli.common import (
    DEFAULT_CONFIG,
    DEFAULT_ENV_FILE,
    EX_CONFIG,
    EX_SOFTWARE,
    EX_USAGE,
    UsageError,
    config_path,
    environment,
    load_config,
)
from bridge.cli.queueing import cmd_queue
from bridge.cli.sending import cmd_balance, cmd_send, cmd_senders, cmd_simulate
from bridge.config import load
from bridge.errors import BridgeError, ConfigError
from bridge.outbox import State
from bridge.outbox.actions import ACTIONS

log = logging.getLogger("bridge")


def cmd_serve(args: argparse.Namespace) -> int:
    from bridge.app.serve import serve  # noqa: PLC0415

    config = load_config(args)
    try:
        asyncio.run(serve(config, reload=lambda: load_config(args)))
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

    from bridge.core.access import hash_password  # noqa: PLC0415

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
    for action, text in (("show", "everything about one message"), *((a.name, a.help) for a in ACTIONS.values())):
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
    from bridge.cli import sendmail  # noqa: PLC0415

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
