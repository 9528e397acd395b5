"""Which route serves a recipient address. Pure; the SMTP server asks at RCPT."""

from __future__ import annotations

from bridge.config import Config, RouteConfig
from bridge.formats.address import is_number_local_part


def route_for(address: str, config: Config) -> tuple[str, RouteConfig] | None:
    """The (name, route) serving ``address``, or ``None`` if the bridge does not serve it."""
    address = address.strip().strip("<>").lower()
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
