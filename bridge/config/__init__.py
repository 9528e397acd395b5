"""Configuration: YAML, read once into frozen typed objects, one module per section.

Errors are data: :func:`load` collects every problem as ``path: message``
and raises one :class:`~bridge.errors.ConfigError`; it never exits and never
echoes a value (a value may be a secret). ``${NAME}`` anywhere in a string
takes text from the environment; ``${NAME:-default}`` gives a fallback.

Each component is handed the sections it reads (``config.smtp``, ``config.queue``, ...);
a default is written once, in its model. ``docs/configuration.md`` is generated from these
models (``python -m bridge.config.reference``).
"""

from __future__ import annotations

from bridge.config.accounts import (
    ACCOUNT_TYPES,
    AccountConfig,
    AnyAccount,
    BreakerConfig,
    KwtsmsHttpAccount,
    KwtsmsSmtpAccount,
    OpentechHttpAccount,
    account_config,
)
from bridge.config.base import ACK_TIMEOUT_MAX, DEFAULT_URLS, HostPort, ProviderName, Smarthost, parse_host_port
from bridge.config.checks import warnings
from bridge.config.clients import ClientConfig, LimitsConfig, NumbersConfig
from bridge.config.load import load, load_text, read_env_file
from bridge.config.root import Config
from bridge.config.routes import RouteConfig, RoutingRule
from bridge.config.service import AdminConfig, DispatchConfig, LoggingConfig, NotifyConfig, QueueConfig, SimulatorConfig
from bridge.config.ways_in import ImapConfig, ListenerConfig, LmtpConfig, SendmailConfig, SmtpConfig
from bridge.errors import ConfigError

__all__ = [
    "ACCOUNT_TYPES",
    "ACK_TIMEOUT_MAX",
    "DEFAULT_URLS",
    "AccountConfig",
    "AdminConfig",
    "AnyAccount",
    "BreakerConfig",
    "ClientConfig",
    "Config",
    "ConfigError",
    "DispatchConfig",
    "HostPort",
    "ImapConfig",
    "KwtsmsHttpAccount",
    "KwtsmsSmtpAccount",
    "LimitsConfig",
    "ListenerConfig",
    "LmtpConfig",
    "LoggingConfig",
    "NotifyConfig",
    "NumbersConfig",
    "OpentechHttpAccount",
    "ProviderName",
    "QueueConfig",
    "RouteConfig",
    "RoutingRule",
    "SendmailConfig",
    "SimulatorConfig",
    "Smarthost",
    "SmtpConfig",
    "account_config",
    "load",
    "load_text",
    "parse_host_port",
    "read_env_file",
    "warnings",
]
