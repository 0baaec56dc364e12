"""Sync back: what a secondary recorded while serving goes to the primary.

Jobs, audit entries and client data, that is.

A secondary notes the key of every such record in a durable outbox
(``ha.db``); when the primary is reachable the records are pushed in
batches and removed from the outbox once the primary has stored them. The
primary stores them idempotently by key, so a batch sent twice (a crash
between push and removal) changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from rportd.ha.peers import PeerClient
from rportd.store.database import Database

log = logging.getLogger(__name__)

BATCH = 200

_DDL = (
    "CREATE TABLE IF NOT EXISTS rportd_outbox (kind TEXT NOT NULL, key TEXT NOT NULL, "
    "PRIMARY KEY (kind, key)) WITHOUT ROWID"
)

Record = dict[str, Any]


class SyncSource(Protocol):
    """Records of one kind that flow back to the primary."""

    kind: str

    async def load(self, keys: list[str]) -> list[Record]:
        """The current records for ``keys`` (missing ones are skipped)."""

    async def store(self, records: list[Record]) -> int:
        """On the primary: store records idempotently; return how many changed anything."""


class Outbox:
    """Keys of records still to send, kept across restarts."""

    def __init__(self, db: Database, enabled: Callable[[], bool]) -> None:
        self.db = db
        self._enabled = enabled
        self._pending: set[tuple[str, str]] = set()
        self._flushing: asyncio.Task[None] | None = None
        self._flush_lock = asyncio.Lock()

    async def open(self) -> None:
        await self.db.execute(_DDL)

    def note(self, kind: str, key: str) -> None:
        """Remember to send ``kind``/``key`` (only while this node is a secondary)."""
        if not self._enabled():
            return
        self._pending.add((kind, key))
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        await asyncio.sleep(0.2)
        await self._flush_now()

    async def close(self) -> None:
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self._flush_now()

    async def _flush_now(self) -> None:
        # Under a lock: a reader must not look at the table while keys it was
        # waiting for are half way from memory to disk.
        async with self._flush_lock:
            batch, self._pending = self._pending, set()
            if batch:
                async with self.db.transaction() as tx:
                    await tx.execute_many(
                        "INSERT OR IGNORE INTO rportd_outbox (kind, key) VALUES (:kind, :key)",
                        [{"kind": k, "key": v} for k, v in batch],
                    )

    async def take(self, kind: str, limit: int) -> list[str]:
        await self._flush_now()
        rows = await self.db.fetch_all(
            "SELECT key FROM rportd_outbox WHERE kind = :kind LIMIT :limit",
            {"kind": kind, "limit": limit},
        )
        return [str(r["key"]) for r in rows]

    async def done(self, kind: str, keys: list[str]) -> None:
        async with self.db.transaction() as tx:
            await tx.execute_many(
                "DELETE FROM rportd_outbox WHERE kind = :kind AND key = :key",
                [{"kind": kind, "key": k} for k in keys],
            )

    async def count(self) -> int:
        await self._flush_now()
        row = await self.db.fetch_one("SELECT COUNT(*) AS n FROM rportd_outbox")
        return int(row["n"]) if row else 0


class SyncBack:
    """Pushes outbox records to the primary; stores pushed records on the primary."""

    def __init__(
        self, outbox: Outbox, sources: Mapping[str, SyncSource], peers: PeerClient
    ) -> None:
        self.outbox = outbox
        self.sources = sources
        self.peers = peers
        self._lock = asyncio.Lock()

    async def push(self, primary: str) -> int:
        """Send everything pending to ``primary``; return how many records went."""
        sent = 0
        async with self._lock:
            for kind, source in self.sources.items():
                while keys := await self.outbox.take(kind, BATCH):
                    records = await source.load(keys)
                    if records:
                        status, body = await self.peers.call(
                            "POST",
                            primary,
                            "/syncback",
                            json={"kind": kind, "records": records},
                            timeout=30.0,
                        )
                        if status != 200:
                            raise OSError(f"primary refused sync back ({status}): {body}")
                    await self.outbox.done(kind, keys)
                    sent += len(records)
        if sent:
            log.info("HA: synced %d records back to %s", sent, primary)
        return sent

    async def receive(self, kind: str, records: list[Record]) -> int:
        source = self.sources.get(kind)
        if source is None:
            raise KeyError(kind)
        return await source.store(records)
