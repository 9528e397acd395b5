"""The admin endpoint: ``/healthz`` for probes, ``/metrics`` for Prometheus, and the
alert webhook (``POST /alerts/<route>``, :mod:`bridge.ingress.webhook`).

Off unless ``admin.listen`` is set; meant for loopback or a management
network, it shows counts and states, never a message, a number or a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from bridge.dispatch import Dispatcher
from bridge.ingress.imap import MailboxWatcher
from bridge.ingress.smtp import Handler
from bridge.ingress.webhook import AlertWebhook
from bridge.notify import Notifier
from bridge.outbox import Outbox


@dataclass
class Parts:
    outbox: Outbox
    handler: Handler
    dispatcher: Dispatcher
    notifier: Notifier
    watchers: Sequence[MailboxWatcher]
    stopping: Callable[[], bool]
    webhook: AlertWebhook


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ")


def build(parts: Parts) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        try:
            counts = await parts.outbox.counts()
        except Exception as exc:  # noqa: BLE001  (the probe reports it; the bridge keeps running)
            failing = {"status": "failing", "reason": f"outbox: {type(exc).__name__}"}
            return web.json_response(failing, status=503)
        status = "stopping" if parts.stopping() else "ok"
        body: dict[str, object] = {
            "status": status,
            "queue": counts,
            "imap": {w.label: w.connected.is_set() for w in parts.watchers},
        }
        return web.Response(
            text=json.dumps(body), status=200 if status == "ok" else 503, content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        counts = await parts.outbox.counts()
        lines = [
            "# HELP sms_bridge_messages SMS in the outbox, by state.",
            "# TYPE sms_bridge_messages gauge",
            *(f'sms_bridge_messages{{state="{state}"}} {count}' for state, count in counts.items()),
            "# HELP sms_bridge_mail_accepted_total Mails accepted over SMTP since start.",
            "# TYPE sms_bridge_mail_accepted_total counter",
            f"sms_bridge_mail_accepted_total {parts.handler.accepted}",
            "# HELP sms_bridge_mail_rejected_total Mails refused over SMTP since start.",
            "# TYPE sms_bridge_mail_rejected_total counter",
            f"sms_bridge_mail_rejected_total {parts.handler.rejected}",
            "# HELP sms_bridge_provider_calls_total Provider calls made since start.",
            "# TYPE sms_bridge_provider_calls_total counter",
            f"sms_bridge_provider_calls_total {parts.dispatcher.attempts}",
            "# HELP sms_bridge_notices_sent_total Failure notices mailed since start.",
            "# TYPE sms_bridge_notices_sent_total counter",
            f"sms_bridge_notices_sent_total {parts.notifier.sent}",
            "# HELP sms_bridge_outbox_commits_total Outbox transactions committed since start.",
            "# TYPE sms_bridge_outbox_commits_total counter",
            f"sms_bridge_outbox_commits_total {parts.outbox.commits}",
            "# HELP sms_bridge_imap_connected 1 while the mailbox is connected.",
            "# TYPE sms_bridge_imap_connected gauge",
            *(
                f'sms_bridge_imap_connected{{mailbox="{_label(w.label)}"}} {int(w.connected.is_set())}'
                for w in parts.watchers
            ),
            "# HELP sms_bridge_balance_points The last balance the provider reported.",
            "# TYPE sms_bridge_balance_points gauge",
            *(
                f'sms_bridge_balance_points{{account="{_label(a)}"}} {b:g}'
                for a, b in sorted(parts.dispatcher.balances.items())
            ),
        ]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")

    app = web.Application(client_max_size=parts.webhook.max_size + 1)
    app.router.add_post("/alerts/{route}", parts.webhook.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
