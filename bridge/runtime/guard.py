"""Failed logins per client address: slow-down and lockout, for SMTP AUTH and the status page."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("bridge.auth")


class AuthGuard:
    """Failed AUTH per client address: each failure slows the next reply by a second
    more (up to 5 s); ``failures`` within ``lockout`` seconds lock the address out."""

    def __init__(self, failures: int, lockout: float) -> None:
        self.failures = failures
        self.lockout = lockout
        self.recent: dict[str, list[float]] = {}
        self.locked_until: dict[str, float] = {}

    def locked(self, ip: str) -> bool:
        return self.locked_until.get(ip, 0.0) > time.monotonic()

    def failed(self, ip: str) -> float:
        now = time.monotonic()
        times = [t for t in self.recent.get(ip, []) if t > now - self.lockout] + [now]
        self.recent[ip] = times
        if len(times) >= self.failures:
            self.locked_until[ip] = now + self.lockout
            log.warning("auth locked out %s for %.0f s after %d failures", ip, self.lockout, len(times))
        return float(min(len(times), 5))

    def succeeded(self, ip: str) -> None:
        self.recent.pop(ip, None)
