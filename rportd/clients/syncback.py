"""Client last-seen data a secondary sends back to its primary (HA sync back)."""

from __future__ import annotations

from typing import Any

from rportd.clients.model import Client
from rportd.clients.registry import ClientRegistry
from rportd.gotypes import parse_time


class ClientSyncSource:
    """Client records by id; the primary keeps the one seen last."""

    kind = "clients"

    def __init__(self, registry: ClientRegistry) -> None:
        self.registry = registry

    async def load(self, keys: list[str]) -> list[dict[str, Any]]:
        clients = (self.registry.get(key) for key in keys)
        return [client.row() for client in clients if client is not None]

    async def store(self, records: list[dict[str, Any]]) -> int:
        changed = 0
        for record in records:
            incoming = Client.from_row(
                str(record["id"]),
                str(record["client_auth_id"]),
                parse_time(record.get("disconnected_at")),
                str(record["details"]),
            )
            current = self.registry.get(incoming.id)
            if (
                current is not None
                and current.connection is not None
                and current.connected_at is not None
                and (
                    incoming.disconnected_at is None
                    or incoming.disconnected_at >= current.connected_at
                )
            ):
                # It came here while that node still had it (switch back): that node's
                # tunnels are newer than the record they were re-established from.
                changed += await self.registry.follow_tunnels(current, incoming)
                continue
            if current is not None and (
                current.connection is not None
                or (
                    incoming.disconnected_at is not None
                    and current.disconnected_at is not None
                    and incoming.disconnected_at <= current.disconnected_at
                )
            ):
                continue  # what this node knows is at least as recent
            self.registry.adopt(incoming)
            changed += 1
        return changed
