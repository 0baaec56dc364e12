"""A tunnel: a server-side listener forwarding to a destination seen by a client."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rportd.gotypes import format_time, utcnow
from rportd.timers import Timer
from rportd.tunnels.acl import TunnelACL
from rportd.tunnels.proxy import TunnelProxy
from rportd.tunnels.tcp import TCPForwarder
from rportd.tunnels.udp import UDPForwarder
from rportd.wire.messages import Remote


@dataclass(eq=False)
class TunnelRuntime:
    """What a running tunnel holds: listeners, proxy, reserved ports and timers."""

    acl: TunnelACL | None = None
    tcp: TCPForwarder | None = None
    udp: UDPForwarder | None = None
    proxy: TunnelProxy | None = None
    ports: list[int] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    closed: bool = False

    @property
    def active_connections(self) -> int:
        return self.tcp.active if self.tcp is not None else 0

    def last_active(self) -> float:
        """Latest activity of either protocol (scheduler clock)."""
        values = [f.last_active() for f in (self.tcp, self.udp) if f is not None]
        return max(values, default=-math.inf)

    def traffic(self) -> tuple[int, int]:
        """Bytes (towards the client, from the client) through this tunnel so far."""
        sent = received = 0
        if self.tcp is not None:
            sent, received = self.tcp.traffic()
        if self.udp is not None:
            sent += self.udp.sent
            received += self.udp.received
        return sent, received

    def close(self) -> None:
        """Stop listening and end every connection (ports free on return for TCP)."""
        if self.closed:
            return
        self.closed = True
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()
        if self.proxy is not None:
            self.proxy.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.udp is not None:
            self.udp.close()


@dataclass(eq=False)
class Tunnel:
    """A tunnel of one client; ``runtime`` is set while it runs."""

    id: str
    remote: Remote
    created_at: datetime = field(default_factory=utcnow)
    runtime: TunnelRuntime | None = None

    def to_json(self) -> dict[str, Any]:
        """The API/storage object: ``id``, the Remote's keys, ``created_at`` (Go order)."""
        return {"id": self.id, **self.remote.to_json(), "created_at": format_time(self.created_at)}

    def to_list_item(self, client_id: str) -> dict[str, Any]:
        """An item of ``GET /tunnels`` (upstream's TunnelPayload order)."""
        return {
            **self.remote.to_json(),
            "id": self.id,
            "client_id": client_id,
            "created_at": format_time(self.created_at),
        }

    @property
    def protocols(self) -> list[str]:
        """``tcp+udp`` is two listeners on the same port."""
        return ["tcp", "udp"] if self.remote.protocol == "tcp+udp" else [self.remote.protocol]
