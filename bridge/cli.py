"""The ``sms-bridge`` command line.

Exit status: 0 success, 1 the message would be rejected (``check``) or the
command failed, 2 wrong usage, 66 input file missing, 78 bad configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge import __version__
from bridge.config import Config, load
from bridge.errors import ConfigError
from bridge.intake import decide
from bridge.mail import parse_mail
from bridge.model import Verdict

EX_USAGE = 2
EX_NOINPUT = 66
EX_CONFIG = 78


def _load_config(path: str) -> Config:
    return load(path)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    print(f"{args.config}: OK ({len(config.accounts)} account(s), {len(config.routes)} route(s))")
    for name, route in config.routes.items():
        serves = ", ".join(route.recipients) if route.recipients else ""
        if route.domain:
            serves = (serves + ", " if serves else "") + f"<number or alias>@{route.domain}"
        account = config.accounts[route.account]
        print(f"  route {name}: {route.format} format, {serves} → account {route.account} ({account.provider})")
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
    config = _load_config(args.config)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sms-bridge", description="An email-to-SMS bridge for KwtSMS and OpenTech.")
    parser.add_argument("--version", action="version", version=f"sms-bridge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, metavar="FILE", help="the YAML config file")

    p = sub.add_parser("check-config", help="read the config and report every problem")
    config_arg(p)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("check", help="parse and validate one message without sending it")
    config_arg(p)
    p.add_argument("message", metavar="MESSAGE.eml", help="the message file, or - for standard input")
    p.add_argument(
        "--rcpt", action="append", metavar="ADDRESS", help="an envelope recipient (repeatable; default: To: and Cc:)"
    )
    p.add_argument("--mail-from", metavar="ADDRESS", default=None, help="the envelope sender (default: From:)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except ConfigError as exc:
        print(f"sms-bridge: {exc.describe()}", file=sys.stderr)
        return EX_CONFIG
    except KeyboardInterrupt:
        return 130
    return result
