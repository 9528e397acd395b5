"""What the schema alone cannot check: names that refer to each other, and warnings."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import (
    ConfigDict,
    ValidationError,
)

from bridge.config.accounts import ACCOUNT_TYPES, AccountConfig, KwtsmsHttpAccount, OpentechHttpAccount
from bridge.config.base import DEFAULT_URLS, parse_host_port
from bridge.config.root import Config
from bridge.config.routes import RouteConfig
from bridge.core.model import Problem


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
    from bridge.core import phone  # noqa: PLC0415  (phone imports config for types)

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
