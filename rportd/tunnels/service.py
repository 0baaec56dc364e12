"""Starting, re-establishing, timing out and stopping the tunnels of connected clients."""

from __future__ import annotations

import asyncio
import errno as errno_codes
import logging
import os
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp
import asyncssh

from rportd.clients.model import TunnelLike
from rportd.cors import PROXY_METHODS, CorsPolicy, valid_origins
from rportd.timers import Scheduler
from rportd.tunnels.acl import LOCALHOST_ONLY, ACLError, TunnelACL
from rportd.tunnels.errors import (
    LOCAL_PORT_IN_USE,
    REMOTE_PORT_NOT_OPEN,
    TUNNEL_EXIST,
    TUNNEL_TO_PORT_EXIST,
    TunnelError,
    bad_request,
)
from rportd.tunnels.model import Tunnel, TunnelRuntime
from rportd.tunnels.ports import PortError, PortPool, port_is_free
from rportd.tunnels.proxy import TunnelProxy, proxy_ssl_context
from rportd.tunnels.request import LOCAL_HOST, ZERO_HOST, TunnelRequest
from rportd.tunnels.tcp import ChannelOpener, TCPForwarder
from rportd.tunnels.udp import UDPForwarder
from rportd.wire.messages import Remote
from rportd.wire.ssh import ConnectionClosed, RequestFailed

if TYPE_CHECKING:
    from rportd.clients.connection import ClientConnection
    from rportd.clients.model import Client
    from rportd.config.model import ServerConfig

__all__ = ["TunnelError", "TunnelService", "TunnelSettings", "version_at_least"]

log = logging.getLogger(__name__)

CHANNEL_TYPE = "rport"
NO_PORTS = "no ports available"
_OPEN_FAILURES = {
    1: "administratively prohibited",
    2: "connect failed",
    3: "unknown channel type",
    4: "resource shortage",
}


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


def _same_tunnel(a: Remote, b: Remote) -> bool:
    """The same tunnel definition (a random local port may differ)."""
    if (a.destination, a.protocol, a.acl) != (b.destination, b.protocol, b.acl):
        return False
    return a.lport_random or b.lport_random or (a.lhost, a.lport) == (b.lhost, b.lport)


def _protocols_overlap(a: str, b: str) -> bool:
    """Upstream's ``IsProtocol``: ``tcp+udp`` matches ``tcp`` and ``udp`` both ways."""
    return a == b or "tcp+udp" in (a, b)


def _start_failure(exc: BaseException, host: str, port: int, proto: str) -> TunnelError:
    """``unable to start tunnel: ...`` worded like the Go error it replaces."""
    if isinstance(exc, asyncssh.ChannelOpenError):
        reason = _OPEN_FAILURES.get(exc.code, f"unknown reason {exc.code}")
        text = f"ssh: rejected: {reason} ({exc.reason})"
    elif isinstance(exc, OSError) and exc.errno is not None:
        text = f"listen {proto} {host}:{port}: bind: {os.strerror(exc.errno).lower()}"
        if exc.errno == errno_codes.EADDRNOTAVAIL:
            text = f"listen {proto} {host}:{port}: bind: cannot assign requested address"
    else:
        text = str(exc) or type(exc).__name__
    return TunnelError(f"unable to start tunnel: {text}", 409)


@dataclass(frozen=True)
class TunnelSettings:
    """The ``[server]`` keys tunnels use."""

    check_port_timeout: float = 2.0
    proxy_cert_file: str = ""
    proxy_key_file: str = ""
    tls_min: str = "1.3"
    proxy_cors: CorsPolicy | None = None  # tunnel_cors

    @classmethod
    def from_config(cls, server: ServerConfig) -> TunnelSettings:
        origins = valid_origins(server.tunnel_cors)
        return cls(
            check_port_timeout=server.check_port_timeout,
            proxy_cert_file=server.tunnel_proxy_cert_file,
            proxy_key_file=server.tunnel_proxy_key_file,
            tls_min=server.tls_min,
            proxy_cors=CorsPolicy.from_config(origins, PROXY_METHODS, None) if origins else None,
        )


