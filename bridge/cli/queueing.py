"""``queue``: look at and act on the outbox, beside a running bridge or without one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from bridge.cli.common import load_config
from bridge.config import Config, parse_host_port
from bridge.outbox import Event, Notice, Row, State, Tx, views
from bridge.outbox.actions import ACTIONS


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

    config = load_config(args, secrets=False)
    try:
        with outbox.transaction(config.queue) as conn:
            return _queue_action(args, conn, f"cli:{getpass.getuser()}")
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


def _queue_action(args: argparse.Namespace, conn: Tx, actor: str) -> int:
    from bridge.core.phone import numbers_for_log  # noqa: PLC0415

    if args.action == "list":
        rows = views.listing(conn, args.state, args.limit)
        counts = views.counts(conn)
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
        rows = views.rows_of(conn, args.id)
        if not rows:
            print(f"sms-bridge: no message {args.id}", file=sys.stderr)
            return 1
        for r in rows:
            print_row(r, views.history(conn, r.id))
        return 0
    what = ACTIONS[args.action]
    ids = what.run(conn, args.id, actor)
    verb, hint = what.done, what.why
    if not ids:
        print(f"sms-bridge: nothing to do for {args.id}: {hint}", file=sys.stderr)
        return 1
    for i in ids:
        print(f"{i}: {verb}")
    return 0
