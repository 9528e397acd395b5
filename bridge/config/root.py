"""The whole config file: every section, with its defaults."""

from __future__ import annotations

from pydantic import (
    PrivateAttr,
    field_validator,
)

from bridge.config.accounts import AnyAccount
from bridge.config.base import _Model
from bridge.config.clients import ClientConfig, NumbersConfig
from bridge.config.routes import RouteConfig
from bridge.config.service import AdminConfig, DispatchConfig, LoggingConfig, NotifyConfig, QueueConfig, SimulatorConfig
from bridge.config.ways_in import ImapConfig, LmtpConfig, SendmailConfig, SmtpConfig


class Config(_Model):
    smtp: SmtpConfig = SmtpConfig()
    queue: QueueConfig = QueueConfig()
    numbers: NumbersConfig = NumbersConfig()
    accounts: dict[str, AnyAccount]
    routes: dict[str, RouteConfig]
    aliases: dict[str, tuple[str, ...]] = {}
    #: mail to a user of this machine (``root``, ``root@localhost``, cron's ``MAILTO``) goes to
    #: an alias or number of the first address route, or to a full address: ``{root: oncall}``
    local_users: dict[str, str] = {}
    imap: tuple[ImapConfig, ...] = ()
    #: who may send; by default, any SMTP client on this machine (loopback)
    clients: dict[str, ClientConfig] = {"local": ClientConfig(networks=("127.0.0.0/8", "::1/128"))}
    dispatch: DispatchConfig = DispatchConfig()
    notify: NotifyConfig = NotifyConfig()
    admin: AdminConfig = AdminConfig()
    simulator: SimulatorConfig = SimulatorConfig()
    logging: LoggingConfig = LoggingConfig()
    sendmail: SendmailConfig = SendmailConfig()
    lmtp: LmtpConfig = LmtpConfig()
    #: ``path:NAME`` of each ``${NAME:-fallback}`` whose fallback was taken (for the warnings)
    _fallbacks: tuple[str, ...] = PrivateAttr(default=())

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        return {k.lower(): v for k, v in value.items()}

    @field_validator("local_users")
    @classmethod
    def _local_users(cls, value: dict[str, str]) -> dict[str, str]:
        return {k.strip().lower(): v.strip().lower() for k, v in value.items()}
