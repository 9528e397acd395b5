"""Dispatch: workers claim due SMS, make one provider attempt, record the outcome.

One loop per account paces itself by the account's rate limiter and claims
rows only when a request could start now, so that rows never wait in
``sending`` and identical texts that piled up meanwhile are combined into one
call. Outcomes:

- sent → ``sent`` with the provider's message id and points;
- transient → back to ``queued`` after the retry schedule (with jitter, and
  at least what the provider asked for), or ``expired`` past ``max_age``;
- permanent → ``failed``, and a failure notice to the sender;
- ambiguous → ``unknown`` (not resent), unless the account opted in to
  at-least-once, when it is retried like a transient failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from bridge.config import Config
from bridge.core.model import Draft, SmsRequest
from bridge.core.phone import numbers_for_log
from bridge.core.validate import validate
from bridge.errors import AmbiguousDelivery, DeliveryError, LeaseLost, OutboxError, PermanentDelivery, TransientDelivery
from bridge.outbox import (
    MAYBE_SENT,
    NOTIFIED,
    REFUSED,
    Group,
    Notice,
    Outbox,
    Pacing,
    Row,
    State,
    claims,
    notices,
    results,
)
from bridge.providers import Provider, Sent, repeat_interval
from bridge.runtime import Runtime
from bridge.runtime.aio import wait_any
from bridge.runtime.outcomes import Outcome

log = logging.getLogger("bridge.dispatch")


class Dispatcher:
    def __init__(
        self,
        config: Config,
        outbox: Outbox,
        providers: dict[str, Provider],
        runtime: Runtime,
        *,
        on_notice: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.outbox = outbox
        self.providers = providers
        self.runtime = runtime
        self.metrics = runtime.metrics
        #: the last balance each provider reported (kept in the outbox across restarts)
        self.balances = runtime.balances
        #: what ``ack: delivered`` sessions wait for
        self.outcomes = runtime.outcomes
        self.breakers = runtime.breakers
        self.last_result = runtime.last_result
        self.on_notice = on_notice
        self.rng = rng or random.Random()  # noqa: S311  (jitter, not secrets)
        self._wake = runtime.wakeups
        self.pacing = {name: self._pacing(name) for name in providers}
        self.attempts = 0  # provider calls made (for metrics and the benchmark)
        self._outbox_trouble: set[str] = set()

    def _pacing(self, account: str) -> Pacing:
        settings = self.config.accounts[account]
        pages = {
            name: route.digest_pages
            for name, route in self.config.routes.items()
            if account in route.accounts() and route.digest_pages is not None
        }
        return Pacing(interval=repeat_interval(settings), digest_pages=pages, default_pages=settings.max_pages)

    def wake(self, account: str | None = None) -> None:
        """Look for due rows now: of ``account``, or of every account."""
        self.runtime.wake(account)

    # -- the loops ---------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Dispatch until ``stop`` is set, then let attempts in flight finish."""
        async with asyncio.TaskGroup() as attempts, asyncio.TaskGroup() as loops:
            for name, provider in self.providers.items():
                loops.create_task(self._account_loop(name, provider, attempts, stop), name=f"dispatch-{name}")
        log.info("dispatch stopped; %d provider call(s) made", self.attempts)

    async def _account_loop(
        self, name: str, provider: Provider, attempts: asyncio.TaskGroup, stop: asyncio.Event
    ) -> None:
        wake = self._wake[name]
        in_flight = asyncio.Semaphore(self.config.dispatch.in_flight)
        while not stop.is_set():
            delay = provider.limiter.ready_in()
            if delay > 0:
                await wait_any(stop, seconds=delay)
                continue
            await in_flight.acquire()
            if stop.is_set():
                in_flight.release()
                break
            wake.clear()
            try:
                group = await self.outbox.run(
                    claims.claim, name, combine=self.config.dispatch.combine, pacing=self.pacing[name]
                )
                if not group.rows:
                    in_flight.release()
                    due = await self.outbox.run(claims.next_due, name)
                    idle = 1.0 if due is None else min(max(due - self.outbox.clock(), 0.0), 1.0)
                    await wait_any(wake, stop, seconds=idle)
                    continue
                diverted = await self._divert_if_down(name, group)
            except OutboxError as exc:
                # claimed rows, if any, go back to the queue when their lease runs out
                in_flight.release()
                self._outbox_down(name, exc)
                await wait_any(stop, seconds=2.0)
                continue
            self._outbox_up(name)
            if diverted:
                in_flight.release()
                continue
            attempts.create_task(self._attempt(name, provider, group, in_flight))

    def _outbox_down(self, account: str, exc: OutboxError) -> None:
        if account not in self._outbox_trouble:
            log.warning("dispatch %s: %s; trying again every 2 s", account, exc)
        self._outbox_trouble.add(account)

    def _outbox_up(self, account: str) -> None:
        if account in self._outbox_trouble:
            self._outbox_trouble.discard(account)
            log.warning("dispatch %s: the outbox answers again", account)

    async def _stored(self, what: str, store: Callable[[], Awaitable[object]]) -> None:
        """Record an outcome, however long the outbox is away: what a provider said
        cannot be asked again. (If the bridge stops first, the rows stay ``sending``
        and become ``unknown``: never resent.)"""
        delay = 0.5
        while True:
            try:
                await store()
            except LeaseLost:
                raise
            except OutboxError as exc:
                log.warning("cannot record %s yet (%s); trying again in %.0f s", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            else:
                return

    async def _attempt(self, name: str, provider: Provider, group: Group, in_flight: asyncio.Semaphore) -> None:
        try:
            ids = group.ids

            async def on_start() -> None:
                await self.outbox.run(claims.mark_sending, group)

            if any(r.request.credentials is not None and not r.request.credentials.password for r in group.rows):
                reason = "the credentials from the mail were erased after an earlier attempt; send the mail again"
                await self._finish(group.rows, State.FAILED, PermanentDelivery(reason))
                return
            self.attempts += 1
            began = time.monotonic()
            breaker = self.breakers[name]
            try:
                sent = await provider.send(group.request(), on_start=on_start)
            except LeaseLost as exc:
                log.warning("not sent by this instance: %s", exc)
                return
            except OutboxError as exc:  # before the call: nothing was handed to the provider
                log.warning("not sending %s now: %s", ", ".join(ids), exc)
                with contextlib.suppress(OutboxError):
                    await self.outbox.run(claims.hold, ids, self.outbox.clock() + 2.0)
                return
            except TransientDelivery as exc:
                self._called(name, began, "transient", exc.code)
                rows = await self._after_failure(name, group.rows, exc)
                if rows:
                    await self._transient(rows, exc)
            except AmbiguousDelivery as exc:
                self._called(name, began, "unknown", exc.code)
                breaker.inconclusive(self.outbox.clock())
                if self.config.accounts[name].at_least_once:
                    await self._transient(group.rows, exc)
                else:
                    await self._finish(group.rows, State.UNKNOWN, exc)
            except PermanentDelivery as exc:
                self._called(name, began, "permanent", exc.code)
                rows = await self._after_failure(name, group.rows, exc)
                if rows:
                    await self._finish(rows, State.FAILED, exc)
            else:
                self._called(name, began, "sent", "OK")
                breaker.succeeded()
                await self._sent(group, provider, sent)
            interval = self.pacing[name].interval
            if interval > 0:  # counted from the provider's answer, so its clock sees the full interval
                numbers = group.request().numbers
                await self._stored(
                    "pacing", lambda: self.outbox.run(claims.pace, name, numbers, self.outbox.clock() + interval)
                )
        finally:
            in_flight.release()

    # -- failover ----------------------------------------------------------

    async def _after_failure(self, account: str, rows: list[Row], exc: DeliveryError) -> list[Row]:
        """After a refusal: the breaker learns of it, and a definitely-not-sent one moves
        each row that has a fallback account where it is valid; the rows left stay here."""
        breaker = self.breakers[account]
        if not exc.failover:
            breaker.succeeded()  # the provider answered: it is up, this SMS is the problem
            return rows
        breaker.failed(self.outbox.clock(), f"{exc.code + ' ' if exc.code else ''}{exc.reason}")
        return await self._fail_over(account, rows, exc.reason, exc.code)

    async def _divert_if_down(self, account: str, group: Group) -> bool:
        """Before sending: with the circuit open, or a known balance too low, the group's
        rows go to their fallbacks, and the rest wait for the next probe. True if diverted."""
        breaker = self.breakers[account]
        now = self.outbox.clock()
        reason = ""
        if not breaker.may_send(now):
            reason = f"account {account} is failing (circuit open)"
        else:
            balance = self.balances.get(account)
            points = group.request().points
            if balance is not None and balance < points and all(r.request.fallbacks for r in group.rows):
                reason = f"account {account} cannot pay ({points} points; last known balance {balance:g})"
                if breaker.state == "half-open":
                    breaker.inconclusive(now)
        if not reason:
            return False
        stay = await self._fail_over(account, group.rows, reason, "")
        if stay:
            # open: until the next probe; half-open (a probe is out) or no fallback valid: shortly
            until = breaker.next_probe if breaker.state == "open" else now + min(breaker.settings.probe_interval, 5.0)
            await self.outbox.run(claims.hold, [r.id for r in stay], until)
        return True

    async def _fail_over(self, account: str, rows: list[Row], reason: str, code: str) -> list[Row]:
        moves: list[tuple[Row, SmsRequest]] = []
        stay: list[Row] = []
        for row in rows:
            target = self._next_account(row, account)
            if target is None:
                stay.append(row)
            else:
                moves.append((row, target))
        if moves:
            await self._stored("a failover", lambda: self.outbox.run(claims.fail_over, moves, reason=reason, code=code))
            for row, target in moves:
                log.warning(
                    "failover id=%s from=%s to=%s: %s%s",
                    row.id,
                    account,
                    target.account,
                    code + " " if code else "",
                    reason,
                )
                self.metrics.failovers.labels(account, target.account).inc()
            for target_account in dict.fromkeys(t.account for _, t in moves):
                self.wake(target_account)
        return stay

    def _next_account(self, row: Row, current: str) -> SmsRequest | None:
        """The SMS as the first untried fallback account would send it, if it is valid there."""
        request = row.request
        if request.credentials is not None:  # credentials from the mail belong to one account
            return None
        tried = {*row.delivery.tried, current}
        route = self.config.routes.get(request.route)
        for candidate in request.fallbacks:
            if candidate in tried or candidate not in self.providers or route is None:
                continue
            if self.breakers[candidate].state == "open":
                continue
            account = self.config.accounts[candidate]
            sender = request.sender
            if sender == self.config.accounts[current].sender or (
                account.senders is not None and sender not in account.senders
            ):
                sender = account.sender or sender  # the first account's default: the fallback's own
            draft = Draft(
                route=request.route,
                numbers=request.numbers,
                numbers_field="recipient",
                text=request.text,
                sender=sender,
                digest=request.digest,
                brief=request.brief,
                alert_key=request.alert_key,
                resolved=request.resolved,
            )
            outcome = validate(draft, account_name=candidate, account=account, route=route, numbers=self.config.numbers)
            if outcome.request is None:
                log.info("no failover id=%s to %s: %s", row.id, candidate, "; ".join(map(str, outcome.problems)))
                continue
            return replace(outcome.request, fallbacks=request.fallbacks)
        return None

    def _called(self, account: str, began: float, result: str, code: str) -> None:
        self.last_result[account] = (self.outbox.clock(), result, code)
        self.metrics.provider_latency.labels(account).observe(time.monotonic() - began)
        self.metrics.provider_calls.labels(account, result, code or "-").inc()

    # -- outcomes ----------------------------------------------------------

    async def _sent(self, group: Group, provider: Provider, sent: Sent) -> None:
        rows = group.rows
        if sent.balance_after is not None:
            await self.balances.record(rows[0].request.account, sent.balance_after)
        charges = group.charges()
        now = self.outbox.clock()
        for row in rows:
            self.metrics.sms.labels(row.request.account, row.request.provider, State.SENT).inc()
            self.metrics.delivery_latency.labels(row.request.account).observe(max(now - row.created, 0.0))
        self.metrics.points.labels(rows[0].request.account).inc(sum(charges.values()))
        raw = self._masked(rows[0].request.account, sent.raw)
        await self._stored(
            f"sent id={rows[0].id}",
            lambda: self.outbox.run(
                results.sent,
                group,
                msg_id=sent.message_id,
                raw=raw,
                balance_after=sent.balance_after,
                confirmed=sent.confirmed,
            ),
        )
        digest = f" digest={rows[0].id}({len(rows)} alerts)" if group.digest is not None else ""
        for row in rows:
            log.info(
                "sent id=%s account=%s provider=%s attempts=%d numbers=%s msgid=%s%s%s",
                row.id,
                row.request.account,
                row.request.provider,
                row.delivery.attempts + 1,
                numbers_for_log(row.request.numbers),
                sent.message_id,
                digest,
                "" if sent.confirmed else " (handed to relay)",
            )
        self.outcomes.report(rows, Outcome("sent", msg_id=sent.message_id))

    def _delay(self, attempts: int, retry_after: float | None) -> float:
        """The provider's own "retry after" when it gave one (spread upwards only),
        else the retry schedule's step for this attempt, spread both ways."""
        jitter = self.config.dispatch.jitter
        if retry_after:
            return retry_after * (1 + self.rng.uniform(0, jitter))
        schedule = self.config.dispatch.retry_schedule
        base = schedule[min(max(attempts, 1), len(schedule)) - 1]
        return base * (1 + self.rng.uniform(-jitter, jitter))

    async def _transient(self, rows: list[Row], exc: DeliveryError) -> None:
        now = self.outbox.clock()
        retry_after = exc.retry_after if isinstance(exc, TransientDelivery) else None
        when = {r.id: now + self._delay(r.delivery.attempts + 1, retry_after) for r in rows}
        expired = [r for r in rows if when[r.id] - r.created > self.config.dispatch.max_age]
        retry = [r for r in rows if r not in expired]
        schedule = [(r.id, when[r.id]) for r in retry]
        if schedule:
            raw = self._masked(rows[0].request.account, exc.raw)
            await self._stored(
                "a retry",
                lambda: self.outbox.run(results.retry_later, schedule, error=exc.reason, code=exc.code, raw=raw),
            )
        for row in retry:
            log.info("retry id=%s in %.0fs attempts=%d: %s", row.id, when[row.id] - now, row.delivery.attempts + 1, exc)
        if retry:
            self.outcomes.report(retry, Outcome("queued", str(exc), exc.code))
        if expired:
            reason = f"not sent within {self.config.dispatch.max_age:.0f} s; last error: {exc.reason}"
            if isinstance(exc, AmbiguousDelivery):
                reason += " " + MAYBE_SENT
            await self._finish(expired, State.EXPIRED, PermanentDelivery(reason, code=exc.code, raw=exc.raw))

    def _masked(self, account: str, text: str) -> str:
        """A provider's reply as stored and shown: the account's password never in it."""
        password = self.config.accounts[account].password
        secret = password.get_secret_value() if password else ""
        return text.replace(secret, "***") if len(secret) >= 3 else text

    async def _finish(self, rows: list[Row], state: State, exc: DeliveryError) -> None:
        # A waiting SMTP session decides whether the sender hears of a refusal by 550 or by notice;
        # it hears of the outcome only once it is stored (bridge.runtime.outcomes).
        notice = Notice.NONE
        if state in NOTIFIED:
            notice = Notice.HELD if state in REFUSED and self.outcomes.expects(rows) else Notice.PENDING
        ids = [r.id for r in rows]
        for row in rows:
            self.metrics.sms.labels(row.request.account, row.request.provider, state).inc()
        raw = self._masked(rows[0].request.account, exc.raw)
        await self._stored(
            f"{state} id={ids[0]}",
            lambda: self.outbox.run(
                results.finish, ids, state=state, error=exc.reason, code=exc.code, raw=raw, notice=notice
            ),
        )
        for row in rows:
            log.warning(
                "%s id=%s account=%s attempts=%d: %s",
                state,
                row.id,
                row.request.account,
                row.delivery.attempts + 1,
                exc,
            )
        left = self.outcomes.report(rows, Outcome(state, exc.reason, exc.code))
        if notice == Notice.HELD and left:  # the session stopped waiting before the outcome was stored
            await self._stored(
                f"notice id={left[0].id}",
                lambda: self.outbox.run(notices.set_notice, [r.id for r in left], Notice.PENDING),
            )
        if notice == Notice.PENDING or (notice == Notice.HELD and left):
            self.on_notice()
