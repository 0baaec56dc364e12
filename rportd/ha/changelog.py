"""The change log of replicated data, and the sink that writes it.

Every change gets a cluster-wide sequence number and the epoch of the
primary that made it. A change of SQLite-held data is logged in a
``rportd_changes`` table of the same file, in the same transaction; changes
of file-held data (and changes received from a primary) are logged in
``ha.db``. One lock is held from a change's numbering until its transaction
ends, so changes commit in sequence order and a reader that stops at
:attr:`ChangeLog.position` never misses one.

With ``[ha] synchronous`` the API answers a request that logged changes only
once a secondary has acknowledged storing the last one: the log notes, in the
request's :func:`tracking_changes` context, the last change it made, and the
API waits for it (:meth:`ChangeLog.wait_replicated`); after the timeout it
answers :class:`WriteNotReplicated`, the change committed here.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from rportd.config.types import format_go_duration
from rportd.gotypes import format_db_time, utcnow
from rportd.store.changes import Document
from rportd.store.database import Database, SqlDatabase, Transaction

log = logging.getLogger(__name__)

TABLE = "rportd_changes"
_DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, "
    "dataset TEXT NOT NULL, key TEXT NOT NULL, doc TEXT, at TEXT NOT NULL)"
)
_INSERT = (
    f"INSERT OR REPLACE INTO {TABLE} (seq, epoch, dataset, key, doc, at) "
    "VALUES (:seq, :epoch, :dataset, :key, :doc, :at)"
)
_LOCKED = "rportd.changelog.locked"
_MIRROR_DDL = (
    "CREATE TABLE IF NOT EXISTS rportd_file_mirror (dataset TEXT NOT NULL, key TEXT NOT NULL, "
    "doc TEXT NOT NULL, PRIMARY KEY (dataset, key)) WITHOUT ROWID"
)
_MIRROR_PUT = (
    "INSERT OR REPLACE INTO rportd_file_mirror (dataset, key, doc) VALUES (:dataset, :key, :doc)"
)
_MIRROR_DEL = "DELETE FROM rportd_file_mirror WHERE dataset = :dataset AND key = :key"


class ReadOnlyReplica(Exception):
    """This node follows a primary: replicated data only changes by replication."""


class WriteNotReplicated(Exception):
    """Changes committed on this primary that no secondary confirmed in time."""


@dataclass
class TrackedChanges:
    """The last change logged within a :func:`tracking_changes` block (0: none)."""

    last: int = 0


_TRACKED: ContextVar[TrackedChanges | None] = ContextVar("rportd_tracked_changes", default=None)


@contextmanager
def tracking_changes() -> Iterator[TrackedChanges]:
    """Note the changes logged in this block (and in tasks it starts)."""
    tracked = TrackedChanges()
    token = _TRACKED.set(tracked)
    try:
        yield tracked
    finally:
        _TRACKED.reset(token)


@dataclass(frozen=True)
class Change:
    """One logged change of a replicated document."""

    seq: int
    epoch: int
    dataset: str
    key: str
    doc: Document | None
    at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "epoch": self.epoch,
            "dataset": self.dataset,
            "key": self.key,
            "doc": self.doc,
            "at": self.at,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Change:
        doc = obj.get("doc")
        return cls(
            seq=int(obj["seq"]),
            epoch=int(obj["epoch"]),
            dataset=str(obj["dataset"]),
            key=str(obj["key"]),
            doc=doc if isinstance(doc, dict) else None,
            at=str(obj.get("at", "")),
        )

    def row(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "epoch": self.epoch,
            "dataset": self.dataset,
            "key": self.key,
            "doc": None if self.doc is None else json.dumps(self.doc),
            "at": self.at,
        }


async def _mirror(tx: Transaction, change: Change) -> None:
    values = {"dataset": change.dataset, "key": change.key}
    if change.doc is None:
        await tx.execute(_MIRROR_DEL, values)
    else:
        await tx.execute(_MIRROR_PUT, {**values, "doc": json.dumps(change.doc)})


def _change(row: dict[str, Any]) -> Change:
    doc = json.loads(row["doc"]) if row["doc"] else None
    return Change(
        int(row["seq"]), int(row["epoch"]), str(row["dataset"]), str(row["key"]), doc, row["at"]
    )


@dataclass
class Replica:
    """A secondary reading the log, and the newest change it has stored."""

    name: str
    position: int = 0


class ChangeLog:
    """Numbers, stores and serves changes of replicated data (a ``ChangeSink``)."""

    def __init__(self, own: Database, epoch: Callable[[], int]) -> None:
        self.own = own
        self._epoch = epoch
        self._sources: list[SqlDatabase] = [own]
        self._lock = asyncio.Lock()
        self._committed = asyncio.Condition()
        self._next_seq = 1
        self.position = 0
        self.last_epoch = 0
        self.writable = True
        self.mirrored: set[str] = set()  # file-held data sets, mirrored in ``own``
        self.synchronous_timeout: float | None = None  # ``[ha] synchronous``: the wait
        self.not_awaited: set[str] = set()  # data sets no API answer waits for
        self._replicas: dict[int, Replica] = {}
        self._replicated_waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def open(self, sources: Iterable[SqlDatabase]) -> None:
        """Create the log tables and find where the log stands."""
        for db in sources:
            if db not in self._sources:
                self._sources.append(db)
        for db in self._sources:
            await db.execute(_DDL)
        await self.own.execute(_MIRROR_DDL)
        last = await self._last_entry()
        if last is not None:
            self.position, self.last_epoch = last.seq, last.epoch
        self._next_seq = self.position + 1

    async def _last_entry(self) -> Change | None:
        best: Change | None = None
        for db in self._sources:
            row = await db.fetch_one(f"SELECT * FROM {TABLE} ORDER BY seq DESC LIMIT 1")
            if row is not None and (best is None or int(row["seq"]) > best.seq):
                best = _change(row)
        return best

    # --- writing (primary) -------------------------------------------------------

    def ensure_writable(self, dataset: str) -> None:
        if not self.writable:
            raise ReadOnlyReplica(f"{dataset} can only change through replication")

    async def record(
        self, tx: Transaction | None, dataset: str, key: str, doc: Document | None
    ) -> None:
        """Log a change made in ``tx`` (or just made to a file, when ``tx`` is None)."""
        self.ensure_writable(dataset)
        if tx is None:
            async with self.own.transaction() as own_tx:
                await self._record_in(own_tx, dataset, key, doc)
            return
        await self._record_in(tx, dataset, key, doc)

    async def _record_in(
        self, tx: Transaction, dataset: str, key: str, doc: Document | None
    ) -> None:
        if not tx.context.get(_LOCKED):
            await self._lock.acquire()
            tx.context[_LOCKED] = True
            tx.on_end(self._transaction_ended)
        if tx.database not in self._sources:
            await tx.execute(_DDL)
            self._sources.append(tx.database)
        change = Change(
            self._next_seq, self._epoch(), dataset, key, doc, format_db_time(utcnow()) or ""
        )
        self._next_seq += 1
        tracked = _TRACKED.get()
        if tracked is not None and dataset not in self.not_awaited:
            tracked.last = change.seq
        await tx.execute(_INSERT, change.row())
        if dataset in self.mirrored and tx.database is self.own:
            await _mirror(tx, change)

    def _transaction_ended(self, committed: bool) -> None:
        # Runs right after the commit (or rollback), still holding the lock.
        self._lock.release()
        if committed:
            self._advanced()

    def _advanced(self) -> None:
        self.position = self._next_seq - 1
        self.last_epoch = self._epoch()
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._committed:
            self._committed.notify_all()

    # --- synchronous replication (primary) -----------------------------------------

    def attach_replica(self, name: str) -> Replica:
        """A secondary now reads this log (until :meth:`detach_replica`)."""
        replica = Replica(name)
        self._replicas[id(replica)] = replica
        return replica

    def detach_replica(self, replica: Replica) -> None:
        self._replicas.pop(id(replica), None)

    def acknowledge(self, replica: Replica, position: int) -> None:
        """``replica`` has stored every change up to ``position``."""
        replica.position = max(replica.position, position)
        replicated = self.replicated_position
        done = [w for w in self._replicated_waiters if w[0] <= replicated]
        for waiter in done:
            self._replicated_waiters.remove(waiter)
            if not waiter[1].done():
                waiter[1].set_result(None)

    @property
    def replicated_position(self) -> int:
        """The newest change stored by at least one connected secondary."""
        return max((f.position for f in self._replicas.values()), default=0)

    async def wait_replicated(self, seq: int) -> None:
        """With ``synchronous_timeout`` set: wait until a secondary has stored ``seq``.

        Raises :class:`WriteNotReplicated` after the timeout; the changes stay
        committed here and in the log.
        """
        timeout = self.synchronous_timeout
        if timeout is None or self.replicated_position >= seq:
            return
        waiter = (seq, asyncio.get_running_loop().create_future())
        self._replicated_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout)
        except TimeoutError:
            raise WriteNotReplicated(self._not_replicated(seq, timeout)) from None
        finally:
            if waiter in self._replicated_waiters:
                self._replicated_waiters.remove(waiter)

    def _not_replicated(self, seq: int, timeout: float) -> str:
        replicas = sorted(self._replicas.values(), key=lambda f: -f.position)
        if replicas:
            who = "; ".join(
                f"secondary {f.name} has stored changes up to {f.position}" for f in replicas
            )
        else:
            who = "no secondary is connected"
        return (
            f"the change is stored on this primary (change {seq}) but no secondary confirmed "
            f"it within {format_go_duration(timeout)} ([ha] synchronous_timeout): {who}. "
            "It stays stored here and reaches the secondaries when they catch up "
            "(GET /api/v1/ha/status shows their lag); it is lost only if this primary's "
            "data is lost, or a secondary is promoted, before then. Read it back before "
            "writing it again."
        )

    # --- writing (secondary) -----------------------------------------------------

    async def append(self, changes: list[Change]) -> None:
        """Log changes received from the primary, in order, with their numbers."""
        if not changes:
            return
        async with self._lock:
            async with self.own.transaction() as tx:
                await tx.execute_many(_INSERT, [c.row() for c in changes])
                for change in changes:
                    if change.dataset in self.mirrored:
                        await _mirror(tx, change)
            self.position = changes[-1].seq
            self.last_epoch = changes[-1].epoch
            self._next_seq = self.position + 1
        await self._notify()

    async def reset(self, position: int, epoch: int) -> None:
        """Forget the log (after a snapshot): the log now starts after ``position``."""
        async with self._lock:
            for db in self._sources:
                await db.execute(f"DELETE FROM {TABLE}")
            marker = Change(position, epoch, "", "", None, format_db_time(utcnow()) or "")
            if position:
                await self.own.execute(_INSERT, marker.row())
            self.position, self.last_epoch = position, epoch
            self._next_seq = position + 1

    # --- the mirror of file-held data sets ---------------------------------------------

    async def mirror_of(self, dataset: str) -> dict[str, Document]:
        """What the log says ``dataset`` (file-held) contains."""
        rows = await self.own.fetch_all(
            "SELECT key, doc FROM rportd_file_mirror WHERE dataset = :d", {"d": dataset}
        )
        return {str(r["key"]): json.loads(r["doc"]) for r in rows}

    async def set_mirror(self, dataset: str, docs: dict[str, Document]) -> None:
        """Replace the mirror of ``dataset`` (a snapshot was restored, or first start)."""
        async with self.own.transaction() as tx:
            await tx.execute("DELETE FROM rportd_file_mirror WHERE dataset = :d", {"d": dataset})
            await tx.execute_many(
                "INSERT INTO rportd_file_mirror (dataset, key, doc) VALUES (:d, :k, :doc)",
                [{"d": dataset, "k": k, "doc": json.dumps(v)} for k, v in docs.items()],
            )

    # --- reading ---------------------------------------------------------------------

    async def read(self, after: int, limit: int = 500) -> list[Change]:
        """Committed changes with ``after < seq <= position``, in order."""
        top = self.position
        if after >= top:
            return []
        streams = []
        for db in list(self._sources):
            rows = await db.fetch_all(
                f"SELECT * FROM {TABLE} WHERE seq > :after AND seq <= :top "
                "AND dataset != '' ORDER BY seq LIMIT :limit",
                {"after": after, "top": top, "limit": limit},
            )
            streams.append([_change(r) for r in rows])
        return list(heapq.merge(*streams, key=lambda c: c.seq))[:limit]

    async def entry(self, seq: int) -> Change | None:
        """The log entry numbered ``seq`` (a snapshot marker counts)."""
        for db in self._sources:
            row = await db.fetch_one(f"SELECT * FROM {TABLE} WHERE seq = :s", {"s": seq})
            if row is not None:
                return _change(row)
        return None

    async def oldest(self) -> int:
        """The smallest sequence number still in the log (0 when empty)."""
        oldest = 0
        for db in self._sources:
            row = await db.fetch_one(f"SELECT MIN(seq) AS s FROM {TABLE}")
            if row is not None and row["s"] is not None:
                oldest = int(row["s"]) if not oldest else min(oldest, int(row["s"]))
        return oldest

    async def wait_beyond(self, position: int, timeout: float) -> bool:
        """Wait until something past ``position`` is committed (or ``timeout``)."""
        if self.position > position:
            return True
        async with self._committed:
            try:
                await asyncio.wait_for(
                    self._committed.wait_for(lambda: self.position > position), timeout
                )
            except TimeoutError:
                return False
        return True

    async def truncate(self, keep: int) -> None:
        """Drop all but the newest ``keep`` entries."""
        cutoff = self.position - keep
        if cutoff <= 0:
            return
        for db in self._sources:
            await db.execute(f"DELETE FROM {TABLE} WHERE seq <= :c", {"c": cutoff})

    @asynccontextmanager
    async def frozen(self) -> AsyncIterator[None]:
        """Hold writers off (for a consistent snapshot)."""
        async with self._lock:
            yield
