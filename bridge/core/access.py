"""Who may send, as whom, and what: client matching and checks. Pure.

A client is recognised, in this order, by its SMTP AUTH login (``user``), by
the IMAP mailbox the mail came from (``mailboxes``), or by the network an
unauthenticated SMTP session comes from (``networks``); ``networks`` and
``senders`` narrow each kind further. A mail that matches no client is refused.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from bridge.config import ClientConfig, Config, LimitsConfig
from bridge.core import phone
from bridge.core.model import Problem, SmsRequest

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


@dataclass(frozen=True)
class Peer:
    """Where a mail came from."""

    ip: str | None = None
    user: str | None = None
    mailbox: str | None = None


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash`` for ``clients.<name>.password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(stored: str, given: bytes) -> bool:
    """``given`` against a ``scrypt$…`` hash or a plain password, in constant time."""
    if stored.startswith("scrypt$"):
        try:
            _, n, r, p, salt, digest = stored.split("$")
            expected = base64.b64decode(digest)
            actual = hashlib.scrypt(
                given, salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
            )
        except (ValueError, TypeError):
            return False
        return hmac.compare_digest(actual, expected)
    return hmac.compare_digest(stored.encode(), given)


@functools.lru_cache(maxsize=256)
def _networks(networks: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n, strict=False) for n in networks)


def _in_networks(ip: str | None, networks: tuple[str, ...]) -> bool:
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return False
    return any(address in network for network in _networks(networks))


def sender_allowed(client: ClientConfig, mail_from: str) -> bool:
    if not client.senders:
        return True
    sender = mail_from.strip().strip("<>").lower()
    domain = "@" + sender.rpartition("@")[2]
    return sender in client.senders or domain in client.senders


def find_client(config: Config, peer: Peer) -> tuple[str, ClientConfig] | None:
    """The client a session or mailbox is, before the envelope sender is known."""
    for name, client in config.clients.items():
        if peer.user is not None:
            if client.user == peer.user and (not client.networks or _in_networks(peer.ip, client.networks)):
                return name, client
        elif peer.mailbox is not None:
            if peer.mailbox in client.mailboxes:
                return name, client
        elif not (client.user or client.mailboxes or client.token) and _in_networks(peer.ip, client.networks):
            return name, client
    return None


def webhook_client(config: Config, token: str, ip: str | None) -> tuple[str, ClientConfig] | None:
    """The webhook client whose token this is (and whose networks, if any, hold ``ip``)."""
    found = None
    for name, client in config.clients.items():
        if client.token is None:
            continue
        # compared with every client's token, in constant time, so timing says nothing
        if verify_password(client.token.get_secret_value(), token.encode()) and found is None:
            found = (name, client)
    if found is not None and found[1].networks and not _in_networks(ip, found[1].networks):
        return None
    return found


def auth_offered(config: Config) -> bool:
    return any(c.user for c in config.clients.values())


def may_use_route(client: ClientConfig, route: str) -> bool:
    return client.routes is None or route in client.routes


def check_requests(name: str, client: ClientConfig, config: Config, requests: tuple[SmsRequest, ...]) -> list[Problem]:
    """What this client may not do with these SMS: accounts, number counts, destinations."""
    problems: list[Problem] = []
    for request in requests:
        if client.accounts is not None and request.account not in client.accounts:
            problems.append(Problem("account", f"client {name} may not send with account {request.account}"))
        account = config.accounts[request.account]
        for scope, limits in ((f"client {name}", client.limits), (f"account {request.account}", account.limits)):
            problems += _destination_problems(scope, limits, request, config.numbers.default_region)
    return problems


def _destination_problems(scope: str, limits: LimitsConfig, request: SmsRequest, region: str) -> list[Problem]:
    problems = []
    if limits.numbers_per_message is not None and len(request.numbers) > limits.numbers_per_message:
        problems.append(
            Problem(
                "mobile",
                f"{len(request.numbers)} numbers; {scope} may send to at most {limits.numbers_per_message} at once",
            )
        )
    if limits.destinations is not None:
        allowed = limits.destinations
        for number in request.numbers:
            found = phone.normalise(number, region)
            if not any(number.startswith(a) or (found.region or "") == a.upper() for a in allowed):
                problems.append(
                    Problem("mobile", f"{phone.mask(number)}: {scope} may send only to {', '.join(allowed)}")
                )
    return problems
