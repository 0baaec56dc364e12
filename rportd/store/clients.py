"""``clients.db``: client records, written behind in batches."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from rportd.clients.model import Client
from rportd.gotypes import format_db_time, parse_time
from rportd.store.database import Database
from rportd.tasks import BackgroundTask, run_to_end

log = logging.getLogger(__name__)

_UPSERT = (
    "INSERT OR REPLACE INTO clients (id, client_auth_id, disconnected_at, details) "
    "VALUES (:id, :client_auth_id, :disconnected_at, :details)"
)


class ClientRepository:
    """Loads client records at start and persists changes in batches.

    :meth:`save` only marks a client dirty; a flusher writes every dirty
    record in one transaction at most every ``flush_interval`` seconds, so
    thousands of clients connecting at once cost a few transactions.
    """

    def __init__(self, db: Database, flush_interval: float = 0.25) -> None:
        self.db = db
        self._flush_interval = flush_interval
        self._dirty: dict[str, Client] = {}
        self._deleted: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task = BackgroundTask(self._run, "clients-db-flusher")
        self._flush_lock = asyncio.Lock()

    async def load_all(self, now: datetime, keep_since: datetime | None) -> list[Client]:
        """Every stored client; connected ones are marked disconnected at ``now``.

        With ``keep_since`` (purging on), clients disconnected before it are skipped.
        """
        rows = await self.db.fetch_all(
            "SELECT id, client_auth_id, disconnected_at, details FROM clients"
        )
        clients = []
        stale = []
        for row in rows:
            try:
                disconnected = (
                    parse_time(row["disconnected_at"]) if row["disconnected_at"] else None
                )
                client = Client.from_row(
                    row["id"], row["client_auth_id"], disconnected, row["details"]
                )
            except ValueError as exc:
                log.warning("skipping unreadable client %r in clients.db: %s", row["id"], exc)
                continue
            if client.disconnected_at is None:
                client.disconnected_at = now
                stale.append(client)
            elif keep_since is not None and client.disconnected_at < keep_since:
                continue
            clients.append(client)
        if stale:
            await self.db.execute(
                "UPDATE clients SET disconnected_at = :now WHERE disconnected_at IS NULL",
                {"now": format_db_time(now)},
            )
        return clients

    def start(self) -> None:
        """Start the background flusher."""
        self._task.start()

    async def stop(self) -> None:
        """Stop the flusher and write what is pending."""
        await self._task.stop()
        await self.flush()

    def save(self, client: Client) -> None:
        """Schedule ``client`` to be written."""
        self._deleted.discard(client.id)
        self._dirty[client.id] = client
        self._wakeup.set()

    def delete(self, client_id: str) -> None:
        """Schedule the record of ``client_id`` (and its stored tunnels) for deletion."""
        self._dirty.pop(client_id, None)
        self._deleted.add(client_id)
        self._wakeup.set()

    async def flush(self) -> None:
        """Write every pending change now."""
        async with self._flush_lock:
            if not self._dirty and not self._deleted:
                return
            dirty, self._dirty = self._dirty, {}
            deleted, self._deleted = self._deleted, set()
            rows = [c.row() for c in dirty.values()]
            try:
                async with self.db.transaction() as tx:
                    await tx.execute_many(_UPSERT, rows)
                    for client_id in deleted:
                        await tx.execute("DELETE FROM clients WHERE id = :id", {"id": client_id})
            except Exception:
                # Keep the changes for the next attempt unless newer ones replaced them.
                for key, client in dirty.items():
                    self._dirty.setdefault(key, client)
                self._deleted |= deleted - set(self._dirty)
                raise

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(self._flush_interval)
            try:
                await run_to_end(self.flush())
            except Exception:
                log.exception("writing clients.db failed; retrying")
                self._wakeup.set()
                await asyncio.sleep(1.0)
