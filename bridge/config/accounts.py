"""``accounts``: one per provider account, shaped by its ``provider``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from bridge.config.base import DEFAULT_URLS, HostPort, ProviderName, Smarthost, _Model
from bridge.config.clients import LimitsConfig
from bridge.core.model import Problem


class BreakerConfig(_Model):
    #: definitely-not-sent failures within ``window`` seconds that open the breaker
    failures: int = Field(default=5, ge=1)
    #: seconds over which failures are counted
    window: float = Field(default=60.0, gt=0)
    #: seconds between the test requests of an open breaker
    probe_interval: float = Field(default=30.0, gt=0)


class AccountConfig(_Model):
    """What every account has, whatever its provider. ``accounts.<name>`` is one of
    :class:`KwtsmsHttpAccount`, :class:`OpentechHttpAccount` or :class:`KwtsmsSmtpAccount`,
    chosen by ``provider``: a setting of another provider is an unknown key there."""

    #: `kwtsms-http`, `opentech-http` or `kwtsms-smtp`
    provider: ProviderName
    #: credentials (`uid` for OpenTech)
    username: str | None = None
    #: credentials (`uid` for OpenTech)
    password: SecretStr | None = None
    #: default sender ID
    sender: str | None = None
    #: the sender IDs the account may use (default: any)
    senders: tuple[str, ...] | None = None
    #: longest message, in pages (1–7)
    max_pages: int = Field(default=6, ge=1, le=7)
    #: most numbers in one message (lists over 200 are split into several provider calls)
    max_numbers: int = Field(default=1000, ge=1)
    #: region codes the account may send to; `*` for any
    countries: tuple[str, ...] = ("KW",)
    #: `strip` (with a warning) or `reject`
    emoji: Literal["strip", "reject"] = "strip"
    #: `strip` (with a warning) or `reject`
    html: Literal["strip", "reject"] = "strip"
    #: provider requests per second from this process (KwtSMS blocks an IP above 5)
    rate: float = Field(default=2.0, gt=0, le=50)
    #: seconds before the same number is sent to again (KwtSMS refuses sooner with ERR028);
    #: default 15 for KwtSMS, 0 for OpenTech
    repeat_interval: float | None = Field(default=None, ge=0, le=3600)
    #: the circuit breaker: this many definitely-not-sent failures within ``window`` seconds
    #: open it; then one request every ``probe_interval`` seconds tests the account
    breaker: BreakerConfig = Field(default_factory=lambda: BreakerConfig())
    #: seconds to wait for a provider's reply
    timeout: float = Field(default=30.0, gt=0, le=600)
    #: resend after an ambiguous outcome (may send twice; costs points twice)
    at_least_once: bool = False
    #: spending limits for the account, as for clients (default: none)
    limits: LimitsConfig = LimitsConfig()
    #: warn (log, and mail ``notify.operator``) when the balance a provider reports falls below this
    balance_warning: float | None = None
    #: refuse new mail (``451 4.7.1``) while the last known balance cannot pay for it
    refuse_when_empty: bool = False

    @field_validator("countries")
    @classmethod
    def _countries(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import phonenumbers  # noqa: PLC0415

        out = []
        for item in value:
            code = item.strip().upper()
            if code != "*" and code not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"{item!r} is not a region code (such as KW) or *")
            out.append(code)
        return tuple(out)

    def base_url(self) -> str:
        return DEFAULT_URLS.get(self.provider, "")

    def check(self, path: str) -> list[Problem]:
        """This account's own cross-checks, each with its path."""
        problems = []
        if self.sender is not None and len(self.sender) > 11:
            problems.append(Problem(f"{path}.sender", "a sender ID has at most 11 characters"))
        if self.sender and self.senders and self.sender not in self.senders:
            problems.append(Problem(f"{path}.sender", "is not in this account's senders list"))
        return problems


class KwtsmsHttpAccount(AccountConfig):
    provider: Literal["kwtsms-http"]
    #: the provider's base URL (point it at ``sms-bridge simulate`` to test)
    url: str | None = None
    #: KwtSMS API generation: ``"4.1"`` (POST) or ``"0.99"`` (GET with lang)
    api: Literal["4.1", "0.99"] = "4.1"
    #: KwtSMS v4.1 ``test=1``: queued at KwtSMS, never delivered (points are still deducted)
    test: bool = False
    #: KwtSMS v4.1 reply format
    reply_format: Literal["json", "text"] = "json"

    def base_url(self) -> str:
        return self.url or super().base_url()


class OpentechHttpAccount(AccountConfig):
    provider: Literal["opentech-http"]
    #: the provider's base URL (default: OpenTech's)
    url: str | None = None
    #: credentials (`uid` for OpenTech)
    uid: str | None = None
    #: a reply matching this pattern is a success (the API does not document one)
    success_pattern: str = r"(?i)\b(ok|success(ful(ly)?)?|sent|accepted|queued)\b|^\s*\d+\s*$"

    @field_validator("success_pattern")
    @classmethod
    def _pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression ({exc})") from None
        return value

    def base_url(self) -> str:
        return self.url or super().base_url()

    def check(self, path: str) -> list[Problem]:
        problems = super().check(path)
        if not self.uid:
            problems.append(Problem(f"{path}.uid", "is required for opentech-http"))
        return problems


class KwtsmsSmtpAccount(AccountConfig):
    provider: Literal["kwtsms-smtp"]
    #: where the rewritten mail goes, and through which smarthost
    relay_to: str = "sms@kwtsms.com"
    #: `kwtsms-smtp` relay settings
    mail_from: str | None = None
    #: `kwtsms-smtp` relay settings
    smarthost: HostPort | None = None
    #: `kwtsms-smtp` relay settings
    smarthost_tls: Literal["starttls", "tls", "none"] = "starttls"
    #: `kwtsms-smtp` relay settings
    smarthost_username: str | None = None
    #: `kwtsms-smtp` relay settings
    smarthost_password: SecretStr | None = None

    def relay(self) -> Smarthost:
        return Smarthost(
            address=self.smarthost or "",
            tls=self.smarthost_tls,
            username=self.smarthost_username,
            password=self.smarthost_password,
        )

    def check(self, path: str) -> list[Problem]:
        problems = super().check(path)
        for key in ("smarthost", "mail_from"):
            if getattr(self, key) is None:
                problems.append(Problem(f"{path}.{key}", "is required for kwtsms-smtp"))
        return problems


#: ``accounts.<name>``: the account's settings, shaped by its provider
AnyAccount = Annotated[KwtsmsHttpAccount | OpentechHttpAccount | KwtsmsSmtpAccount, Field(discriminator="provider")]


ACCOUNT_TYPES: dict[str, type[AccountConfig]] = {
    "kwtsms-http": KwtsmsHttpAccount,
    "opentech-http": OpentechHttpAccount,
    "kwtsms-smtp": KwtsmsSmtpAccount,
}


def account_config(data: Mapping[str, Any]) -> AccountConfig:
    """One account's settings from a mapping, by its ``provider``."""
    kind = ACCOUNT_TYPES.get(str(data.get("provider")))
    if kind is None:
        raise ValueError(f"provider must be one of {', '.join(ACCOUNT_TYPES)}")
    return kind.model_validate(dict(data))
