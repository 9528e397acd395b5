"""``send``, ``balance``, ``senders`` and ``simulate``: the providers from the command line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from bridge.cli.common import EX_USAGE, check_account, load_config
from bridge.config import Config, RouteConfig, parse_host_port
from bridge.core.model import Draft, SmsRequest
from bridge.core.validate import validate
from bridge.errors import AmbiguousDelivery, DeliveryError, TransientDelivery
from bridge.providers import Provider, Sent, chunks, repeat_interval


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
    config = load_config(args)
    check_account(config, args.account)
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

    interval = repeat_interval(account)
    wait = _paced_for(config, args.account, r.numbers) if interval > 0 else 0.0
    if wait > 0:
        print(f"waiting {wait:.0f} s: the provider refuses a second SMS to the same number within {interval:g} s")

    async def run() -> int:
        from bridge.app.serve import open_providers  # noqa: PLC0415  (keeps `check` free of network imports)

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
            now = conn.now
            until = outbox.claims.paced_until(conn, account, numbers)
    except outbox.OutboxError:
        return 0.0
    return 0.0 if until is None else max(until - now, 0.0)


def _pace(config: Config, account: str, numbers: Sequence[str], interval: float) -> None:
    """What ``send`` sent holds its numbers back for the bridge too, as the bridge's own SMS do,
    so that a mail right after it waits instead of meeting the provider's refusal (ERR028)."""
    from bridge import outbox  # noqa: PLC0415

    try:
        with outbox.transaction(config.queue) as conn:
            outbox.claims.pace(conn, account, numbers, conn.now + interval)
    except outbox.NoOutbox:
        return
    except outbox.OutboxError as exc:
        print(f"warning: the outbox could not record the pacing of these numbers: {exc}", file=sys.stderr)


def cmd_balance(args: argparse.Namespace) -> int:
    config = load_config(args)
    names = [args.account] if args.account else list(config.accounts)
    for name in names:
        check_account(config, name)

    async def run() -> int:
        from bridge.app.serve import open_providers  # noqa: PLC0415

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
    config = load_config(args)
    check_account(config, args.account)

    async def run() -> int:
        from bridge.app.serve import open_providers  # noqa: PLC0415

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
