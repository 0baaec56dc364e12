"""Every known client, and the rules that bind connections to them (protocol.md §4.5, §8.3)."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from rportd.clients.model import Client, StoredTunnelState, TunnelLike
from rportd.gotypes import utcnow
from rportd.store.clients import ClientRepository
from rportd.wire.messages import ConnectionRequest, Remote

if TYPE_CHECKING:
    from rportd.clients.connection import ClientConnection
    from rportd.tunnels.service import TunnelService

log = logging.getLogger(__name__)


class RegistrationError(Exception):
    """``new_connection`` refused; the text goes to the client as is."""


@dataclass(frozen=True)
class RegistrySettings:
    """The ``[server]`` keys that shape registration and retention."""

    auth_multiuse_creds: bool = True
    equate_clientauthid_clientid: bool = False
    purge_disconnected_clients: bool = False
    keep_disconnected_clients: float = 3600.0


class ClientRegistry:
    """Client records in memory, persisted through :class:`ClientRepository`."""

    def __init__(
        self, repo: ClientRepository, settings: RegistrySettings, tunnels: TunnelService
    ) -> None:
        self.repo = repo
        self.settings = settings
        self.tunnels = tunnels
        self._clients: dict[str, Client] = {}
        self._by_auth_id: dict[str, set[str]] = {}
        self._registering: dict[str, tuple[asyncio.Lock, list[int]]] = {}
        self.connected_count = 0
        self.save_listeners: list[Callable[[Client], None]] = []
        self.acl_lookup: Callable[[str], list[str] | None] = lambda client_id: None
        self.tunnels_elsewhere: Callable[[str], list[TunnelLike]] = lambda client_id: []
        """Tunnels of a client this node has no record of (HA: as its primary knew them)."""

    async def load(self) -> None:
        """Load stored clients; all of them start disconnected (§8.3)."""
        now = utcnow()
        keep_since = self._keep_since(now) if self.settings.purge_disconnected_clients else None
        for client in await self.repo.load_all(now, keep_since):
            self._index(client)

    # --- lookups -------------------------------------------------------------------

    def _keep_since(self, now: datetime) -> datetime:
        return now - timedelta(seconds=self.settings.keep_disconnected_clients)

    def is_obsolete(self, client: Client, now: datetime | None = None) -> bool:
        """Disconnected for longer than kept (only when purging is on)."""
        if not self.settings.purge_disconnected_clients or client.disconnected_at is None:
            return False
        return client.disconnected_at < self._keep_since(now or utcnow())

    def get(self, client_id: str) -> Client | None:
        """A non-obsolete client by id."""
        client = self._clients.get(client_id)
        if client is None or self.is_obsolete(client):
            return None
        return client

    def get_connected(self, client_id: str) -> Client | None:
        client = self._clients.get(client_id)
        return client if client is not None and client.connection is not None else None

    def all(self) -> Iterator[Client]:
        """Every non-obsolete client."""
        now = utcnow()
        return (c for c in list(self._clients.values()) if not self.is_obsolete(c, now))

    def connected(self) -> Iterator[Client]:
        return (c for c in list(self._clients.values()) if c.connection is not None)

    def by_auth_id(self, auth_id: str) -> list[Client]:
        """Non-obsolete clients that logged in with ``auth_id``."""
        now = utcnow()
        ids = self._by_auth_id.get(auth_id, ())
        return [c for i in ids if (c := self._clients[i]) and not self.is_obsolete(c, now)]

    @property
    def disconnected_count(self) -> int:
        return sum(1 for c in self.all() if not c.connected)

    def _index(self, client: Client) -> None:
        old = self._clients.get(client.id)
        if old is not None:
            self._by_auth_id.get(old.client_auth_id, set()).discard(client.id)
        self._clients[client.id] = client
        self._by_auth_id.setdefault(client.client_auth_id, set()).add(client.id)

    # --- registration ----------------------------------------------------------------

    def client_id_for(self, request: ConnectionRequest, auth_id: str) -> str:
        """The id a connecting client gets (§4.5 step 1)."""
        if request.id:
            return request.id
        if not self.settings.auth_multiuse_creds and self.settings.equate_clientauthid_clientid:
            return auth_id
        return str(uuid.uuid4())

    async def register(
        self, conn: ClientConnection, auth_id: str, request: ConnectionRequest
    ) -> tuple[Client, list[Remote]]:
        """Bind ``conn`` to its client record; return it and the started tunnels."""
        client_id = self.client_id_for(request, auth_id)
        lock, users = self._registering.setdefault(client_id, (asyncio.Lock(), [0]))
        users[0] += 1
        try:
            async with lock:
                return await self._register(conn, auth_id, client_id, request)
        finally:
            users[0] -= 1
            if users[0] == 0:
                del self._registering[client_id]

    async def _register(
        self, conn: ClientConnection, auth_id: str, client_id: str, request: ConnectionRequest
    ) -> tuple[Client, list[Remote]]:
        remotes = list(request.remotes)
        existing = self.get(client_id)
        known_tunnels = (
            existing.tunnels if existing is not None else self.tunnels_elsewhere(client_id)
        )
        if existing is not None:
            resumed = bool(request.session_id) and request.session_id == existing.session_id
            if existing.connected and not resumed:
                raise RegistrationError(
                    f"client is already connected: {existing.name} [{existing.id}]"
                )
        old = self.tunnels.remotes_to_reestablish(known_tunnels, remotes)
        if old:
            old = await self.tunnels.filter_allowed(conn, request.version, old)
        from_peer = any(isinstance(t, StoredTunnelState) and t.from_peer for t in known_tunnels)
        if existing is not None:
            previous = existing.connection
            if previous is not None and previous is not conn:
                # Session resume: the old connection is dead to the client; close it
                # without letting its teardown mark the resumed client disconnected.
                existing.connection = None
                self.connected_count -= 1
                self.tunnels.stop_client_tunnels(existing)
                previous.close()
        if not self.settings.auth_multiuse_creds and any(
            c.id != client_id for c in self.by_auth_id(auth_id)
        ):
            raise RegistrationError(f'client auth ID is already in use: "{auth_id}"')

        client = existing or Client(id=client_id, allowed_user_groups=self.acl_lookup(client_id))
        client.update_from_request(request, auth_id, conn.peer_host)
        client.disconnected_at = None
        client.last_heartbeat_at = client.connected_at = utcnow()
        client.connection = conn
        self.connected_count += 1
        self._index(client)
        try:
            await self.tunnels.start_client_tunnels(client, conn, remotes)
            restored = await self.tunnels.start_client_tunnels(
                client, conn, old, skip_failing=from_peer
            )
            client.restored_tunnels = list(restored)
            remotes.extend(t.remote for t in restored)
        except BaseException as exc:
            # The tunnel service words its errors as upstream does (port refusals
            # as they are, start failures as "unable to start tunnel: ...").
            self.disconnect(conn, client)
            if isinstance(exc, Exception):
                raise RegistrationError(str(exc)) from None
            raise
        self._persist(client)
        return client, remotes

    @property
    def keeps_no_disconnected(self) -> bool:
        """``keep_disconnected_clients = 0`` with purging on: forget clients as they leave."""
        return (
            self.settings.purge_disconnected_clients
            and self.settings.keep_disconnected_clients == 0
        )

    def disconnect(self, conn: ClientConnection, client: Client) -> bool:
        """Mark ``client`` disconnected if ``conn`` is still its connection (§8.3).

        Returns whether the client is now forgotten (:attr:`keeps_no_disconnected`).
        """
        if client.connection is not conn:
            return False
        client.connection = None
        self.connected_count -= 1
        self.tunnels.stop_client_tunnels(client)
        if self.keeps_no_disconnected:
            self.delete(client.id)
            return True
        client.disconnected_at = utcnow()
        self._persist(client)
        return False

    def _persist(self, client: Client) -> None:
        self.repo.save(client)
        for listener in self.save_listeners:
            listener(client)

    def save(self, client: Client) -> None:
        """Persist changes made to ``client``."""
        if self._clients.get(client.id) is client:
            self._persist(client)

    async def follow_tunnels(self, client: Client, record: Client) -> bool:
        """Bring a connected client's tunnels in line with a newer ``record`` of it.

        ``record`` comes from the HA node that served the client until it came
        here, written after the (older) record its tunnels were re-established
        from: tunnels made there are started, re-established ones it no longer
        had are stopped. Done once per connection; returns whether it was done.
        """
        conn, restored = client.connection, client.restored_tunnels
        if conn is None or restored is None:
            return False
        client.restored_tunnels = None
        await self.tunnels.follow(client, conn, record.tunnels, restored)
        self._persist(client)
        return True

    def adopt(self, client: Client) -> None:
        """Take a record made elsewhere (sync back from a secondary); not connected here."""
        current = self._clients.get(client.id)
        if current is not None and current.connection is not None:
            return
        for tunnel in client.tunnels:
            if isinstance(tunnel, StoredTunnelState):
                tunnel.from_peer = True
        client.connection = None
        if client.disconnected_at is None:
            client.disconnected_at = utcnow()
        self._index(client)
        self.repo.save(client)

    def delete(self, client_id: str) -> None:
        """Forget a client (it must not be connected)."""
        client = self._clients.pop(client_id, None)
        if client is not None:
            self._by_auth_id.get(client.client_auth_id, set()).discard(client_id)
        self.repo.delete(client_id)

    def purge(self) -> list[str]:
        """Delete obsolete clients; return their ids."""
        now = utcnow()
        doomed = [c.id for c in self._clients.values() if self.is_obsolete(c, now)]
        for client_id in doomed:
            self.delete(client_id)
        return doomed
