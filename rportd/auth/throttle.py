"""Failed-login throttles: a wait per login name and a ban per source IP."""

from __future__ import annotations

import time


class LoginWait:
    """After a failure, further attempts for the same name are refused for ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def is_waiting(self, name: str) -> bool:
        until = self._until.get(name)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._until[name]
            return False
        return True

    def failed(self, name: str) -> None:
        if self.seconds > 0:
            self._until[name] = time.monotonic() + self.seconds
            if len(self._until) > 10_000:
                self._expire()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self._until.items() if v <= now]:
            del self._until[key]


class IpBan:
    """Bans an IP for ``ban_seconds`` after ``max_failures`` consecutive failures."""

    def __init__(self, max_failures: int, ban_seconds: float) -> None:
        self.max_failures = max_failures
        self.ban_seconds = ban_seconds
        self._failures: dict[str, int] = {}
        self._banned_until: dict[str, float] = {}
        self.failures_total = 0  # failed logins seen (metrics)
        self.bans_total = 0  # bans imposed (metrics)

    @property
    def enabled(self) -> bool:
        return self.max_failures > 0 and self.ban_seconds > 0

    def is_banned(self, ip: str) -> bool:
        until = self._banned_until.get(ip)
        if until is None:
            return False
        if time.monotonic() >= until:
            del self._banned_until[ip]
            return False
        return True

    @property
    def banned_now(self) -> int:
        """IPs under a ban now (expired ones included until next looked up)."""
        now = time.monotonic()
        return sum(1 for until in self._banned_until.values() if until > now)

    def failed(self, ip: str) -> None:
        self.failures_total += 1
        if not self.enabled or not ip:
            return
        count = self._failures.get(ip, 0) + 1
        if count >= self.max_failures:
            self._failures.pop(ip, None)
            self._banned_until[ip] = time.monotonic() + self.ban_seconds
            self.bans_total += 1
        else:
            self._failures[ip] = count

    def succeeded(self, ip: str) -> None:
        self._failures.pop(ip, None)
