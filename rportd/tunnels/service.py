"""Starting, re-establishing and stopping the tunnels of connected clients."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from rportd.clients.model import TunnelLike
from rportd.tunnels.model import Tunnel
from rportd.tunnels.ports import PortError, PortPool
from rportd.wire.messages import Remote
from rportd.wire.ssh import RequestFailed

if TYPE_CHECKING:
    from rportd.clients.connection import ClientConnection
    from rportd.clients.model import Client

log = logging.getLogger(__name__)

ZERO_HOST = "0.0.0.0"


class TunnelError(Exception):
    """A tunnel cannot be started; the text is upstream's wording."""


def version_at_least(version: str, minimum: tuple[int, ...]) -> bool:
    """Lenient semver comparison; unparsable versions count as new."""
    parts = []
    for piece in version.split("-", 1)[0].split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        if not digits:
            return True
        parts.append(int(digits))
    if parts == [0, 0, 0]:  # source builds report 0.0.0-src
        return True
    return tuple(parts) >= minimum


def _remote_of(tunnel: TunnelLike) -> Remote:
    if isinstance(tunnel, Tunnel):
        return tunnel.remote
    return Remote.from_json(tunnel.to_json())


class TunnelService:
    """Owns every tunnel listener of this server."""

    def __init__(self, ports: PortPool) -> None:
        self.ports = ports

    def remotes_to_reestablish(
        self, old_tunnels: Sequence[TunnelLike], new: Sequence[Remote]
    ) -> list[Remote]:
        """Old tunnels to recreate on reconnect, or none (protocol.md §6.6)."""
        old = [_remote_of(t) for t in old_tunnels]
        if len(new) > len(old):
            return []
        marked = [False] * len(old)
        for cur in new:
            if not cur.local_specified:
                continue
            for i, prev in enumerate(old):
                if not marked[i] and cur.key() == prev.key():
                    marked[i] = True
                    break
            else:
                return []
        for cur in new:
            if cur.local_specified:
                continue
            for i, prev in enumerate(old):
                if (
                    not marked[i]
                    and prev.lport_random
                    and cur.destination == prev.destination
                    and cur.acl == prev.acl
                ):
                    marked[i] = True
                    break
            else:
                return []
        result = []
        for i, prev in enumerate(old):
            if marked[i]:
                continue
            if prev.lport_random:
                prev.lhost = ""
                prev.lport = ""
            result.append(prev)
        return result

    async def filter_allowed(
        self, conn: ClientConnection, version: str, remotes: list[Remote]
    ) -> list[Remote]:
        """Drop remotes the client's ``tunnel_allowed`` now refuses (client ≥ 0.6.4)."""
        if not version_at_least(version, (0, 6, 4)):
            return remotes
        allowed = []
        for remote in remotes:
            try:
                ok = await conn.check_tunnel_allowed(remote.destination)
            except RequestFailed as exc:
                if "unknown request" in exc.text:
                    return remotes
                raise TunnelError(f"failed to filter tunnels: {exc.text}") from None
            if ok:
                allowed.append(remote)
            else:
                log.info("tunnel %s is no longer allowed by client config, removing", remote.key())
        return allowed

    async def start_client_tunnels(
        self, client: Client, conn: ClientConnection, remotes: list[Remote]
    ) -> list[Tunnel]:
        """Start a tunnel per remote, updating each remote in place."""
        started = []
        for remote in remotes:
            started.append(await self.start_tunnel(client, conn, remote))
        return started

    async def start_tunnel(self, client: Client, conn: ClientConnection, remote: Remote) -> Tunnel:
        """Reserve the local port and record the tunnel on the client."""
        protocols = ["tcp", "udp"] if remote.protocol == "tcp+udp" else [remote.protocol]
        try:
            if not remote.local_specified:
                remote.lport = str(self.ports.pick(protocols))
                remote.lhost = ZERO_HOST
                remote.lport_random = True
            else:
                if not remote.lhost:
                    remote.lhost = ZERO_HOST
                if not remote.lport.isdigit():
                    raise TunnelError(f"Invalid local port: {remote.lport}.")
                self.ports.check(int(remote.lport), protocols, remote.lhost)
        except PortError as exc:
            raise TunnelError(str(exc)) from None
        self.ports.take(int(remote.lport))
        client.next_tunnel_id += 1
        tunnel = Tunnel(id=str(client.next_tunnel_id), remote=remote)
        client.tunnels.append(tunnel)
        return tunnel

    def stop_client_tunnels(self, client: Client) -> None:
        """Stop every tunnel of a disconnected client; keep them in its record."""
        for tunnel in client.tunnels:
            if isinstance(tunnel, Tunnel) and tunnel.remote.lport.isdigit():
                self.ports.release(int(tunnel.remote.lport))

    async def close(self) -> None:
        """Stop everything (server shutdown)."""
