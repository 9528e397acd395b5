"""How the bridge runs: ``queue``, ``dispatch``, ``notify``, ``admin``, ``logging``, ``simulator``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from bridge.config.base import HostPort, Smarthost, _Model


class DispatchConfig(_Model):
    #: seconds to wait before each retry of a transient failure; the last one repeats
    retry_schedule: tuple[float, ...] = (30, 60, 120, 300, 600, 900)
    #: each wait is spread by up to this fraction, so retries do not arrive together
    jitter: float = Field(default=0.2, ge=0, le=1)
    #: give up (state ``expired``) on an SMS not sent this many seconds after it was accepted
    max_age: float = Field(default=86400.0, gt=0)
    #: provider calls in flight at once, per account
    in_flight: int = Field(default=4, ge=1, le=64)
    #: combine identical text to different numbers into one provider call (≤ 200 numbers)
    combine: bool = True
    #: seconds SIGTERM waits for deliveries in flight
    grace: float = Field(default=30.0, ge=0)

    @field_validator("retry_schedule")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(v <= 0 for v in value):
            raise ValueError("give one or more positive numbers of seconds")
        return value


class NotifyConfig(_Model):
    #: where failure notices are mailed out (``host:port``); none: notices are only logged
    smarthost: HostPort | None = None
    #: for that smarthost
    tls: Literal["starttls", "tls", "none"] = "starttls"
    #: for that smarthost
    username: str | None = None
    #: for that smarthost
    password: SecretStr | None = None

    def relay(self) -> Smarthost | None:
        if self.smarthost is None:
            return None
        return Smarthost(address=self.smarthost, tls=self.tls, username=self.username, password=self.password)

    #: the From: of failure notices (the envelope sender is always <>)
    sender: str = "mailer-daemon@sms-bridge.invalid"
    #: where balance warnings, unknown outcomes and failures nobody else can be told of are mailed
    operator: str | None = None
    #: seconds between two mails to the operator; what happens meanwhile is listed in the next one
    operator_interval: float = Field(default=300.0, ge=0)
    #: seconds the first event waits for others, so that a burst goes in one mail
    operator_gather: float = Field(default=30.0, ge=0)


class QueueConfig(_Model):
    #: the SQLite outbox (the embedded default, one bridge)
    path: str = "sms-bridge-outbox.sqlite3"
    #: ``postgresql://user:password@host:port/db``: a PostgreSQL outbox that several
    #: bridges share (``path`` is then not used)
    url: SecretStr | None = None
    #: this bridge's name among those sharing a PostgreSQL outbox (default: the host name);
    #: two running bridges never have the same
    instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,62}$")
    #: seconds a claim holds without renewal: a bridge that stopped answering has its
    #: claims taken back after this (PostgreSQL)
    lease: float = Field(default=30.0, ge=3, le=3600)
    #: a mail resubmitted with the same Message-ID, sender and body within this
    #: many seconds (a client retrying after a lost reply) is not queued again
    dedupe_window: float = Field(default=86400.0, ge=0)
    #: days a message that reached a final state (and its history) is kept
    keep_days: float = Field(default=30.0, gt=0)

    @field_validator("url")
    @classmethod
    def _postgresql(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not re.match(r"^postgres(ql)?://", value.get_secret_value()):
            raise ValueError("must be a postgresql://user:password@host:port/database URL")
        return value


class AdminConfig(_Model):
    #: ``host:port`` for the status page, ``/healthz``, ``/metrics`` and the alert webhook; off when unset
    listen: HostPort | None = None
    #: who may act on the status page (retry, cancel, mark as not sent): user → ``scrypt$…``
    #: hash (``sms-bridge hash-password``); with none, the page is read-only
    users: dict[str, SecretStr] = {}
    #: failed logins from one address within ``lockout`` seconds before it is locked out for as long
    login_failures: int = Field(default=5, ge=1)
    #: failed logins from one address within `lockout` seconds before it is locked out for as long
    lockout: float = Field(default=900.0, ge=1)
    #: seconds a login lasts
    session_ttl: float = Field(default=8 * 3600.0, ge=60)


class LoggingConfig(_Model):
    #: the least severe level logged (``--log-level`` overrides it)
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SimulatorConfig(_Model):
    #: run ``sms-bridge simulate`` inside the bridge (for trying the bridge out)
    enabled: bool = False
    #: where the in-process simulator listens
    listen: HostPort = "127.0.0.1:8800"
