"""What the config's sections share: the base model, ``host:port``, provider names and URLs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    SecretStr,
)

ProviderName = Literal["kwtsms-http", "opentech-http", "kwtsms-smtp"]


DEFAULT_URLS: dict[str, str] = {
    "kwtsms-http": "https://www.kwtsms.com/API/",
    "opentech-http": "http://www.ot-sms.com/ap/static/api/",
}


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


@dataclass(frozen=True)
class Smarthost:
    """Where mail leaves the bridge: the kwtsms-smtp relay's smarthost, and the notifier's."""

    address: str
    tls: str
    username: str | None
    password: SecretStr | None = dc_field(repr=False)

    def login(self) -> tuple[str, str] | None:
        if not self.username:
            return None
        return self.username, self.password.get_secret_value() if self.password else ""
