"""The admin endpoint: the status page (:mod:`bridge.web.status`), ``/healthz`` for probes,
``/metrics`` for Prometheus, and the alert webhook (``POST /alerts/<route>``,
:mod:`bridge.ingress.webhook`).

Off unless ``admin.listen`` is set; meant for loopback or a management
network, it shows counts and states, never a message, a number or a secret.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bridge.ingress.imap import MailboxWatcher
from bridge.ingress.smtp import Handler
from bridge.ingress.webhook import AlertWebhook
from bridge.notify.sender import Notifier
from bridge.outbox import Outbox, views
from bridge.runtime import Runtime
from bridge.runtime.breaker import LEVEL
from bridge.web.status import StatusPage


@dataclass
class Parts:
    outbox: Outbox
    handler: Handler
    runtime: Runtime
    notifier: Notifier
    watchers: Sequence[MailboxWatcher]
    stopping: Callable[[], bool]
    webhook: AlertWebhook
    status: StatusPage


def build(parts: Parts) -> web.Application:
    async def healthz(request: web.Request) -> web.Response:
        outbox = parts.outbox
        reachable, where = await outbox.health()
        database = {"backend": where, "reachable": reachable, "instance": outbox.instance}
        if not reachable:
            failing = {"status": "failing", "reason": "outbox unreachable", "database": database}
            return web.json_response(failing, status=503)
        try:
            counts = await outbox.run(views.counts)
        except Exception as exc:  # noqa: BLE001  (the probe reports it; the bridge keeps running)
            failing = {"status": "failing", "reason": f"outbox: {type(exc).__name__}", "database": database}
            return web.json_response(failing, status=503)
        status = "stopping" if parts.stopping() else "ok"
        body: dict[str, object] = {
            "status": status,
            "instance": outbox.instance,
            "database": database,
            "queue": counts,
            "imap": {w.label: w.connected.is_set() for w in parts.watchers},
            "breakers": {name: b.state for name, b in parts.runtime.breakers.items()},
        }
        return web.Response(
            text=json.dumps(body), status=200 if status == "ok" else 503, content_type="application/json"
        )

    async def metrics(request: web.Request) -> web.Response:
        live = parts.runtime.metrics
        counts = await parts.outbox.run(views.counts)
        for state, count in counts.items():
            live.queue.labels(state).set(count)
        oldest = await parts.outbox.run(views.oldest_queued)
        live.oldest.set(0 if oldest is None else max(parts.outbox.clock() - oldest, 0.0))
        for account, balance in parts.runtime.balances.items():
            live.balance.labels(account).set(balance)
        for watcher in parts.watchers:
            live.imap.labels(watcher.label).set(int(watcher.connected.is_set()))
        live.outbox_commits.set(parts.outbox.commits)
        for name, breaker in parts.runtime.breakers.items():
            live.breaker.labels(name).set(LEVEL[breaker.state])
        return web.Response(body=live.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application(client_max_size=parts.webhook.max_size + 1)
    app.router.add_post("/alerts/{route}", parts.webhook.handle)
    parts.status.routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app
