"""The ways in: ``smtp``, ``lmtp``, ``imap`` and ``sendmail``."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
)

from bridge.config.base import HostPort, _check_listen, _Model


class ListenerConfig(_Model):
    #: `host:port` to listen on (IPv6 in brackets: `[::1]:2525`)
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
    #: the name the server greets with
    hostname: str = "sms-bridge"
    #: bytes; larger gets `552`
    max_message_size: int = Field(default=1_048_576, ge=1024)
    #: recipients per message (`452 4.5.3` beyond)
    max_recipients: int = Field(default=50, ge=1)
    #: open connections in total and per client address (`421 4.7.0` beyond)
    max_connections: int = Field(default=100, ge=1)
    #: open connections in total and per client address (`421 4.7.0` beyond)
    max_connections_per_client: int = Field(default=20, ge=1)
    #: seconds a client may stay silent before it is disconnected
    timeout: float = Field(default=300.0, gt=0)
    #: PEM files; STARTTLS is offered when set
    tls_cert: str | None = None
    #: PEM files; STARTTLS is offered when set
    tls_key: str | None = None
    #: failed AUTH from one address: each failure slows the next reply by a second;
    #: this many within ``auth_lockout`` seconds locks the address out for as long
    auth_failures: int = Field(default=5, ge=1)
    #: failed logins from one address within `auth_lockout` seconds before it is locked out for as long
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


class ImapConfig(_Model):
    """A mailbox the bridge watches; each new mail is treated as if it came over SMTP."""

    #: a short name for logs and the outbox (default: user@host)
    name: str | None = None
    #: the IMAP server's host name
    host: str
    #: default 993 (implicit TLS) or 143 (plain text)
    port: int | None = Field(default=None, ge=1, le=65535)
    #: ``implicit`` (IMAPS); ``none`` only for a server on a trusted network
    tls: Literal["implicit", "none"] = "implicit"
    #: check the server's certificate (turn off only for a server you reach over a trusted network)
    verify_tls: bool = True
    #: a PEM file of CAs to trust instead of the system's (a private CA)
    ca_file: str | None = None
    #: the mailbox's login
    user: str
    #: the mailbox's password (use `${NAME}` to take it from the environment)
    password: SecretStr
    #: the mailbox's own address: never sent a notice (it would come back)
    address: str | None = None
    #: the folder new mail is taken from
    folder: str = "INBOX"
    #: the route mail from here goes through (default: by the To:/Cc: addresses)
    route: str | None = None
    #: after a mail is taken: ``move`` it to ``processed_folder`` or ``flag`` it \Seen
    after: Literal["move", "flag"] = "move"
    #: where mail that became SMS is moved (`after: move`)
    processed_folder: str = "Processed"
    #: where mail that was refused is moved, with a notice to its sender
    rejected_folder: str = "Rejected"
    #: use IDLE when the server offers it, re-issued every ``idle_interval`` seconds
    idle: bool = True
    #: seconds before IDLE is re-issued (servers drop it after 30 minutes)
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
    #: SMTP AUTH for `sendmail`, when local mail must log in
    password: SecretStr | None = None
