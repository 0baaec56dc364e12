"""The server ports tunnels may listen on: ``used_ports`` minus ``excluded_ports``."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterable


class PortError(Exception):
    """A local port cannot be used; the text is upstream's wording."""


def port_is_free(port: int, host: str = "0.0.0.0", udp: bool = False) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    with socket.socket(family, kind) as sock:
        if not udp:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


class PortPool:
    """Allowed tunnel ports and the ones this server holds."""

    def __init__(self, allowed: Iterable[int]) -> None:
        self.allowed = frozenset(allowed)
        self._ordered = sorted(self.allowed)
        self.in_use: set[int] = set()

    def check(self, port: int, protocols: Iterable[str], host: str = "0.0.0.0") -> None:
        """Refuse an explicit port outside the pool or busy."""
        if port not in self.allowed:
            raise PortError(f"Local port {port} is not among allowed ports.")
        if port in self.in_use or not all(port_is_free(port, host, p == "udp") for p in protocols):
            raise PortError(f"Local port {port} already in use.")

    def pick(
        self, protocols: Iterable[str], host: str = "0.0.0.0", preferred: int | None = None
    ) -> int:
        """A random free port of the pool (``preferred`` if it is one)."""
        protos = list(protocols)
        if (
            preferred in self.allowed
            and preferred not in self.in_use
            and all(port_is_free(preferred, host, p == "udp") for p in protos)
        ):
            return preferred
        candidates = [p for p in self._ordered if p not in self.in_use]
        random.shuffle(candidates)
        for port in candidates[:200]:
            if all(port_is_free(port, host, p == "udp") for p in protos):
                return port
        for port in candidates[200:]:
            if all(port_is_free(port, host, p == "udp") for p in protos):
                return port
        raise PortError("no ports available")

    def take(self, port: int) -> None:
        self.in_use.add(port)

    def release(self, port: int) -> None:
        self.in_use.discard(port)
