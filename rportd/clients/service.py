"""The clients concern: connections, registry, liveness checks and purging."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from rportd.auth.throttle import IpBan, LoginWait
from rportd.clients.connection import ChannelHandler, ClientConnection, RequestHandler
from rportd.clients.credentials import ClientCredentials
from rportd.clients.model import Client
from rportd.clients.registry import ClientRegistry, RegistrationError
from rportd.gotypes import format_time, utcnow
from rportd.metrics.instruments import Metrics
from rportd.tasks import BackgroundTask, run_to_end
from rportd.tunnels.service import version_at_least
from rportd.wire.messages import ConnectionRequest, Remote
from rportd.wire.ssh import RequestFailed, RportServerConnection

log = logging.getLogger(__name__)

PING_PARALLELISM = 100


@dataclass(frozen=True)
class ClientSettings:
    """Connection-level ``[server]`` settings."""

    server_version: str
    monitoring_enabled: bool = True
    max_request_bytes_client: int = 524288
    check_clients_connection_interval: float = 300.0
    check_clients_connection_timeout: float = 30.0
    purge_disconnected_clients_interval: float = 60.0
    new_connection_wait: float = 300.0
    request_timeout: float = 60.0


class ClientService:
    """Everything about client connections, for the rest of the server."""

    def __init__(
        self,
        settings: ClientSettings,
        credentials: ClientCredentials,
        registry: ClientRegistry,
        login_wait: LoginWait,
        ip_ban: IpBan,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.credentials = credentials
        self.registry = registry
        self.login_wait = login_wait
        self.ip_ban = ip_ban
        self.request_handlers: dict[str, RequestHandler] = {
            "updates_status": self._updates_status,
            "ip_addresses": self._ip_addresses,
            "save_measurement": lambda conn, payload: None,
        }
        self.channel_handlers: dict[str, ChannelHandler] = {}
        # Requests over max_request_bytes_client are not served; these may note the loss.
        self.oversized_request_handlers: dict[str, Callable[[ClientConnection, bytes], None]] = {}
        self.disconnect_listeners: list[Callable[[Client], None]] = []
        # HA: whether this node serves a registering client now (None: it does).
        self.admission: Callable[[str], Awaitable[str | None]] | None = None
        self.deleted_listeners: list[Callable[[str], Awaitable[None]]] = []
        self._forgotten: asyncio.Queue[str] = asyncio.Queue()  # deleted as they disconnected
        self._liveness = BackgroundTask(self._check_connections, "liveness")
        self._purger = BackgroundTask(self._purge, "purge-clients")
        self._cleaner = BackgroundTask(self._clean_up_forgotten, "forgotten-clients")

    # --- connections ---------------------------------------------------------------

    def connection_factory(self, ssh: RportServerConnection, ip: str) -> ClientConnection:
        """Owner for a new SSH connection (used by the client listener)."""
        return ClientConnection(ssh, ip, self)

    async def register(
        self, conn: ClientConnection, request: ConnectionRequest
    ) -> tuple[Client, list[Remote]]:
        conn.ssh.expect_stray_ping_reply = not version_at_least(
            request.version, (0, 9, 7)
        ) and version_at_least(request.version, (0, 8, 2))
        if self.admission is not None:
            refusal = await self.admission(request.id or conn.auth_id)
            if refusal is not None:
                raise RegistrationError(refusal)
        client, remotes = await self.registry.register(conn, conn.auth_id, request)
        return client, remotes

    def on_disconnect(self, conn: ClientConnection, client: Client) -> None:
        was_connected = client.connection is conn
        forgotten = self.registry.disconnect(conn, client)
        if was_connected:
            log.info(
                "client %s (%s) disconnected",
                client.id,
                client.name,
                extra={"client_id": client.id, "peer": conn.ip},
            )
            for listener in self.disconnect_listeners:
                listener(client)
        if forgotten:
            self._forgotten.put_nowait(client.id)

    async def delete_client(self, client_id: str) -> None:
        """Forget a (disconnected) client and what belongs to it."""
        self.registry.delete(client_id)
        await self._deleted(client_id)

    async def _deleted(self, client_id: str) -> None:
        for listener in self.deleted_listeners:
            await listener(client_id)

    async def _clean_up(self, client_id: str) -> None:
        """:meth:`_deleted` for a background duty: a failure is logged, the duty goes on."""
        try:
            await run_to_end(self._deleted(client_id))
        except Exception:
            log.exception("cleaning up after deleted client %s failed", client_id)

    def close_all(self) -> None:
        for client in list(self.registry.connected()):
            if client.connection is not None:
                client.connection.close()

    # --- client reports ------------------------------------------------------------

    def _updates_status(self, conn: ClientConnection, payload: bytes) -> None:
        status = _json_object(payload)
        if status is not None and conn.client is not None:
            conn.client.updates_status = status
            self.registry.save(conn.client)

    def _ip_addresses(self, conn: ClientConnection, payload: bytes) -> None:
        addresses = _json_object(payload)
        if addresses is not None and conn.client is not None:
            addresses["updated_at"] = format_time(utcnow())
            conn.client.ext_ip_addresses = addresses
            self.registry.save(conn.client)

    # --- background duties -----------------------------------------------------------

    def start(self, *, purge: bool) -> None:
        """Start the liveness checker and, if enabled, the purger."""
        self._liveness.start()
        self._cleaner.start()
        if purge:
            self._purger.start()

    async def stop(self) -> None:
        await self._liveness.stop()
        await self._purger.stop()
        await self._cleaner.stop()
        while not self._forgotten.empty():
            await self._clean_up(self._forgotten.get_nowait())

    async def _check_connections(self) -> None:
        interval = self.settings.check_clients_connection_interval
        while True:
            await asyncio.sleep(interval)
            started = time.monotonic()
            try:
                checked = await self.check_connections()
            except Exception:
                log.exception("checking client connections failed")
                continue
            log.debug("checked %d client connections in %.1fs", checked, time.monotonic() - started)

    async def check_connections(self) -> int:
        """Ping connected clients that have been quiet; drop the dead ones (§8.2)."""
        interval = self.settings.check_clients_connection_interval
        cutoff = utcnow().timestamp() - (interval - 10)
        quiet = [
            c
            for c in self.registry.connected()
            if c.last_heartbeat_at is None or c.last_heartbeat_at.timestamp() < cutoff
        ]
        gate = asyncio.Semaphore(PING_PARALLELISM)

        async def check(client: Client) -> None:
            async with gate:
                await self._ping(client)

        await asyncio.gather(*(check(c) for c in quiet))
        return len(quiet)

    async def _ping(self, client: Client) -> None:
        conn = client.connection
        if conn is None:
            return
        alive = False
        try:
            reply = await conn.ping(self.settings.check_clients_connection_timeout)
            alive = reply in (b"", b"null")
        except RequestFailed as exc:
            alive = exc.text == "unknown request"
        except (TimeoutError, Exception) as exc:
            log.info("client %s did not answer ping: %r", client.id, exc)
        if alive:
            client.last_heartbeat_at = utcnow()
        elif client.connection is conn:
            log.info(
                "closing connection of unresponsive client %s",
                client.id,
                extra={"client_id": client.id},
            )
            self.on_disconnect(conn, client)
            conn.close()

    async def _purge(self) -> None:
        while True:
            await asyncio.sleep(self.settings.purge_disconnected_clients_interval)
            removed = self.registry.purge()
            for client_id in removed:
                await self._clean_up(client_id)
            if removed:
                log.info("purged %d disconnected clients", len(removed))

    async def _clean_up_forgotten(self) -> None:
        while True:
            await self._clean_up(await self._forgotten.get())


def _json_object(payload: bytes) -> dict[str, object] | None:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None