class TunnelService:
    """Owns every tunnel listener of this server and the one timer queue they share."""

    def __init__(
        self,
        ports: PortPool,
        settings: TunnelSettings | None = None,
        scheduler: Scheduler | None = None,
    ) -> None:
        self.ports = ports
        self.settings = settings or TunnelSettings()
        self.scheduler = scheduler or Scheduler(name="tunnel-timers")
        self.client_changed: Callable[[Client], None] = lambda client: None
        """Persists a client whose tunnel list changed (set to the registry's save)."""
        self.proxy_ssl: ssl.SSLContext | None = None
        self._running: dict[Tunnel, Client] = {}
        self._stopped_traffic = (0, 0)  # bytes of tunnels no longer running
        self._locks: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle -----------------------------------------------------------------

    @property
    def proxy_enabled(self) -> bool:
        return self.proxy_ssl is not None

    async def start(self) -> None:
        """Load the tunnel proxy certificate (if configured) and start the timer queue."""
        s = self.settings
        if s.proxy_cert_file and s.proxy_key_file:
            self.proxy_ssl = await asyncio.to_thread(
                proxy_ssl_context, s.proxy_cert_file, s.proxy_key_file, s.tls_min
            )
        self.scheduler.start()

    async def close(self) -> None:
        """Stop everything (server shutdown)."""
        for tunnel in list(self._running):
            self._stop(tunnel)
            if tunnel.runtime is not None and tunnel.runtime.tcp is not None:
                tunnel.runtime.tcp.cancel_pending()
        await self.scheduler.stop()
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def running(self) -> list[tuple[Client, Tunnel]]:
        """Every running tunnel with its client."""
        return [(client, tunnel) for tunnel, client in self._running.items()]

    def traffic(self) -> tuple[int, int]:
        """Bytes (towards clients, from clients) through every tunnel since the start."""
        sent, received = self._stopped_traffic
        for tunnel in self._running:
            if tunnel.runtime is not None:
                s, r = tunnel.runtime.traffic()
                sent += s
                received += r
        return sent, received

    def _http_session(self) -> aiohttp.ClientSession:
        """The proxies' client to the tunnels behind them (no keep-alive: idle counts)."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(force_close=True, ssl=False),
                auto_decompress=False,
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=30),
            )
        return self._http

    # --- reconnect rules (protocol.md §6.6) ----------------------------------------

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
        # A random port stays random; the one it had is taken again if free (see _local_port).
        return [prev for i, prev in enumerate(old) if not marked[i]]

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

    async def follow(
        self,
        client: Client,
        conn: ClientConnection,
        wanted: Sequence[TunnelLike],
        restored: Sequence[TunnelLike],
    ) -> None:
        """Start the ``wanted`` tunnels not running; stop ``restored`` ones not wanted."""
        remotes = [_remote_of(t) for t in wanted]
        for tunnel in list(restored):
            if (
                isinstance(tunnel, Tunnel)
                and tunnel in client.tunnels
                and not any(_same_tunnel(tunnel.remote, r) for r in remotes)
            ):
                log.info("client %s: tunnel %s was closed elsewhere", client.id, tunnel.id)
                self._stop(tunnel)
                self._forget(client, tunnel)
        for remote in remotes:
            running = (t.remote for t in client.tunnels if isinstance(t, Tunnel))
            if any(_same_tunnel(remote, r) for r in running):
                continue
            try:
                await self.start_tunnel(client, conn, remote)
            except (TunnelError, OSError) as exc:
                log.warning("client %s: tunnel %s made elsewhere: %s", client.id, remote.key(), exc)
        self.client_changed(client)

    # --- starting -------------------------------------------------------------------

    async def start_client_tunnels(
        self,
        client: Client,
        conn: ClientConnection,
        remotes: list[Remote],
        *,
        skip_failing: bool = False,
    ) -> list[Tunnel]:
        """Start a tunnel per remote, updating each remote in place.

        With ``skip_failing`` a tunnel that cannot start is left out (and logged).
        """
        started = []
        for remote in remotes:
            try:
                started.append(await self.start_tunnel(client, conn, remote))
            except TunnelError as exc:
                if not skip_failing:
                    raise
                log.warning(
                    "client %s: tunnel %s defined on another node not re-created: %s",
                    client.id,
                    remote.key(),
                    exc,
                )
        return started

    def _local_port(self, remote: Remote) -> list[int]:
        """Pick or check the listening port(s); returns the pool ports now held."""
        protocols = ["tcp", "udp"] if remote.protocol == "tcp+udp" else [remote.protocol]
        try:
            if not remote.local_specified or remote.lport_random:
                # A re-established random port gets its old number back where it is free.
                preferred = int(remote.lport) if remote.lport.isdigit() else None
                remote.lport = str(self.ports.pick(protocols, preferred=preferred))
                remote.lhost = ZERO_HOST
                remote.lport_random = True
            else:
                if not remote.lhost:
                    remote.lhost = ZERO_HOST
                if not remote.lport.isdigit():
                    raise bad_request(f"Invalid local port: {remote.lport}.")
                port = int(remote.lport)
                if port not in self.ports.allowed:
                    raise bad_request(f"Local port {port} is not among allowed ports.")
                self.ports.check(port, protocols, remote.lhost)
        except PortError as exc:
            raise TunnelError(str(exc)) from None
        port = int(remote.lport)
        self.ports.take(port)
        held = [port]
        if remote.http_proxy and self.proxy_enabled:
            try:
                inner = self.ports.pick(["tcp"], LOCAL_HOST)
            except PortError:
                self.ports.release(port)
                raise TunnelError(NO_PORTS) from None
            self.ports.take(inner)
            held.append(inner)
        return held

    async def start_tunnel(self, client: Client, conn: ClientConnection, remote: Remote) -> Tunnel:
        """Listen for ``remote`` and record the running tunnel on the client."""
        held = self._local_port(remote)
        try:
            acl = TunnelACL.parse(remote.acl)
        except ACLError as exc:
            for port in held:
                self.ports.release(port)
            raise bad_request(f"Invalid ACL: {exc}") from None
        client.next_tunnel_id += 1
        tunnel = Tunnel(id=str(client.next_tunnel_id), remote=remote)
        runtime = TunnelRuntime(acl=acl, ports=held)
        tunnel.runtime = runtime
        try:
            await self._listen(tunnel, runtime, self._opener(conn), f"{client.id}#{tunnel.id}")
        except BaseException:
            runtime.close()
            for port in held:
                self.ports.release(port)
            raise
        self._running[tunnel] = client
        self._arm_timers(client, tunnel)
        client.tunnels.append(tunnel)
        log.info("client %s: tunnel %s started (%s)", client.id, tunnel.id, remote.key())
        return tunnel

    @staticmethod
    def _opener(conn: ClientConnection) -> ChannelOpener:
        async def open_channel(
            payload: bytes, factory: Callable[[], asyncssh.SSHTCPSession[bytes]]
        ) -> tuple[asyncssh.SSHTCPChannel[bytes], asyncssh.SSHTCPSession[bytes]]:
            if not conn.ssh.is_open:
                raise asyncssh.ChannelOpenError(2, "SSH connection closed")
            return await conn.ssh.open_channel(CHANNEL_TYPE, payload, factory)

        return open_channel

    async def _listen(
        self, tunnel: Tunnel, runtime: TunnelRuntime, opener: ChannelOpener, name: str
    ) -> None:
        remote = tunnel.remote
        clock = self.scheduler.now
        host, port = remote.lhost, int(remote.lport)
        tcp_host, tcp_port = host, port

        def tunnel_acl() -> TunnelACL | None:
            return runtime.acl

        tcp_acl: Callable[[], TunnelACL | None] = tunnel_acl
        if len(runtime.ports) > 1:  # behind the HTTP proxy: the real tunnel is local only
            tcp_host, tcp_port = LOCAL_HOST, runtime.ports[1]

            def tcp_acl() -> TunnelACL | None:
                return LOCALHOST_ONLY

        if "tcp" in tunnel.protocols:
            runtime.tcp = TCPForwarder(
                name, tcp_host, tcp_port, remote.destination, opener, tcp_acl, clock
            )
            try:
                await runtime.tcp.start()
            except OSError as exc:
                raise _start_failure(exc, tcp_host, tcp_port, "tcp") from None
        if "udp" in tunnel.protocols:
            runtime.udp = UDPForwarder(
                name, host, port, remote.destination, opener, tunnel_acl, clock
            )
            try:
                await runtime.udp.start()
            except (OSError, asyncssh.Error) as exc:
                raise _start_failure(exc, host, port, "udp") from None
        if len(runtime.ports) > 1:
            runtime.proxy = TunnelProxy(
                name,
                host,
                port,
                tcp_port,
                remote,
                tunnel_acl,
                self.proxy_ssl,
                self._http_session,
                cors=self.settings.proxy_cors,
            )
            try:
                await runtime.proxy.start()
            except OSError as exc:
                raise _start_failure(exc, host, port, "tcp") from None

    # --- timers (one scheduler for all tunnels) --------------------------------------

    def _arm_timers(self, client: Client, tunnel: Tunnel) -> None:
        runtime = tunnel.runtime
        assert runtime is not None
        remote = tunnel.remote
        if remote.auto_close > 0:
            runtime.timers.append(
                self.scheduler.call_later(
                    remote.auto_close / 1e9, lambda: self._expire(client, tunnel, "auto-close")
                )
            )
        if remote.idle_timeout_minutes > 0:
            timeout = remote.idle_timeout_minutes * 60.0
            runtime.timers.append(
                self.scheduler.call_later(timeout, lambda: self._check_idle(client, tunnel))
            )

    def _check_idle(self, client: Client, tunnel: Tunnel) -> None:
        runtime = tunnel.runtime
        if runtime is None or runtime.closed:
            return
        timeout = tunnel.remote.idle_timeout_minutes * 60.0
        idle_for = self.scheduler.now() - runtime.last_active()
        if idle_for > timeout:
            self._expire(client, tunnel, f"inactive for {tunnel.remote.idle_timeout_minutes} min")
            return
        runtime.timers = [t for t in runtime.timers if not t.cancelled]
        runtime.timers.append(
            self.scheduler.call_later(timeout - idle_for, lambda: self._check_idle(client, tunnel))
        )

    def _expire(self, client: Client, tunnel: Tunnel, why: str) -> None:
        if tunnel not in self._running:
            return
        log.info("client %s: closing tunnel %s (%s)", client.id, tunnel.id, why)
        self._stop(tunnel)
        self._forget(client, tunnel)

    # --- stopping -------------------------------------------------------------------

    def _stop(self, tunnel: Tunnel) -> None:
        runtime = tunnel.runtime
        self._running.pop(tunnel, None)
        if runtime is None:
            return
        if not runtime.closed:
            sent, received = runtime.traffic()
            before = self._stopped_traffic
            self._stopped_traffic = (before[0] + sent, before[1] + received)
        runtime.close()
        for port in runtime.ports:
            self.ports.release(port)
        runtime.ports = []

    def _forget(self, client: Client, tunnel: Tunnel) -> None:
        if tunnel in client.tunnels:
            client.tunnels.remove(tunnel)
        self.client_changed(client)

    def stop_client_tunnels(self, client: Client) -> None:
        """Stop every tunnel of a disconnected client; keep them in its record."""
        for tunnel in client.tunnels:
            if isinstance(tunnel, Tunnel):
                self._stop(tunnel)
                if tunnel.runtime is not None and tunnel.runtime.tcp is not None:
                    tunnel.runtime.tcp.cancel_pending()

    def find(self, client: Client, tunnel_id: str) -> Tunnel | None:
        for tunnel in client.tunnels:
            if isinstance(tunnel, Tunnel) and tunnel.id == tunnel_id:
                return tunnel
        return None

    def terminate(self, client: Client, tunnel: Tunnel, *, force: bool) -> None:
        """Close a tunnel (refused while connections are open unless ``force``)."""
        runtime = tunnel.runtime
        if runtime is not None and not force and runtime.active_connections > 0:
            raise TunnelError(f"tunnel has {runtime.active_connections} active connection(s)")
        log.info("client %s: terminating tunnel %s (force: %s)", client.id, tunnel.id, force)
        self._stop(tunnel)
        self._forget(client, tunnel)

    def set_acl(self, client: Client, tunnel: Tunnel, acl: str | None) -> None:
        """Replace the ACL of a running tunnel (``None`` removes it)."""
        try:
            parsed = TunnelACL.parse(acl) if acl is not None else None
        except ACLError as exc:
            raise bad_request(str(exc)) from None
        tunnel.remote.acl = acl
        if tunnel.runtime is not None:
            tunnel.runtime.acl = parsed
        self.client_changed(client)

    # --- API creation ----------------------------------------------------------------

    @asynccontextmanager
    async def _client_lock(self, client_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.setdefault(client_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                yield
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._locks[client_id]

    async def create(self, client: Client, request: TunnelRequest, owner: str) -> Tunnel:
        """Check and start a tunnel asked for through the API (upstream's order of checks)."""
        conn = client.connection
        if conn is None:
            raise TunnelError(f"client with id {client.id} not found", 404)
        remote = request.remote
        async with self._client_lock(client.id):
            await self._check_allowed(conn, remote)
            for existing in client.tunnels:
                if _remote_of(existing).key() == remote.key():
                    raise bad_request("Tunnel already exist.", code=TUNNEL_EXIST)
            for existing in client.tunnels:
                other = _remote_of(existing)
                if (
                    other.destination == remote.destination
                    and _protocols_overlap(other.protocol, remote.protocol)
                    and other.acl == remote.acl
                ):
                    raise bad_request(
                        f"Tunnel to port {remote.rport} already exists.", code=TUNNEL_TO_PORT_EXIST
                    )
            if request.check_port and remote.protocol in ("tcp", "tcp+udp"):
                await self._check_remote_port(conn, remote)
            if remote.local_specified:
                self._check_local_port_free(remote)
            remote.owner = owner
            if client.connection is not conn:
                raise TunnelError(f"client with id {client.id} not found", 404)
            tunnel = await self.start_tunnel(client, conn, remote)
            self.client_changed(client)
            return tunnel

    @staticmethod
    async def _check_allowed(conn: ClientConnection, remote: Remote) -> None:
        try:
            allowed = await conn.check_tunnel_allowed(remote.destination)
        except RequestFailed as exc:
            if "unknown request" in exc.text:
                return
            raise TunnelError(exc.text) from None
        except (TimeoutError, ConnectionClosed):
            raise TunnelError("the client did not answer check_tunnel_allowed") from None
        if not allowed:
            raise bad_request("Tunnel destination is not allowed by client configuration.")

    async def _check_remote_port(self, conn: ClientConnection, remote: Remote) -> None:
        timeout = self.settings.check_port_timeout
        try:
            result = await conn.check_port(remote.destination, timeout)
        except RequestFailed as exc:
            raise TunnelError(exc.text) from None
        except (TimeoutError, ConnectionClosed):
            raise TunnelError("the client did not answer check_port") from None
        if not result.open:
            raise bad_request(
                f"Port {remote.rport} is not in listening state.",
                detail=result.error,
                code=REMOTE_PORT_NOT_OPEN,
            )

    def _check_local_port_free(self, remote: Remote) -> None:
        """Any listener on the port, on any address, makes it busy (as upstream)."""
        port = int(remote.lport)
        if port > 65535:
            return  # not a port at all: the allowed-ports check words the refusal
        protocols = ["tcp", "udp"] if remote.protocol == "tcp+udp" else [remote.protocol]
        busy = port in self.ports.in_use or not all(
            port_is_free(port, ZERO_HOST, p == "udp") for p in protocols
        )
        if busy:
            raise bad_request(f"Port {port} already in use.", code=LOCAL_PORT_IN_USE)
