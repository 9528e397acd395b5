"""Prometheus metrics: one registry per running bridge.

Counters and histograms are updated where things happen (ingress, dispatch,
notices); gauges that describe state (the queue, balances, mailboxes) are
read when ``/metrics`` is scraped. Labels never carry a number, an address or
a message: accounts, providers, states, stages and codes only.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# ``*_created`` series double every counter for a figure nobody alerts on.
disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus-client leaves it unannotated

PROVIDER_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DELIVERY_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.mail_accepted = Counter(
            "sms_bridge_mail_accepted",
            "Mails and webhook notifications accepted and stored, by way in.",
            ["via"],
            registry=r,
        )
        self.mail_refused = Counter(
            "sms_bridge_mail_refused",
            "Mails refused, by way in, stage (connect, auth, mail, rcpt, data, webhook) and reason.",
            ["via", "stage", "reason"],
            registry=r,
        )
        self.sms = Counter(
            "sms_bridge_sms",
            "SMS that reached a final state, by account, provider and state.",
            ["account", "provider", "state"],
            registry=r,
        )
        self.provider_calls = Counter(
            "sms_bridge_provider_calls",
            "Provider calls, by account, result (sent, transient, permanent, unknown) and code.",
            ["account", "result", "code"],
            registry=r,
        )
        self.points = Counter(
            "sms_bridge_points_spent", "Points the providers charged, by account.", ["account"], registry=r
        )
        self.provider_latency = Histogram(
            "sms_bridge_provider_latency_seconds",
            "How long a provider call took, by account.",
            ["account"],
            buckets=PROVIDER_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "sms_bridge_accepted_to_answered_seconds",
            "From a mail's acceptance to the provider's answer for its SMS, by account.",
            ["account"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.queue = Gauge("sms_bridge_messages", "SMS in the outbox, by state.", ["state"], registry=r)
        self.oldest = Gauge(
            "sms_bridge_queue_oldest_seconds",
            "Age of the oldest SMS waiting to be sent (0 when none waits).",
            registry=r,
        )
        self.balance = Gauge(
            "sms_bridge_balance_points", "The last balance the provider reported, by account.", ["account"], registry=r
        )
        self.notices = Counter(
            "sms_bridge_notices",
            "Notices, by kind (sender, rejection, operator) and result (sent, failed, skipped).",
            ["kind", "result"],
            registry=r,
        )
        self.imap = Gauge(
            "sms_bridge_imap_connected", "1 while the bridge is connected to the mailbox.", ["mailbox"], registry=r
        )
        self.failovers = Counter(
            "sms_bridge_failovers",
            "SMS moved to a fallback account, by account left and account taken.",
            ["from_account", "to_account"],
            registry=r,
        )
        self.breaker = Gauge(
            "sms_bridge_breaker_state",
            "Each account's circuit: 0 closed, 1 half-open (probing), 2 open.",
            ["account"],
            registry=r,
        )
        self.outbox_commits = Gauge(
            "sms_bridge_outbox_commits", "Outbox transactions committed since start.", registry=r
        )

    def refused(self, via: str, stage: str, reason: str) -> None:
        self.mail_refused.labels(via, stage, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
