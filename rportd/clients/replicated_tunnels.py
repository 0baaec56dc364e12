"""Each client's tunnels, replicated so that they follow the client to another node.

A reconnecting client gets back the tunnels of its stored record (protocol.md
§6.6). With HA the node a client fails over to may never have seen it, or
holds an old record: the primary therefore logs every change of a client's
tunnel list as the ``client_tunnels`` data set (``ha.db``), and a secondary
keeps what it receives, giving it to clients it has no record of and
writing it into the records of clients it knows (and that are not connected
there). Running tunnels are not replicated, only their definitions.

Changes are recorded by a write-behind task, a few milliseconds after the
tunnel list changed; a client's running tunnels never wait for a secondary.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from rportd.clients.model import Client, StoredTunnelState, TunnelLike
from rportd.clients.registry import ClientRegistry
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database
from rportd.tasks import BackgroundTask, run_to_end

log = logging.getLogger(__name__)

TunnelList = list[dict[str, Any]]

_UPSERT = "INSERT OR REPLACE INTO client_tunnels (client_id, tunnels) VALUES (:c, :t)"
_DELETE = "DELETE FROM client_tunnels WHERE client_id = :c"
_RUNTIME_KEYS = ("id", "created_at")  # change at every re-creation: not a change of the list


def _definitions(tunnels: TunnelList | None) -> list[dict[str, Any]] | None:
    if tunnels is None:
        return None
    return [{k: v for k, v in t.items() if k not in _RUNTIME_KEYS} for t in tunnels]


def _tunnels_of(doc: Document) -> TunnelList:
    tunnels = doc.get("tunnels")
    return [t for t in tunnels if isinstance(t, dict)] if isinstance(tunnels, list) else []


class ClientTunnels:
    """The ``client_tunnels`` data set: tunnel definitions by client id."""

    dataset = "client_tunnels"

    def __init__(self, db: Database, registry: ClientRegistry) -> None:
        self.db = db
        self.registry = registry
        self.changes: ChangeSink = NULL_SINK
        self._known: dict[str, TunnelList] = {}
        self._pending: dict[str, TunnelList | None] = {}
        self._wakeup = asyncio.Event()
        self._writer = BackgroundTask(self._run, "client-tunnels-recorder")

    async def load(self) -> None:
        """Read the table and take over the registry's reconnect look-up."""
        rows = await self.db.fetch_all("SELECT client_id, tunnels FROM client_tunnels")
        self._known = {
            str(r["client_id"]): _tunnels_of({"tunnels": json.loads(r["tunnels"])}) for r in rows
        }
        self.registry.tunnels_elsewhere = self.tunnels_of
        self.registry.save_listeners.append(self._saved)

    def start(self) -> None:
        """Record what changed while this node could not, then follow the registry."""
        for client in self.registry.all():
            self._saved(client)
        self._writer.start()

    async def stop(self) -> None:
        await self._writer.stop()
        await self.flush()

    def tunnels_of(self, client_id: str) -> list[TunnelLike]:
        """The replicated tunnels of a client this node has no record of."""
        return [StoredTunnelState(dict(t), from_peer=True) for t in self._known.get(client_id, [])]

    # --- recording (primary) ---------------------------------------------------------

    def _saved(self, client: Client) -> None:
        if not self.changes.writable:
            return  # a secondary's own changes flow back with its client records
        tunnels = [t.to_json() for t in client.tunnels]
        if client.id not in self._pending:
            known = self._known.get(client.id)
            if known is None and not tunnels:
                return
            if _definitions(known) == _definitions(tunnels):
                return
        self._pending[client.id] = tunnels
        self._wakeup.set()

    async def forget(self, client_id: str) -> None:
        """The client was deleted: so are its tunnels (everywhere, on the primary)."""
        if self.changes.writable:
            self._pending[client_id] = None
            self._wakeup.set()
        elif self._known.pop(client_id, None) is not None:
            await self.db.execute(_DELETE, {"c": client_id})

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                await run_to_end(self.flush())
            except Exception:
                log.exception("recording the tunnels of clients failed")

    async def flush(self) -> None:
        """Write and log every pending tunnel list."""
        batch, self._pending = self._pending, {}
        if not batch or not self.changes.writable:
            return
        async with self.db.transaction() as tx:
            for client_id, tunnels in batch.items():
                if tunnels is None:
                    await tx.execute(_DELETE, {"c": client_id})
                    await self.changes.record(tx, self.dataset, client_id, None)
                else:
                    await tx.execute(_UPSERT, {"c": client_id, "t": json.dumps(tunnels)})
                    await self.changes.record(tx, self.dataset, client_id, {"tunnels": tunnels})
        for client_id, tunnels in batch.items():
            if tunnels is None:
                self._known.pop(client_id, None)
            else:
                self._known[client_id] = tunnels

    # --- ReplicatedDataset ------------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all("SELECT client_id, tunnels FROM client_tunnels")
        return {str(r["client_id"]): {"tunnels": json.loads(r["tunnels"])} for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        if doc is None:
            await self.db.execute(_DELETE, {"c": key})
            self._known.pop(key, None)
            return
        tunnels = _tunnels_of(doc)
        await self.db.execute(_UPSERT, {"c": key, "t": json.dumps(tunnels)})
        self._known[key] = tunnels
        self._into_record(key, tunnels)

    async def restore(self, docs: dict[str, Document]) -> None:
        known = {key: _tunnels_of(doc) for key, doc in docs.items()}
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM client_tunnels")
            await tx.execute_many(_UPSERT, [{"c": k, "t": json.dumps(t)} for k, t in known.items()])
        self._known = known
        for key, tunnels in known.items():
            self._into_record(key, tunnels)

    def _into_record(self, client_id: str, tunnels: TunnelList) -> None:
        """What the primary knows is newer than this node's record of a client not here."""
        client = self.registry.get(client_id)
        if client is None or client.connection is not None:
            return
        client.tunnels = list(self.tunnels_of(client_id))
        ids = [int(t["id"]) for t in tunnels if str(t.get("id", "")).isdigit()]
        client.next_tunnel_id = max([client.next_tunnel_id, *ids])
        self.registry.repo.save(client)
