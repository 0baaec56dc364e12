"""One client's SSH connection: login, ``new_connection``, requests both ways."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncssh
from asyncssh.channel import SSHChannel
from asyncssh.constants import OPEN_UNKNOWN_CHANNEL_TYPE
from asyncssh.session import SSHSession

from rportd.clients.registry import RegistrationError
from rportd.gotypes import go_dumpb, utcnow
from rportd.store.external import DatabaseError
from rportd.tunnels.service import TunnelError
from rportd.wire.messages import (
    CheckPortResult,
    ConnectionRequest,
    PayloadError,
    decode_is_allowed,
    encode_capabilities,
    encode_check_port,
    encode_check_tunnel_allowed,
    encode_remotes,
)
from rportd.wire.ssh import Failure, Reply, RequestFailed, RportServerConnection
from rportd.wire.websocket import WebSocketTransport

if TYPE_CHECKING:
    from rportd.clients.model import Client
    from rportd.clients.service import ClientService

log = logging.getLogger(__name__)

RequestHandler = Callable[["ClientConnection", bytes], Reply | Awaitable[Reply | None] | None]
"""Handles a client request after registration; ``None`` means no reply."""

ChannelHandler = Callable[
    ["ClientConnection", bytes],
    tuple[SSHChannel[bytes], SSHSession[bytes]],
]
"""Accepts a client-opened channel (or raises :class:`asyncssh.ChannelOpenError`)."""


class ClientConnection(asyncssh.SSHServer):
    """The application side of one client SSH connection."""

    handshake_done: asyncio.Future[None] | None = None

    def __init__(self, ssh: RportServerConnection, ip: str, service: ClientService) -> None:
        self.ssh = ssh
        self.ip = ip
        self.service = service
        self.auth_id = ""
        self.client: Client | None = None
        self.closed = False
        self._registration_timer: asyncio.TimerHandle | None = None
        self._opened = time.monotonic()
        ssh.handler = self

    # --- asyncssh.SSHServer ----------------------------------------------------------

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        svc = self.service
        if svc.login_wait.is_waiting(username):
            log.info(
                "client auth %r from %s: too many requests, please try later", username, self.ip
            )
            svc.metrics.client_refused.labels("login_wait").inc()
            return False
        try:
            expected = await svc.credentials.lookup(username)
        except DatabaseError as exc:
            # Not the client's fault: no failed login counted, and it retries later.
            log.error(
                "client auth %r from %s: cannot check credentials: %s", username, self.ip, exc
            )
            self._close_soon()
            return False
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            log.info(
                "client authentication failed for %r from %s",
                username,
                self.ip,
                extra={"peer": self.ip, "auth_id": username},
            )
            svc.metrics.client_refused.labels("auth").inc()
            svc.login_wait.failed(username)
            svc.ip_ban.failed(self.ip)
            return False
        svc.ip_ban.succeeded(self.ip)
        self.auth_id = username
        return True

    def auth_completed(self) -> None:
        self.service.metrics.ssh_handshake_seconds.observe(time.monotonic() - self._opened)
        if self.handshake_done is not None and not self.handshake_done.done():
            self.handshake_done.set_result(None)
        loop = asyncio.get_running_loop()
        self._registration_timer = loop.call_later(
            self.service.settings.new_connection_wait, self._registration_expired
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._registration_timer is not None:
            self._registration_timer.cancel()
        for task in list(self.ssh._tasks):
            task.cancel()
        if self.client is not None:
            self.service.on_disconnect(self, self.client)

    # --- requests from the client ------------------------------------------------------

    @property
    def websocket(self) -> WebSocketTransport | None:
        """The WebSocket this connection runs over (for pings below SSH)."""
        transport = self.ssh.get_extra_info("websocket")
        return transport if isinstance(transport, WebSocketTransport) else None

    @property
    def peer_host(self) -> str:
        return str(self.ssh.peer_address[0])

    def global_request(
        self, name: str, payload: bytes, want_reply: bool
    ) -> Reply | Awaitable[Reply | None] | None:
        limit = self.service.settings.max_request_bytes_client
        if self.client is None:
            if name != "new_connection":
                self._close_soon()
                return Failure("expecting connection request")
            if len(payload) > limit:
                self._close_soon()
                return Failure(
                    f"request data exceeds the limit of {limit} bytes, actual size: {len(payload)}"
                )
            return self._register(payload)
        if len(payload) > limit:
            log.info(
                "ignoring %s request of %d bytes from client %s: over max_request_bytes_client",
                name,
                len(payload),
                self.client.id,
            )
            oversized = self.service.oversized_request_handlers.get(name)
            if oversized is not None:
                oversized(self, payload)
            return Failure(f"request data exceeds the limit of {limit} bytes")
        if name == "ping":
            self.client.last_heartbeat_at = utcnow()
            return b""
        if name == "new_connection":
            log.info("client %s sent a second new_connection; disconnecting it", self.client.id)
            self.service.on_disconnect(self, self.client)
            self._close_soon()
            return Failure("unexpected connection request. please reconnect")
        handler = self.service.request_handlers.get(name)
        if handler is None:
            return Failure("unknown request")
        return handler(self, payload)

    async def _register(self, payload: bytes) -> Reply:
        if self._registration_timer is not None:
            self._registration_timer.cancel()
        try:
            request = ConnectionRequest.decode(payload)
            client, remotes = await self.service.register(self, request)
        except (PayloadError, RegistrationError, TunnelError, RequestFailed) as exc:
            log.info(
                "refused client connection from %s (%s): %s",
                self.ip,
                self.auth_id,
                exc,
                extra={"peer": self.ip, "auth_id": self.auth_id},
            )
            self.service.metrics.client_refused.labels("registration").inc()
            self._close_soon()
            return Failure(str(exc))
        if self.closed:
            self.service.on_disconnect(self, client)
            return Failure("connection closed")
        self.client = client
        self.service.metrics.client_connects.inc()
        log.info(
            "client %s (%s) connected from %s",
            client.id,
            client.name,
            self.ip,
            extra={"client_id": client.id, "peer": self.ip},
        )
        asyncio.get_running_loop().call_soon(self._send_capabilities)
        return encode_remotes(remotes if request.remotes or remotes else None)

    def _send_capabilities(self) -> None:
        svc = self.service
        self.ssh.notify(
            "put_capabilities",
            encode_capabilities(svc.settings.server_version, svc.settings.monitoring_enabled),
        )

    def _registration_expired(self) -> None:
        if self.client is None and not self.closed:
            log.info("closing client connection from %s: no new_connection request", self.ip)
            self.close()

    def _close_soon(self, delay: float = 1.0) -> None:
        """Close after a refusal, once the reply had time to reach the client."""
        asyncio.get_running_loop().call_later(delay, self.close)

    def channel_requested(
        self, chantype: str, payload: bytes
    ) -> tuple[SSHChannel[bytes], SSHSession[bytes]]:
        handler = self.service.channel_handlers.get(chantype) if self.client else None
        if handler is None:
            raise asyncssh.ChannelOpenError(OPEN_UNKNOWN_CHANNEL_TYPE, "unknown channel type")
        return handler(self, payload)

    # --- requests to the client -------------------------------------------------------

    async def call(self, name: str, payload: Any, timeout: float | None = None) -> bytes:
        """Send a want-reply request; raise :class:`RequestFailed` on a failure reply."""
        data = payload if isinstance(payload, bytes) else go_dumpb(payload)
        return await self.ssh.request(
            name, data, self.service.settings.request_timeout if timeout is None else timeout
        )

    async def ping(self, timeout: float) -> bytes:
        return await self.ssh.request("ping", b"", timeout)

    async def check_port(self, host_port: str, timeout: float) -> CheckPortResult:
        reply = await self.call("check_port", encode_check_port(host_port, int(timeout * 1e9)))
        return CheckPortResult.decode(reply)

    async def check_tunnel_allowed(self, destination: str) -> bool:
        reply = await self.call("check_tunnel_allowed", encode_check_tunnel_allowed(destination))
        try:
            return decode_is_allowed(reply)
        except PayloadError as exc:
            raise RequestFailed(f"invalid client response format: {exc}") from None

    def close(self) -> None:
        """Close the SSH connection (the client reconnects on its own)."""
        if not self.closed:
            self.ssh.abort()
