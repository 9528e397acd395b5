"""What every command shares: exit codes, where the config and the secrets are read from."""

from __future__ import annotations

import argparse
import os
import sys

from bridge.app.logs import set_level
from bridge.config import Config, load, read_env_file
from bridge.core.model import Problem
from bridge.errors import ConfigError

EX_USAGE = 2


EX_NOINPUT = 66


EX_SOFTWARE = 70


EX_CONFIG = 78


class UsageError(Exception):
    """The command line names something that does not exist (exit 2, like argparse's own)."""


DEFAULT_CONFIG = "/etc/sms-bridge/config.yaml"


DEFAULT_ENV_FILE = "/etc/sms-bridge/env"


def config_path(args: argparse.Namespace) -> str:
    """``-c``, else ``$SMS_BRIDGE_CONFIG``, else ``/etc/sms-bridge/config.yaml``."""
    return str(args.config or os.environ.get("SMS_BRIDGE_CONFIG") or DEFAULT_CONFIG)


def environment(args: argparse.Namespace) -> dict[str, str]:
    """The process environment, with what ``--env-file`` (default ``/etc/sms-bridge/env``
    when it exists and is readable) adds: the service's secrets, for CLI commands too."""
    env = dict(os.environ)
    path = args.env_file
    if path is None:
        path = DEFAULT_ENV_FILE if os.access(DEFAULT_ENV_FILE, os.R_OK) else ""
    if path:
        try:
            values = read_env_file(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([Problem(path, f"cannot be read: {getattr(exc, 'strerror', None) or exc}")]) from None
        env = values | env  # what the shell sets wins over the file
    return env


def load_config(args: argparse.Namespace, *, secrets: bool = True) -> Config:
    """The config; for a command that needs no provider secret (``secrets=False``), an
    environment variable that is not set is only named as a warning."""
    missing: list[Problem] | None = None if secrets else []
    config = load(config_path(args), env=environment(args), missing=missing)
    for problem in missing or ():
        print(f"sms-bridge: warning: {problem.field}: {problem.message} (not needed for this command)", file=sys.stderr)
    if args.log_level is None:
        set_level(config.logging.level)
    return config


def check_account(config: Config, name: str) -> None:
    if name not in config.accounts:
        known = ", ".join(sorted(config.accounts))
        raise UsageError(f"--account: no account named {name!r} in the config (accounts: {known})")
