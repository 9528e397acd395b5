"""Who may send, and what: ``clients``, their ``limits``, and ``numbers``."""

from __future__ import annotations

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from bridge.config.base import _Model


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

    #: SMS (one per number) in a calendar minute; beyond: `451 4.7.0`
    messages_per_minute: int | None = Field(default=None, ge=1)
    #: SMS in a calendar hour; beyond: `451 4.7.0`
    messages_per_hour: int | None = Field(default=None, ge=1)
    #: SMS in a calendar day (UTC); beyond: `550 5.7.1`
    messages_per_day: int | None = Field(default=None, ge=1)
    #: points in a calendar minute; beyond: `451 4.7.0`
    points_per_minute: int | None = Field(default=None, ge=1)
    #: points in a calendar hour; beyond: `451 4.7.0`
    points_per_hour: int | None = Field(default=None, ge=1)
    #: points in a calendar day (UTC); beyond: `550 5.7.1`
    points_per_day: int | None = Field(default=None, ge=1)
    #: numbers in one mail; more: `550 5.7.1`
    numbers_per_message: int | None = Field(default=None, ge=1)
    #: destinations allowed: region codes (``KW``) or number prefixes (``9655``)
    destinations: tuple[str, ...] | None = None


class ClientConfig(_Model):
    """A sending system: who it is, and what it may use.

    A client with ``user`` is an SMTP AUTH login; with ``mailboxes``, mail taken
    from those IMAP mailboxes; otherwise, SMTP clients from ``networks``.
    ``networks`` and ``senders`` narrow each kind further."""

    #: an SMTP AUTH login: the client is recognised by it
    user: str | None = None
    #: a ``scrypt$…`` hash (``sms-bridge hash-password``) or, from the environment, the password
    password: SecretStr | None = None
    #: networks the client sends from (`192.168.1.0/24`); alone, they recognise it
    networks: tuple[str, ...] = ()
    #: envelope senders allowed: ``erp@corp.example`` or ``@corp.example``
    senders: tuple[str, ...] = ()
    #: IMAP mailboxes (`imap.N.name`) whose mail is this client's
    mailboxes: tuple[str, ...] = ()
    #: a bearer token for the alert webhook (``POST /alerts/<route>`` on ``admin.listen``)
    token: SecretStr | None = None
    #: routes and accounts it may use (default: all)
    routes: tuple[str, ...] | None = None
    #: accounts it may use (default: all)
    accounts: tuple[str, ...] | None = None
    #: spending limits for this client
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
