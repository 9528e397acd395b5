"""``check-config``, ``check`` and ``imap-check``: look, send nothing."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from bridge.cli.common import EX_NOINPUT, config_path, load_config
from bridge.config import warnings as config_warnings
from bridge.core.intake import decide
from bridge.core.mail import parse_mail
from bridge.core.model import Verdict


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args, secrets=not args.no_env)
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
    config = load_config(args, secrets=False)
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


def cmd_imap_check(args: argparse.Namespace) -> int:
    from bridge.ingress.imap import ImapFailure, check  # noqa: PLC0415

    config = load_config(args)
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
