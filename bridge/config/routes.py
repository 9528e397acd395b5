"""``routes``: how a mail's recipients become SMS, and which account sends them."""

from __future__ import annotations

import string
from typing import Annotated, Any, Literal

from pydantic import (
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from bridge.config.base import ACK_TIMEOUT_MAX, _Model
from bridge.core.formats.alerts import TEMPLATE_FIELDS, ProfileName


class RoutingRule(_Model):
    """One line of a route's routing: numbers by prefix or region, to an account."""

    #: digits after the country code's start: ``965``, ``9655``
    prefix: str | None = None
    #: a region code: ``LB``
    region: str | None = None
    #: every number no earlier rule took
    default: bool = False
    #: the account that sends the numbers this rule takes
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
UNION_TAGS = frozenset({"name", "rules"})


class RouteConfig(_Model):
    #: `kwtsms` or `address`
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
    #: sender for this route
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
