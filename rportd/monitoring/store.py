"""``monitoring.db``: measurements written through a bounded queue, purged by age."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import timedelta
from typing import Any

from rportd.gotypes import format_db_time, utcnow
from rportd.store.database import Database
from rportd.tasks import BackgroundTask, run_to_end

log = logging.getLogger(__name__)

QUEUE_CAPACITY = 10_000
PURGE_INTERVAL = 120.0

_INSERT = (
    "INSERT OR REPLACE INTO measurements (client_id, timestamp, cpu_usage_percent, "
    "memory_usage_percent, io_usage_percent, processes, mountpoints, net_lan_in, net_lan_out, "
    "net_wan_in, net_wan_out) VALUES (:client_id, :timestamp, :cpu, :mem, :io, :processes, "
    ":mountpoints, :lan_in, :lan_out, :wan_in, :wan_out)"
)


def _number(obj: dict[str, Any], key: str) -> float:
    value = obj.get(key)
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _net(obj: dict[str, Any], key: str, direction: str) -> int | None:
    card = obj.get(key)
    if isinstance(card, dict) and isinstance(card.get(direction), int):
        return int(card[direction])
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value)


class MeasurementStore:
    """Accepts measurements without waiting for the disk; drops them when the queue is full."""

    def __init__(self, db: Database, retention_seconds: float) -> None:
        self.db = db
        self.retention = timedelta(seconds=retention_seconds)
        self._queue: list[dict[str, Any]] = []
        self._wakeup = asyncio.Event()
        self._writer_task = BackgroundTask(self._writer, "measurements-writer")
        self._purger_task = BackgroundTask(self._purger, "measurements-purge")
        self.dropped = 0

    def add(self, client_id: str, payload: bytes) -> None:
        """Queue one ``save_measurement`` payload (client id and time are the server's)."""
        try:
            obj = json.loads(payload)
        except ValueError:
            log.debug("ignoring undecodable measurement from %s", client_id)
            return
        if not isinstance(obj, dict):
            return
        if len(self._queue) >= QUEUE_CAPACITY:
            self.dropped += 1
            return
        self._queue.append(
            {
                "client_id": client_id,
                "timestamp": format_db_time(utcnow()),
                "cpu": _number(obj, "cpu_usage_percent"),
                "mem": _number(obj, "memory_usage_percent"),
                "io": _number(obj, "io_usage_percent"),
                "processes": _text(obj.get("processes")),
                "mountpoints": _text(obj.get("mountpoints")),
                "lan_in": _net(obj, "net_lan", "in"),
                "lan_out": _net(obj, "net_lan", "out"),
                "wan_in": _net(obj, "net_wan", "in"),
                "wan_out": _net(obj, "net_wan", "out"),
            }
        )
        self._wakeup.set()

    def start(self) -> None:
        self._writer_task.start()
        self._purger_task.start()

    async def stop(self) -> None:
        await self._writer_task.stop()
        await self._purger_task.stop()
        await self.flush()

    async def flush(self) -> None:
        batch, self._queue = self._queue, []
        if batch:
            async with self.db.transaction() as tx:
                await tx.execute_many(_INSERT, batch)

    async def purge(self) -> None:
        cutoff = format_db_time(utcnow() - self.retention)
        await self.db.execute(
            "DELETE FROM measurements WHERE DATETIME(timestamp) < DATETIME(:cutoff)",
            {"cutoff": cutoff},
        )

    async def _writer(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            await asyncio.sleep(1.0)
            try:
                await run_to_end(self.flush())
            except Exception:
                log.exception("writing monitoring.db failed")

    async def _purger(self) -> None:
        while True:
            await asyncio.sleep(PURGE_INTERVAL)
            try:
                await self.purge()
            except Exception:
                log.exception("purging monitoring.db failed")
