"""Configuration: YAML, read once into frozen typed objects.

Errors are data: :func:`load` collects every problem as ``path: message``
and raises one :class:`~bridge.errors.ConfigError`; it never exits and never
echoes a value (a value may be a secret). ``${NAME}`` anywhere in a string
takes text from the environment; ``${NAME:-default}`` gives a fallback.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from bridge.errors import ConfigError
from bridge.formats.alerts import TEMPLATE_FIELDS, ProfileName
from bridge.model import Problem

ProviderName = Literal["kwtsms-http", "opentech-http", "kwtsms-smtp"]
DEFAULT_URLS: dict[str, str] = {
    "kwtsms-http": "https://www.kwtsms.com/API/",
    "opentech-http": "http://www.ot-sms.com/ap/static/api/",
}
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


#: The longest an SMTP session waits for a first outcome (``routes.*.ack: delivered``)
ACK_TIMEOUT_MAX = 120.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_host_port(value: str) -> tuple[str, int]:
    """``"127.0.0.1:2525"``, ``"[::1]:2525"`` → (host, port)."""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([^\[\]:]+):(\d{1,5})", value.strip())
    if not match:
        raise ValueError("must be host:port, with IPv6 addresses in brackets ([::1]:2525)")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 <= port <= 65535:
        raise ValueError("the port must be between 0 and 65535")
    return host, port


def _check_listen(value: str) -> str:
    parse_host_port(value)
    return value.strip()


#: ``host:port`` (IPv6 in brackets), checked where it is read
HostPort = Annotated[str, AfterValidator(_check_listen)]


class ListenerConfig(_Model):
    address: HostPort
    #: ``starttls`` offers STARTTLS, ``implicit`` is TLS from the first byte (port 465);
    #: default: ``starttls`` when ``smtp.tls_cert`` is set, else ``none``
    tls: Literal["none", "starttls", "implicit"] | None = None
    #: allow AUTH without TLS on this listener (for LAN devices that cannot do TLS)
    plaintext_auth: bool = False
    #: lines ending in a bare LF: read as CRLF (``normalize``, as Postfix 3.9) or refused (``reject``)
    bare_lf: Literal["normalize", "reject"] = "normalize"


class SmtpConfig(_Model):
    #: ``host:port`` strings, or mappings with ``address``, ``tls``, ``plaintext_auth``
    listen: tuple[ListenerConfig, ...] = (ListenerConfig(address="127.0.0.1:2525"),)
    hostname: str = "sms-bridge"
    max_message_size: int = Field(default=1_048_576, ge=1024)
    max_recipients: int = Field(default=50, ge=1)
    max_connections: int = Field(default=100, ge=1)
    max_connections_per_client: int = Field(default=20, ge=1)
    #: seconds a client may stay silent before it is disconnected
    timeout: float = Field(default=300.0, gt=0)
    tls_cert: str | None = None
    tls_key: str | None = None
    #: failed AUTH from one address: each failure slows the next reply by a second;
    #: this many within ``auth_lockout`` seconds locks the address out for as long
    auth_failures: int = Field(default=5, ge=1)
    auth_lockout: float = Field(default=900.0, ge=1)

    @field_validator("listen", mode="before")
    @classmethod
    def _listen_list(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str | dict) else value
        if isinstance(items, list | tuple):
            return [{"address": v} if isinstance(v, str) else v for v in items]
        return value

    @field_validator("listen")
    @classmethod
    def _listen_given(cls, value: tuple[ListenerConfig, ...]) -> tuple[ListenerConfig, ...]:
        if not value:
            raise ValueError("give at least one host:port")
        return value

    def listeners(self) -> list[ListenerConfig]:
        default_tls: Literal["none", "starttls"] = "starttls" if self.tls_cert else "none"
        out = []
        for listener in self.listen:
            if listener.tls is None:
                listener = listener.model_copy(update={"tls": default_tls})
            out.append(listener)
        return out


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
    tls: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
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


class NumbersConfig(_Model):
    #: region for numbers written without a country code (ISO 3166, ``KW``)
    default_region: str = "KW"
    #: for numbers outside Kuwait: require phonenumbers' full validity check
    #: (``true``) or only a plausible length (``false``, for fresh ranges)
    strict: bool = True

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str) -> str:
        import phonenumbers  # noqa: PLC0415  (only needed here)

        if value.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError("is not a known two-letter region code (such as KW or SA)")
        return value.upper()


class LimitsConfig(_Model):
    """Spending limits. Per minute and per hour: ``451 4.7.0`` (the sender retries
    later); per day: ``550 5.7.1`` (a hard cap). Windows are calendar minutes,
    hours and days in UTC; counts survive restarts (kept in the outbox)."""

    messages_per_minute: int | None = Field(default=None, ge=1)
    messages_per_hour: int | None = Field(default=None, ge=1)
    messages_per_day: int | None = Field(default=None, ge=1)
    points_per_minute: int | None = Field(default=None, ge=1)
    points_per_hour: int | None = Field(default=None, ge=1)
    points_per_day: int | None = Field(default=None, ge=1)
    numbers_per_message: int | None = Field(default=None, ge=1)
    #: destinations allowed: region codes (``KW``) or number prefixes (``9655``)
    destinations: tuple[str, ...] | None = None


class ClientConfig(_Model):
    """A sending system: who it is, and what it may use.

    A client with ``user`` is an SMTP AUTH login; with ``mailboxes``, mail taken
    from those IMAP mailboxes; otherwise, SMTP clients from ``networks``.
    ``networks`` and ``senders`` narrow each kind further."""

    user: str | None = None
    #: a ``scrypt$…`` hash (``sms-bridge hash-password``) or, from the environment, the password
    password: SecretStr | None = None
    networks: tuple[str, ...] = ()
    #: envelope senders allowed: ``erp@corp.example`` or ``@corp.example``
    senders: tuple[str, ...] = ()
    mailboxes: tuple[str, ...] = ()
    #: a bearer token for the alert webhook (``POST /alerts/<route>`` on ``admin.listen``)
    token: SecretStr | None = None
    #: routes and accounts it may use (default: all)
    routes: tuple[str, ...] | None = None
    accounts: tuple[str, ...] | None = None
    limits: LimitsConfig = LimitsConfig()

    @field_validator("networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress  # noqa: PLC0415

        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a network (such as 192.168.1.0/24)") from None
        return value

    @field_validator("senders")
    @classmethod
    def _senders(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if "@" not in item:
                raise ValueError(f"{item!r} is not an address or @domain")
        return tuple(v.strip().lower() for v in value)


class BreakerConfig(_Model):
    failures: int = Field(default=5, ge=1)
    window: float = Field(default=60.0, gt=0)
    probe_interval: float = Field(default=30.0, gt=0)


class AccountConfig(_Model):
    """What every account has, whatever its provider. ``accounts.<name>`` is one of
    :class:`KwtsmsHttpAccount`, :class:`OpentechHttpAccount` or :class:`KwtsmsSmtpAccount`,
    chosen by ``provider``: a setting of another provider is an unknown key there."""

    provider: ProviderName
    username: str | None = None
    password: SecretStr | None = None
    sender: str | None = None
    senders: tuple[str, ...] | None = None
    max_pages: int = Field(default=6, ge=1, le=7)
    max_numbers: int = Field(default=1000, ge=1)
    countries: tuple[str, ...] = ("KW",)
    emoji: Literal["strip", "reject"] = "strip"
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

    def pacing(self) -> float:
        """Seconds between two SMS to one number (``repeat_interval`` or the provider's rule)."""
        if self.repeat_interval is not None:
            return self.repeat_interval
        return 15.0 if self.provider.startswith("kwtsms") else 0.0

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
    url: str | None = None
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
    mail_from: str | None = None
    smarthost: HostPort | None = None
    smarthost_tls: Literal["starttls", "tls", "none"] = "starttls"
    smarthost_username: str | None = None
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


@dataclass(frozen=True)
class Smarthost:
    """Where mail leaves the bridge: the kwtsms-smtp relay's smarthost, and the notifier's."""

    address: str
    tls: str
    username: str | None
    password: SecretStr | None = dc_field(repr=False)

    def client_settings(self, timeout: float) -> dict[str, Any]:
        """aiosmtplib's connection settings for this smarthost."""
        host, port = parse_host_port(self.address)
        return {
            "hostname": host,
            "port": port,
            "use_tls": self.tls == "tls",
            "start_tls": self.tls == "starttls",
            "timeout": timeout,
        }

    def login(self) -> tuple[str, str] | None:
        if not self.username:
            return None
        return self.username, self.password.get_secret_value() if self.password else ""


class RoutingRule(_Model):
    """One line of a route's routing: numbers by prefix or region, to an account."""

    #: digits after the country code's start: ``965``, ``9655``
    prefix: str | None = None
    #: a region code: ``LB``
    region: str | None = None
    #: every number no earlier rule took
    default: bool = False
    account: str
    #: accounts to try, in order, when this one definitely did not send (default: the route's)
    fallback: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> RoutingRule:
        given = [k for k in ("prefix", "region") if getattr(self, k)] + (["default"] if self.default else [])
        if len(given) != 1:
            raise ValueError("give exactly one of prefix, region or default: true")
        if self.prefix is not None and not self.prefix.isdigit():
            raise ValueError("prefix: digits only, country code first (965, 9655)")
        if self.region is not None:
            import phonenumbers  # noqa: PLC0415

            if self.region.upper() not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(f"region: {self.region!r} is not a region code (such as KW or LB)")
            object.__setattr__(self, "region", self.region.upper())
        return self

    def matches(self, number: str, region: str | None) -> bool:
        if self.default:
            return True
        if self.prefix is not None:
            return number.startswith(self.prefix)
        return region is not None and region == self.region


def _account_kind(value: Any) -> str:
    """``routes.<name>.account`` is an account's name or a list of routing rules: the
    value's shape says which, so an error names one of them, never both."""
    return "rules" if isinstance(value, list | tuple) else "name"


#: the tags the schema's unions add to an error's location; the file has no such keys
_UNION_TAGS = frozenset({"name", "rules"})


class RouteConfig(_Model):
    format: Literal["kwtsms", "address"]
    #: the account that sends, or routing rules: ``[{prefix: "965", account: kwt}, {default: true, account: ot}]``
    account: Annotated[
        Annotated[str, Tag("name")] | Annotated[tuple[RoutingRule, ...], Tag("rules")],
        Discriminator(_account_kind),
    ]
    #: accounts to try, in order, when the first definitely did not send (connection refused, ERR001, ...)
    fallback: tuple[str, ...] = ()
    #: exact addresses this route serves (``sms@bridge.example``)
    recipients: tuple[str, ...] = ()
    #: address format: every ``<number or alias>@domain`` is this route's
    domain: str | None = None
    #: what to do with ``username:``/``password:`` lines in a KwtSMS body
    body_credentials: Literal["account", "verify", "passthrough", "forbid"] = "account"
    #: KwtSMS reads ``+`` in the text as a space
    plus_as_space: bool = True
    #: address format: the SMS text from fields (``{state} {host}: {name}``); default: the
    #: alert profile's own text
    template: str | None = None
    #: address format: how alert mail is read (``auto``: by the first profile that recognises it)
    profile: ProfileName = "auto"
    #: merge SMS waiting for the same phones into one (default: on for address routes)
    digest: bool | None = None
    #: pages a digest may use (default: the account's ``max_pages``)
    digest_pages: int | None = Field(default=None, ge=1, le=7)
    #: address format: longer text is cut to this many pages, ending in "..."
    max_pages: int | None = Field(default=None, ge=1, le=7)
    sender: str | None = None
    #: ``queued``: 250 once stored; ``delivered``: hold the reply while the first attempt runs
    ack: Literal["queued", "delivered"] = "queued"
    #: mail with lines that ended in a bare LF: accepted (``normalize``) or refused (``reject``)
    bare_lf: Literal["normalize", "reject"] = "normalize"
    #: seconds a ``delivered`` reply waits before answering ``250 queued``
    ack_timeout: float = Field(default=10.0, gt=0, le=ACK_TIMEOUT_MAX)

    @field_validator("recipients")
    @classmethod
    def _lower(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if item.count("@") != 1 or item.startswith("@") or item.endswith("@"):
                raise ValueError(f"{item!r} is not an address (local@domain)")
        return tuple(v.strip().lower() for v in value)

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str | None) -> str | None:
        if value is not None and ("@" in value or not value.strip()):
            raise ValueError("give the domain alone, without local part or @")
        return value.strip().lower().lstrip(".") if value else value

    def digests(self) -> bool:
        return self.digest if self.digest is not None else self.format == "address"

    def rules(self) -> tuple[RoutingRule, ...]:
        """The routing rules, a single account being one default rule; fallbacks filled in."""
        if isinstance(self.account, str):
            return (RoutingRule(default=True, account=self.account, fallback=self.fallback),)
        return tuple(
            r if r.fallback is not None else r.model_copy(update={"fallback": self.fallback}) for r in self.account
        )

    def accounts(self) -> list[str]:
        """Every account this route may send with, first ones first."""
        names = [r.account for r in self.rules()] + [a for r in self.rules() for a in (r.fallback or ())]
        return list(dict.fromkeys(names))

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            names = {f for _, f, _, _ in string.Formatter().parse(value) if f is not None}
        except ValueError as exc:
            raise ValueError(f"is not a valid template ({exc})") from None
        unknown = names - TEMPLATE_FIELDS
        if unknown:
            raise ValueError(
                f"unknown field {{{sorted(unknown)[0]}}}; "
                f"use {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))}"
            )
        return value


class ImapConfig(_Model):
    """A mailbox the bridge watches; each new mail is treated as if it came over SMTP."""

    #: a short name for logs and the outbox (default: user@host)
    name: str | None = None
    host: str
    #: default 993 (implicit TLS) or 143 (plain text)
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ``implicit`` (IMAPS); ``none`` only for a server on a trusted network
    tls: Literal["implicit", "none"] = "implicit"
    verify_tls: bool = True
    ca_file: str | None = None
    user: str
    password: SecretStr
    #: the mailbox's own address: never sent a notice (it would come back)
    address: str | None = None
    folder: str = "INBOX"
    #: the route mail from here goes through (default: by the To:/Cc: addresses)
    route: str | None = None
    #: after a mail is taken: ``move`` it to ``processed_folder`` or ``flag`` it \Seen
    after: Literal["move", "flag"] = "move"
    processed_folder: str = "Processed"
    rejected_folder: str = "Rejected"
    #: use IDLE when the server offers it, re-issued every ``idle_interval`` seconds
    idle: bool = True
    idle_interval: float = Field(default=540.0, ge=5, le=600)
    #: seconds between polls when the server has no IDLE
    poll_interval: float = Field(default=60.0, gt=0)
    #: seconds any one IMAP command may take
    timeout: float = Field(default=60.0, gt=0)
    #: longest wait between reconnection attempts
    max_backoff: float = Field(default=300.0, ge=1)

    def label(self) -> str:
        return self.name or f"{self.user}@{self.host}"

    def real_port(self) -> int:
        return self.port or (993 if self.tls == "implicit" else 143)


class AdminConfig(_Model):
    #: ``host:port`` for the status page, ``/healthz``, ``/metrics`` and the alert webhook; off when unset
    listen: HostPort | None = None
    #: who may act on the status page (retry, cancel, mark as not sent): user → ``scrypt$…``
    #: hash (``sms-bridge hash-password``); with none, the page is read-only
    users: dict[str, SecretStr] = {}
    #: failed logins from one address within ``lockout`` seconds before it is locked out for as long
    login_failures: int = Field(default=5, ge=1)
    lockout: float = Field(default=900.0, ge=1)
    #: seconds a login lasts
    session_ttl: float = Field(default=8 * 3600.0, ge=60)


class LmtpConfig(_Model):
    """An LMTP listener, for an MTA (Postfix) that hands mail over per recipient."""

    #: ``host:port``, or ``unix:/run/sms-bridge/lmtp.sock``; off when unset
    listen: str | None = None
    #: the Unix socket's permissions (octal): who on this machine may connect
    socket_mode: str = "0666"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if value.startswith("unix:"):
            path = value.removeprefix("unix:")
            if not path.startswith("/"):
                raise ValueError("give an absolute socket path: unix:/run/sms-bridge/lmtp.sock")
            return value
        return _check_listen(value)

    @field_validator("socket_mode")
    @classmethod
    def _mode(cls, value: str) -> str:
        if not re.fullmatch(r"0?[0-7]{3}", value):
            raise ValueError("give an octal mode such as 0660")
        return value

    def socket_path(self) -> str | None:
        return self.listen.removeprefix("unix:") if self.listen and self.listen.startswith("unix:") else None


class SendmailConfig(_Model):
    """``sms-bridge sendmail``: where it submits, and for how long it retries."""

    #: ``host:port`` of the bridge (default: the first ``smtp.listen``, wildcards as loopback)
    server: HostPort | None = None
    #: seconds to keep trying while the bridge is unreachable or answers 4xx (then exit 75)
    retry_for: float = Field(default=30.0, ge=0, le=3600)
    #: an SMTP AUTH login, for a bridge that takes no unauthenticated local mail
    user: str | None = None
    password: SecretStr | None = None


class LoggingConfig(_Model):
    #: the least severe level logged (``--log-level`` overrides it)
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class SimulatorConfig(_Model):
    #: run ``sms-bridge simulate`` inside the bridge (for trying the bridge out)
    enabled: bool = False
    listen: HostPort = "127.0.0.1:8800"


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


def _substitute(
    node: Any,
    path: str,
    env: Mapping[str, str],
    problems: list[Problem],
    missing: list[Problem] | None,
    fallbacks: list[str],
) -> Any:
    if isinstance(node, str):

        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in env:
                return env[name]
            if default is not None:
                fallbacks.append(f"{path}:{name}")
                return default
            (problems if missing is None else missing).append(Problem(path, f"environment variable {name} is not set"))
            return ""

        return _ENV.sub(repl, node)
    if isinstance(node, dict):
        return {
            k: _substitute(v, f"{path}.{k}" if path else str(k), env, problems, missing, fallbacks)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_substitute(v, f"{path}.{i}", env, problems, missing, fallbacks) for i, v in enumerate(node)]
    return node


def read_env_file(path: str | Path) -> dict[str, str]:
    """``KEY=VALUE`` lines as systemd's ``EnvironmentFile=`` reads them: ``#`` and ``;``
    comments, optional ``export``, values optionally in single or double quotes."""
    values: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        line = line.removeprefix("export ").strip()
        key, eq, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    problems = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = [str(part) for part in err["loc"]]
        if len(loc) >= 3 and loc[0] == "accounts" and loc[2] in ACCOUNT_TYPES:
            del loc[2]  # accounts.<name>.<provider tag>.key: the tag is pydantic's, not the file's
        if len(loc) >= 4 and loc[0] == "routes" and loc[2] == "account" and loc[3] in _UNION_TAGS:
            del loc[3]  # routes.<name>.account.<name|rules>: likewise
        path = ".".join(loc) or "(top level)"
        kind = err["type"]
        if kind == "union_tag_invalid":
            problems.append(Problem(f"{path}.provider", f"must be one of {', '.join(ACCOUNT_TYPES)}"))
            continue
        if kind == "union_tag_not_found":
            problems.append(Problem(f"{path}.provider", f"is required: one of {', '.join(ACCOUNT_TYPES)}"))
            continue
        if kind == "extra_forbidden" and len(loc) == 3 and loc[0] == "accounts":
            owners = [p for p, model in ACCOUNT_TYPES.items() if loc[2] in model.model_fields]
            message = (
                f"belongs to {' and '.join(owners)} accounts, not this one's provider; remove it"
                if owners
                else "unknown key"
            )
        elif kind == "extra_forbidden":
            message = "unknown key"
        elif kind == "missing":
            message = "is required"
        else:
            message = err["msg"].removeprefix("Value error, ")
            message = message.replace("Input should be", "must be")
        problems.append(Problem(path, message))
    return problems


def _routing_problems(name: str, route: RouteConfig, config: Config) -> list[Problem]:
    """Accounts that exist, rules that can match, fallbacks that do not loop."""
    problems: list[Problem] = []
    path = f"routes.{name}"
    known = ", ".join(sorted(config.accounts)) or "none"
    rules = route.rules()
    single = isinstance(route.account, str)
    for i, rule in enumerate(rules):
        where = f"{path}.account" if single else f"{path}.account.{i}"
        if rule.account not in config.accounts:
            problems.append(
                Problem(
                    f"{where}" if single else f"{where}.account",
                    f"no account named {rule.account!r} (accounts: {known})",
                )
            )
        for j, fallback in enumerate(rule.fallback or ()):
            fpath = f"{path}.fallback.{j}" if single or rule.fallback == route.fallback else f"{where}.fallback.{j}"
            if fallback not in config.accounts:
                problems.append(Problem(fpath, f"no account named {fallback!r} (accounts: {known})"))
            elif fallback == rule.account or (rule.fallback or ()).index(fallback) != j:
                problems.append(Problem(fpath, f"{fallback!r} is already tried before it: a failover loop"))
        for k, earlier in enumerate(rules[:i]):
            shadowed = earlier.default or (
                earlier.prefix is not None and rule.prefix is not None and rule.prefix.startswith(earlier.prefix)
            )
            if shadowed:
                problems.append(
                    Problem(
                        where,
                        f"never matches: rule {k} ({'default' if earlier.default else 'prefix ' + str(earlier.prefix)}) "
                        "takes these numbers first; put the longer prefix, and the default, last",
                    )
                )
                break
    return problems


class _AnyProviderAccount(AccountConfig):
    """For an account whose provider is wrong: its common settings, still checked."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    provider: Any = None


def _untagged_account_problems(data: Any) -> list[Problem]:
    """Every other problem of an account whose ``provider`` is missing or unknown."""
    accounts = data.get("accounts") if isinstance(data, dict) else None
    if not isinstance(accounts, dict):
        return []
    problems = []
    for name, account in accounts.items():
        if not isinstance(account, dict) or account.get("provider") in ACCOUNT_TYPES:
            continue
        try:
            _AnyProviderAccount.model_validate({k: v for k, v in account.items() if k != "provider"})
        except ValidationError as exc:
            for err in exc.errors(include_input=False, include_url=False):
                path = ".".join(["accounts", str(name), *(str(p) for p in err["loc"])])
                message = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
                problems.append(Problem(path, message))
    return problems


def _cross_check(config: Config) -> list[Problem]:
    from bridge import phone  # noqa: PLC0415  (phone imports config for types)

    problems = []
    seen_recipients: dict[str, str] = {}
    seen_domains: dict[str, str] = {}
    for name, route in config.routes.items():
        path = f"routes.{name}"
        problems += _routing_problems(name, route, config)
        if not route.recipients and not route.domain:
            problems.append(Problem(path, "give recipients (addresses) or a domain for this route"))
        if route.format == "kwtsms" and route.domain:
            problems.append(Problem(f"{path}.domain", "a kwtsms route serves fixed recipients, not a domain"))
        for rcpt in route.recipients:
            if rcpt in seen_recipients:
                problems.append(
                    Problem(f"{path}.recipients", f"{rcpt} is already served by route {seen_recipients[rcpt]}")
                )
            seen_recipients[rcpt] = name
        if route.domain:
            if route.domain in seen_domains:
                problems.append(Problem(f"{path}.domain", f"already served by route {seen_domains[route.domain]}"))
            seen_domains[route.domain] = name
        for used in route.accounts():
            account = config.accounts.get(used)
            if account is None or route.body_credentials == "passthrough":
                continue
            for key in ("username", "password"):
                if getattr(account, key) is None:
                    problems.append(
                        Problem(
                            f"accounts.{used}.{key}",
                            f"is required: route {name} sends with the account's own credentials",
                        )
                    )
    for name, account in config.accounts.items():
        problems += account.check(f"accounts.{name}")
    if bool(config.smtp.tls_cert) != bool(config.smtp.tls_key):
        problems.append(
            Problem("smtp.tls_key" if config.smtp.tls_cert else "smtp.tls_cert", "give both tls_cert and tls_key")
        )
    for i, listener in enumerate(config.smtp.listeners()):
        if listener.tls in ("starttls", "implicit") and not config.smtp.tls_cert:
            problems.append(Problem(f"smtp.listen.{i}.tls", f"{listener.tls} needs smtp.tls_cert and smtp.tls_key"))
    labels: set[str] = set()
    users: dict[str, str] = {}
    box_names = {box.label() for box in config.imap}
    for name, client in config.clients.items():
        path = f"clients.{name}"
        if not (client.user or client.networks or client.mailboxes or client.token):
            problems.append(Problem(path, "give user, networks, mailboxes or token: how this client is recognised"))
        if sum(map(bool, (client.user, client.mailboxes, client.token))) > 1:
            problems.append(
                Problem(path, "a client is one of: an SMTP login (user), IMAP mailboxes, or a webhook token")
            )
        if client.token is not None and len(client.token.get_secret_value()) < 16:
            problems.append(Problem(f"{path}.token", "is too short; use 16 characters or more (openssl rand -hex 24)"))
        if client.user and client.password is None:
            problems.append(Problem(f"{path}.password", "is required with user"))
        if client.password is not None and not client.user:
            problems.append(Problem(f"{path}.user", "is required with password"))
        if client.user:
            if client.user in users:
                problems.append(Problem(f"{path}.user", f"{client.user!r} is already client {users[client.user]}'s"))
            users[client.user] = name
        for box_name in client.mailboxes:
            if box_name not in box_names:
                problems.append(Problem(f"{path}.mailboxes", f"no IMAP mailbox named {box_name!r}"))
        for route_name in client.routes or ():
            if route_name not in config.routes:
                problems.append(Problem(f"{path}.routes", f"no route named {route_name!r}"))
        for account_name in client.accounts or ():
            if account_name not in config.accounts:
                problems.append(Problem(f"{path}.accounts", f"no account named {account_name!r}"))
    for i, box in enumerate(config.imap):
        if box.route is not None and box.route not in config.routes:
            problems.append(Problem(f"imap.{i}.route", f"no route named {box.route!r}"))
        if box.label() in labels:
            problems.append(Problem(f"imap.{i}.name", f"{box.label()!r} is used twice; give each mailbox its own name"))
        labels.add(box.label())
        if box.after == "move" and box.processed_folder == box.folder:
            problems.append(Problem(f"imap.{i}.processed_folder", "must differ from the watched folder"))
        if box.rejected_folder == box.folder:
            problems.append(Problem(f"imap.{i}.rejected_folder", "must differ from the watched folder"))
        if not any(box.label() in c.mailboxes for c in config.clients.values()):
            problems.append(
                Problem(
                    f"imap.{i}",
                    f"no client lists mailbox {box.label()!r} (clients.<name>.mailboxes): its mail would all be refused",
                )
            )
    address_domain = next((r.domain for r in config.routes.values() if r.format == "address" and r.domain), None)
    for user, target in config.local_users.items():
        path = f"local_users.{user}"
        if "@" in target:
            local, _, domain = target.rpartition("@")
            served = any(target in r.recipients or (r.domain == domain and local) for r in config.routes.values())
            if not served:
                problems.append(Problem(path, f"{target} is not an address any route serves"))
        elif address_domain is None:
            problems.append(Problem(path, "no address route has a domain to send it with; give a full address"))
        elif target not in config.aliases and phone.normalise(target, config.numbers.default_region).problem:
            known = ", ".join(sorted(config.aliases)) or "none"
            problems.append(Problem(path, f"{target!r} is neither an alias (aliases: {known}) nor a phone number"))
    for alias, numbers in config.aliases.items():
        if not numbers:
            problems.append(Problem(f"aliases.{alias}", "lists no numbers"))
        for i, raw in enumerate(numbers):
            result = phone.normalise(str(raw), config.numbers.default_region)
            if result.problem:
                problems.append(Problem(f"aliases.{alias}.{i}", result.problem))
    return problems


_SECRET_KEYS = frozenset({"password", "token", "smarthost_password", "url"})
_LOOPBACK = ("127.0.0.1", "::1")


def _on_simulator(url: str, config: Config) -> bool:
    """Whether ``url`` points at the simulator's ``host:port``."""
    match = re.match(r"^[a-z]+://(\[[^\]]+\]|[^/:]+)(?::(\d+))?", url.strip(), re.I)
    if match is None:
        return False
    sim_host, sim_port = parse_host_port(config.simulator.listen)
    host = match.group(1).strip("[]")
    same_host = host == sim_host or {host, sim_host} <= {"127.0.0.1", "localhost"}
    return same_host and int(match.group(2) or (443 if url.lower().startswith("https") else 80)) == sim_port


def _account_url(account: AccountConfig) -> str:
    return account.base_url() if isinstance(account, KwtsmsHttpAccount | OpentechHttpAccount) else ""


def _loopback_client(config: Config) -> bool:
    import ipaddress  # noqa: PLC0415

    for client in config.clients.values():
        if client.user or client.mailboxes or client.token:
            continue
        networks = [ipaddress.ip_network(n, strict=False) for n in client.networks]
        if any(ipaddress.ip_address(ip) in net for ip in _LOOPBACK for net in networks):
            return True
    return False


def warnings(config: Config) -> list[str]:
    """What works but will surprise an operator later: said by ``check-config`` and at start-up."""
    out = []
    for taken in config._fallbacks:
        path, _, name = taken.rpartition(":")
        parts = path.split(".")
        if parts[-1] not in _SECRET_KEYS:
            continue
        if parts[0] == "accounts" and len(parts) == 3 and parts[1] in config.accounts:
            url = _account_url(config.accounts[parts[1]])
            if config.simulator.enabled and _on_simulator(url, config):
                continue  # the demo account on the bridge's own simulator: the fallback is the point
        out.append(
            f"{path}: ${{{name}}} is not set, so the config's fallback value is used; against a real provider "
            f"that is the wrong secret: set {name} (in /etc/sms-bridge/env for the service), or remove the "
            f":-fallback so that a missing value is an error"
        )
    if not config.simulator.enabled:
        for name, account in config.accounts.items():
            url = _account_url(account)
            if url and _on_simulator(url, config):
                out.append(
                    f"accounts.{name}.url points at the simulator's address ({config.simulator.listen}), but "
                    "simulator.enabled is false, so nothing there answers unless `sms-bridge simulate` runs; "
                    f"for real SMS use {DEFAULT_URLS[account.provider]}"
                )
    if config.queue.url is None and not Path(config.queue.path).is_absolute():
        out.append(
            f"queue.path {config.queue.path} is relative: it is found from the working directory (here "
            f"{Path(config.queue.path).absolute()}), so a command run from elsewhere finds no outbox; "
            "give an absolute path (the service runs in /var/lib/sms-bridge)"
        )
    if not _loopback_client(config) and config.sendmail.user is None:
        tokens = [n for n, c in config.clients.items() if c.token is not None]
        why = (
            f"the clients section (with the webhook's token client {tokens[0]}) replaces the implicit local client"
            if tokens
            else "no client has networks that include 127.0.0.1 or ::1"
        )
        out.append(
            f"clients: {why}, so mail from this machine (sendmail, cron, swaks, a local Zabbix) is refused with "
            '550 5.7.1; add clients.local: {networks: [127.0.0.0/8, "::1/128"]}'
        )
    if config.notify.smarthost is None:
        out.append(
            "notify.smarthost is not set: failures after a mail was accepted (provider refusals, expiries, "
            "SMS that may or may not have been sent) are only logged, and no sender or operator is told; "
            "set notify.smarthost (and notify.operator) to mail them"
        )
    elif config.notify.operator is None:
        out.append(
            "notify.operator is not set: SMS that may or may not have been sent, and failures of mail with no "
            "address to answer (webhooks, <>), are only logged; set notify.operator to mail them to someone"
        )
    return out


def load_text(
    text: str, *, env: Mapping[str, str] | None = None, source: str = "config", missing: list[Problem] | None = None
) -> Config:
    """Parse a YAML document into a :class:`Config`, or raise :class:`ConfigError`.

    ``missing``: collect environment variables that are not set there, as empty
    values, instead of failing (for commands that need no secret)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        problem = getattr(exc, "problem", None) or "cannot be read"
        raise ConfigError([Problem(source, f"not valid YAML at {where}: {problem}")]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([Problem(source, "must be a mapping of keys (smtp:, accounts:, routes:, ...)")])
    problems: list[Problem] = []
    fallbacks: list[str] = []
    data = _substitute(raw, "", os.environ if env is None else env, problems, missing, fallbacks)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        schema = problems + _pydantic_problems(exc) + _untagged_account_problems(data)
        raise ConfigError(schema + _cross_check_without(data, exc)) from None
    problems += _cross_check(config)
    if problems:
        raise ConfigError(problems)
    config._fallbacks = tuple(fallbacks)
    return config


#: sections whose entries are checked one by one: an error in one leaves the others checked
_ENTRIES = ("accounts", "routes", "clients", "aliases", "local_users", "imap")


def _cross_check_without(data: dict[str, Any], exc: ValidationError) -> list[Problem]:
    """The cross-checks of a config the schema refused, so that every problem comes in one
    round: run on the config without the entries (an account, a route, a section) that have
    schema errors, leaving out what those entries' absence would itself cause."""
    data = dict(data)
    dropped: list[tuple[str, str]] = []  # (path, name)
    for _ in range(3):
        for err in exc.errors(include_input=False, include_url=False):
            loc = [str(part) for part in err["loc"]]
            if not loc:
                return []
            section = loc[0]
            if section in _ENTRIES and len(loc) >= 2 and isinstance(data.get(section), dict | list):
                entries = data[section]
                key: Any = int(loc[1]) if isinstance(entries, list) and loc[1].isdigit() else loc[1]
                if isinstance(entries, dict) and key in entries:
                    data[section] = {k: v for k, v in entries.items() if k != key}
                elif isinstance(entries, list) and isinstance(key, int) and key < len(entries):
                    data[section] = [v for i, v in enumerate(entries) if i != key]
                else:
                    continue
                dropped.append((f"{section}.{loc[1]}", str(key)))
            else:
                data.pop(section, None)
                if section in ("accounts", "routes"):
                    data[section] = {}
                dropped.append((section, ""))
        try:
            config = Config.model_validate(data)
        except ValidationError as again:
            exc = again
            continue
        break
    else:
        return []

    def caused(problem: Problem) -> bool:
        for path, name in dropped:
            if problem.field == path or problem.field.startswith(path + "."):
                return True
            if name and f"{name!r}" in problem.message:
                return True
            if not name and path in ("accounts", "routes"):
                return True  # every reference would be a false "no account/route named"
        return False

    return [p for p in _cross_check(config) if not caused(p)]


def load(path: str | Path, *, env: Mapping[str, str] | None = None, missing: list[Problem] | None = None) -> Config:
    """Read and parse the config file at ``path``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), f"cannot be read: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(str(path), "is not UTF-8 text")]) from None
    return load_text(text, env=env, source=str(path), missing=missing)
