"""A tunnel: a server-side listener forwarding to a destination seen by a client."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rportd.gotypes import format_time, utcnow
from rportd.wire.messages import Remote


@dataclass(eq=False)
class Tunnel:
    """A tunnel of one client, running or stopped."""

    id: str
    remote: Remote
    created_at: datetime = field(default_factory=utcnow)

    def to_json(self) -> dict[str, Any]:
        out = self.remote.to_json()
        out["id"] = self.id
        out["created_at"] = format_time(self.created_at)
        return out

    @property
    def protocols(self) -> list[str]:
        """``tcp+udp`` is two listeners on the same port."""
        return ["tcp", "udp"] if self.remote.protocol == "tcp+udp" else [self.remote.protocol]
