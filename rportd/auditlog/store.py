"""``auditlog.db``: the one repository of audit entries, with period rotation.

Every write goes through :meth:`AuditLog.insert`, which is idempotent: an entry whose
identity (timestamp, application, action, affected id, username, client id) is already
stored is not stored again, so a node can ship entries to another one more than once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rportd.auditlog.entry import COLUMNS, AuditEntry, obfuscate_ip
from rportd.gotypes import parse_time, utcnow
from rportd.store.database import Database
from rportd.tasks import BackgroundTask

log = logging.getLogger(__name__)

FILENAME = "auditlog.db"
ROTATIONS = ("daily", "weekly", "monthly", "yearly")
MAX_SLEEP = 3600.0

_COLS = ", ".join(COLUMNS)
_INSERT = (
    f"INSERT INTO auditlog ({_COLS}) SELECT {', '.join(':' + c for c in COLUMNS)} "
    "WHERE NOT EXISTS (SELECT 1 FROM auditlog WHERE timestamp = :timestamp "
    "AND application = :application AND action = :action AND affected_id IS :affected_id "
    "AND username IS :username AND client_id IS :client_id)"
)


def period_start(moment: datetime, rotation: str) -> datetime:
    """Start (UTC) of the rotation period holding ``moment``."""
    day = moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if rotation == "daily":
        return day
    if rotation == "weekly":
        return day - timedelta(days=day.weekday())
    if rotation == "yearly":
        return day.replace(month=1, day=1)
    return day.replace(day=1)


def next_period_start(moment: datetime, rotation: str) -> datetime:
    """Start (UTC) of the period after the one holding ``moment``."""
    start = period_start(moment, rotation)
    if rotation == "daily":
        return start + timedelta(days=1)
    if rotation == "weekly":
        return start + timedelta(days=7)
    if rotation == "yearly":
        return start.replace(year=start.year + 1)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


class AuditLog:
    """Audit entries of this node; disabled (``enable_audit_log = false``) it stores nothing."""

    def __init__(
        self,
        data_dir: Path,
        *,
        enabled: bool = True,
        rotation: str = "monthly",
        obfuscate: bool = False,
        wal: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.enabled = enabled
        self.rotation = rotation if rotation in ROTATIONS else "monthly"
        self.obfuscate = obfuscate
        self.wal = wal
        self.clock = clock
        self._db: Database | None = None
        self._lock = asyncio.Lock()
        self._waiting: list[tuple[list[AuditEntry], asyncio.Future[list[bool]]]] = []
        self._task = BackgroundTask(self._run, "auditlog-rotation")
        self.listeners: list[Callable[[AuditEntry], None]] = []

    @property
    def path(self) -> Path:
        return self.data_dir / FILENAME

    async def open(self) -> None:
        """Open ``auditlog.db`` (rotating it first if it holds an older period)."""
        if not self.enabled:
            return
        self._db = await self._open_db()
        await self.rotate_if_due()

    async def _open_db(self) -> Database:
        db = Database(self.path, "auditlog", wal=self.wal)
        await db.open()
        return db

    def start(self) -> None:
        """Start the rotation task."""
        if self.enabled:
            self._task.start()

    async def close(self) -> None:
        await self._task.stop()
        async with self._lock:
            if self._db is not None:
                await self._db.close()
                self._db = None

    # --- writes ------------------------------------------------------------------

    async def add(self, entry: AuditEntry) -> bool:
        """Record a new entry of this node (IP obfuscated if configured)."""
        return (await self.add_many([entry]))[0]

    async def add_many(self, entries: list[AuditEntry]) -> list[bool]:
        """Record new entries of this node in one transaction; which ones were stored."""
        for entry in entries:
            if self.obfuscate and entry.remote_ip:
                entry.remote_ip = obfuscate_ip(entry.remote_ip)
        stored = await self.insert_many(entries)
        for entry, is_new in zip(entries, stored, strict=True):
            if is_new:
                for listener in self.listeners:
                    listener(entry)
        return stored

    async def insert(self, entry: AuditEntry) -> bool:
        """Store ``entry`` unless an entry with the same identity exists; True if stored."""
        return (await self.insert_many([entry]))[0]

    async def insert_many(self, entries: list[AuditEntry]) -> list[bool]:
        """:meth:`insert` for several entries, in one transaction.

        Calls that arrive while another one writes are stored together in the
        next transaction (one commit for the results of a whole multi-job).
        """
        if not self.enabled or not entries:
            return [False] * len(entries)
        stored: asyncio.Future[list[bool]] = asyncio.get_running_loop().create_future()
        self._waiting.append((entries, stored))
        async with self._lock:
            if not stored.done():
                await self._write_waiting()
        return stored.result()

    async def _write_waiting(self) -> None:
        """Store every waiting call's entries in one transaction (under ``_lock``)."""
        batch, self._waiting = self._waiting, []
        try:
            if self._db is None:
                results = [[False] * len(entries) for entries, _ in batch]
            else:
                async with self._db.transaction() as tx:
                    results = [
                        [await tx.execute(_INSERT, entry.row()) > 0 for entry in entries]
                        for entries, _ in batch
                    ]
        except Exception as exc:
            for _, future in batch:
                future.set_exception(exc)
            return
        except BaseException:  # cancelled: the others' entries wait for the next writer
            self._waiting[:0] = [(e, f) for e, f in batch if not f.done()]
            raise
        for (_, future), result in zip(batch, results, strict=True):
            future.set_result(result)

    # --- reads -------------------------------------------------------------------

    async def query(
        self, where: str, params: dict[str, object], order: str, limit: str
    ) -> tuple[list[AuditEntry], int]:
        """Entries matching ``where`` (SQL fragments from the list engine) and their total."""
        async with self._lock:
            if self._db is None:
                return [], 0
            rows = await self._db.fetch_all(
                f"SELECT {_COLS} FROM auditlog {where} {order or 'ORDER BY rowid'} {limit}",
                params,
            )
            count = await self._db.fetch_one(f"SELECT COUNT(*) AS n FROM auditlog {where}", params)
        return [AuditEntry.from_row(r) for r in rows], int(count["n"]) if count else 0

    # --- rotation ----------------------------------------------------------------

    async def _oldest(self) -> datetime | None:
        assert self._db is not None
        row = await self._db.fetch_one(
            "SELECT timestamp FROM auditlog WHERE DATETIME(timestamp) IS NOT NULL "
            "ORDER BY DATETIME(timestamp) LIMIT 1"
        )
        if row is None:
            return None
        try:
            return parse_time(str(row["timestamp"]))
        except ValueError:
            return None

    async def rotate_if_due(self) -> bool:
        """Rotate when the file holds entries from before the current period."""
        async with self._lock:
            if self._db is None:
                return False
            oldest = await self._oldest()
            if oldest is None or oldest >= period_start(self.clock(), self.rotation):
                return False
            await self._rotate()
            return True

    def _archive_path(self) -> Path:
        stamp = self.clock().astimezone(UTC).strftime("%Y-%m-%d")
        candidate = self.data_dir / f"auditlog.{stamp}.db"
        n = 1
        while candidate.exists():
            candidate = self.data_dir / f"auditlog.{stamp}.{n}.db"
            n += 1
        return candidate

    async def _rotate(self) -> None:
        assert self._db is not None
        await self._db.close()
        self._db = None
        target = await asyncio.to_thread(self._archive_path)

        def move() -> None:
            os.replace(self.path, target)
            for suffix in ("-wal", "-shm"):
                side = Path(str(self.path) + suffix)
                if side.exists():
                    os.replace(side, Path(str(target) + suffix))

        try:
            await asyncio.to_thread(move)
            log.info("audit log rotated to %s", target.name)
        finally:
            self._db = await self._open_db()

    async def _run(self) -> None:
        while True:
            now = self.clock()
            wait = (next_period_start(now, self.rotation) - now).total_seconds()
            await asyncio.sleep(min(max(wait, 1.0), MAX_SLEEP))
            try:
                await self.rotate_if_due()
            except Exception:
                log.exception("audit log rotation failed")

    # --- HA ----------------------------------------------------------------------

    async def find(self, key: str) -> AuditEntry | None:
        """The stored entry whose :attr:`AuditEntry.key` is ``key``."""
        try:
            stamp, application, action, affected, username, client_id = json.loads(key)
        except (ValueError, TypeError):
            return None
        async with self._lock:
            if self._db is None:
                return None
            row = await self._db.fetch_one(
                f"SELECT {_COLS} FROM auditlog WHERE timestamp = :t AND application = :app "
                "AND action = :act AND affected_id IS :aff AND username IS :u "
                "AND client_id IS :c LIMIT 1",
                {
                    "t": stamp,
                    "app": application,
                    "act": action,
                    "aff": affected,
                    "u": username,
                    "c": client_id,
                },
            )
        return AuditEntry.from_row(row) if row is not None else None

    async def insert_documents(self, docs: list[dict[str, Any]]) -> int:
        """Store shipped entries (idempotent); return how many were new."""
        return sum(await self.insert_many([AuditEntry.from_document(doc) for doc in docs]))
