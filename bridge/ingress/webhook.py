"""The alert webhook: Alertmanager's and Grafana's webhook JSON, as an alternative to mail.

``POST /alerts/<route>?to=<alias or number>[,…]`` on the admin listener, with
``Authorization: Bearer <token>`` (``clients.<name>.token``). The alerts go
through the route's profile, validation, the client's limits, the outbox and
digests exactly as mail does. ``200`` only after the outbox has committed and
synced; anything wrong gets a ``4xx`` whose JSON body names the problem, and
nothing is stored.

Replies: ``200`` queued · ``400`` bad JSON, a route that takes no alerts, no
``to`` · ``401`` no or unknown token · ``403`` a route or account the client
may not use, a daily cap · ``404`` no such route · ``413`` too large ·
``422`` not a notification, or a problem with the SMS (numbers, text…) ·
``429`` a limit for now (``Retry-After``) · ``503`` the outbox is unavailable.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from bridge.config import Config
from bridge.core.access import may_use_route, webhook_client
from bridge.core.formats.alerts import WebhookError, from_webhook
from bridge.core.intake import decide
from bridge.core.model import InboundMail
from bridge.errors import OutboxError
from bridge.ingress.accept import admit
from bridge.outbox import Outbox
from bridge.runtime import Runtime

log = logging.getLogger("bridge.webhook")


def _reply(status: int, error: str, **extra: Any) -> web.Response:
    headers = {"WWW-Authenticate": 'Bearer realm="sms-bridge"'} if status == 401 else None
    return web.json_response({"error": error, **extra}, status=status, headers=headers)


class AlertWebhook:
    def __init__(
        self, config: Config, outbox: Outbox, runtime: Runtime, stopping: Callable[[], bool] = lambda: False
    ) -> None:
        self.config = config
        self.stopping = stopping
        self.outbox = outbox
        self.runtime = runtime

    @property
    def max_size(self) -> int:
        return self.config.smtp.max_message_size

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._handle(request)
        if response.status != 200 and response.status not in (403, 429):  # those two are counted by admit
            reason = {400: "request", 401: "auth", 404: "route", 413: "size", 422: "field", 503: "unavailable"}
            self.runtime.metrics.refused("webhook", "webhook", reason.get(response.status, str(response.status)))
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        peer = request.remote or "?"
        if self.stopping():
            return _reply(503, "the bridge is stopping; try again shortly", retry=True)
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _reply(401, "no bearer token: send Authorization: Bearer <token> (clients.<name>.token)")
        client = await asyncio.to_thread(webhook_client, self.config, token.strip(), request.remote)
        if client is None:
            log.warning("webhook refused peer=%s: unknown token", peer)
            return _reply(401, "the bearer token is not one this bridge knows (or not from this network)")
        client_name, settings = client
        route_name = request.match_info["route"]
        route = self.config.routes.get(route_name)
        if route is None:
            return _reply(404, f"no route named {route_name!r}")
        if route.format != "address" or not route.domain:
            return _reply(400, f"route {route_name!r} does not take alerts: use an address-format route with a domain")
        if not may_use_route(settings, route_name):
            return _reply(403, f"client {client_name} may not use route {route_name!r}")
        targets = [t.strip() for value in request.query.getall("to", []) for t in value.split(",") if t.strip()]
        if not targets:
            return _reply(400, "to: missing; add ?to=<alias or number> to the webhook URL")
        if request.content_length is not None and request.content_length > self.max_size:
            return _reply(413, f"the body is larger than {self.max_size} bytes (smtp.max_message_size)")
        try:
            raw = await request.content.read(self.max_size + 1)
        except (OSError, asyncio.IncompleteReadError) as exc:
            return _reply(400, f"the body could not be read: {type(exc).__name__}")
        if len(raw) > self.max_size:
            return _reply(413, f"the body is larger than {self.max_size} bytes (smtp.max_message_size)")
        try:
            payload = _without_nul(json.loads(raw))
        except (ValueError, RecursionError) as exc:
            return _reply(400, f"the body is not JSON: {exc}")
        try:
            alerts, title = from_webhook(payload)
        except WebhookError as exc:
            return _reply(422, str(exc))
        mail = InboundMail(
            mail_from="",
            rcpt_tos=tuple(f"{t}@{route.domain}" for t in targets),
            subject=title,
            body="",
            from_header=f"webhook client {client_name}",
        )
        verdict = decide(mail, self.config, alerts)
        if not verdict.ok:
            problems = [{"field": p.field, "message": p.message} for p in verdict.problems]
            return _reply(422, "; ".join(f"{p.field}: {p.message}" for p in verdict.problems), problems=problems)
        try:
            admission = await admit(
                self.config,
                self.outbox,
                self.runtime,
                client_name=client_name,
                mail=mail,
                verdict=verdict,
                via="webhook",
                fingerprint=None,  # a repeated notification is a new page, not a resubmission
            )
        except OutboxError as exc:  # counted by handle() as "unavailable"
            log.warning("webhook: the alerts from %s were not accepted: %s", peer, exc)
            return _reply(503, "the bridge cannot store messages right now; try again", retry=True)
        if admission.kind == "refused":
            return _reply(403, "; ".join(map(str, admission.problems)))
        if admission.kind == "later":
            return web.json_response({"error": admission.reason}, status=429, headers={"Retry-After": "60"})
        if admission.kind == "over":
            return _reply(403, admission.reason)
        mail_id = admission.enqueued.mail_id if admission.enqueued else ""
        return web.json_response(
            {
                "status": admission.kind,
                "id": mail_id,
                "alerts": len(alerts.alerts),
                "warnings": list(verdict.warnings),
            }
        )


def _without_nul(value: object) -> object:
    """The decoded JSON with NUL characters (``\\u0000``) removed from every string, as
    from mail: no SMS carries them, and PostgreSQL text cannot hold them."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value
