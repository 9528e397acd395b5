"""Which route serves a recipient address. Pure; the SMTP server asks at RCPT."""

from __future__ import annotations

from bridge.config import Config, RouteConfig
from bridge.core.formats.address import is_number_local_part

#: the domains of this machine's own users, besides ``smtp.hostname``
LOCAL_DOMAINS = frozenset({"localhost", "localhost.localdomain"})


def address_route_domain(config: Config) -> str | None:
    """The domain of the first address route: where ``local_users`` aliases and numbers go."""
    return next((r.domain for r in config.routes.values() if r.format == "address" and r.domain), None)


def resolve(address: str, config: Config) -> str:
    """``address`` as the bridge reads it: a user of this machine (``root``, ``root@localhost``)
    that ``local_users`` maps becomes the address it maps to; any other is only normalised."""
    address = address.strip().strip("<>").lower()
    if not config.local_users:
        return address
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if domain and domain not in LOCAL_DOMAINS and domain != config.smtp.hostname.lower():
        return address
    target = config.local_users.get(local)
    if target is None:
        return address
    if "@" in target:
        return target
    route_domain = address_route_domain(config)
    return f"{target}@{route_domain}" if route_domain else address


def route_for(address: str, config: Config) -> tuple[str, RouteConfig] | None:
    """The (name, route) serving ``address``, or ``None`` if the bridge does not serve it."""
    address = resolve(address, config)
    local, at, domain = address.rpartition("@")
    if not at or not local:
        return None
    for name, route in config.routes.items():
        if address in route.recipients:
            return name, route
    for name, route in config.routes.items():
        if route.domain == domain and (local in config.aliases or is_number_local_part(local)):
            return name, route
    return None


def why_not_served(address: str, config: Config) -> str:
    """In plain words, why the bridge does not serve ``address``, with what it does serve there."""
    address = address.strip().strip("<>").lower()
    local, at, domain = address.rpartition("@")
    if not at:
        local, domain = address, ""
    if not domain or domain in LOCAL_DOMAINS or domain == config.smtp.hostname.lower():
        users = ", ".join(sorted(config.local_users))
        if users:
            return f"{local!r} is not a local user this bridge maps (local_users: {users})"
        if not domain:
            return "an address needs a domain; local users (root) are mapped with local_users"
    served = [r for r in config.routes.values() if r.domain == domain]
    if served:
        aliases = ", ".join(sorted(config.aliases)) or "none"
        return f"{local!r} is neither a phone number nor an alias here (aliases: {aliases})"
    return "this bridge does not serve that address"
