"""Schedules in ``jobs.db`` (storage.md §2), a replicated dataset.

Documents are the ``schedules`` rows as stored, keyed by id. Every write records
its change in the same transaction, then tells the watchers (the runner) which
schedule changed. Deleting a schedule also deletes its runs, as upstream does.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any, Protocol

from rportd.api.query import (
    ListOptions,
    ListSpec,
    filter_items,
    paginate,
    sql_order,
    sql_where,
)
from rportd.gotypes import format_db_time, parse_time, utcnow
from rportd.jobs.model import STATUS_SUCCESSFUL
from rportd.jobs.requests import JobRequestError
from rportd.schedules.model import ROW_KEYS, LastExecution, Schedule, validate
from rportd.store.changes import NULL_SINK, ChangeSink, Document
from rportd.store.database import Database, Transaction

DATASET = "schedules"

LIST_SPEC = ListSpec(
    sort_fields=frozenset({"id", "created_at", "created_by", "name", "type"}),
    filter_fields=frozenset(
        {"id", "created_at", "created_by", "name", "type", "client_ids", "group_ids"}
    ),
    page_default=20,
    page_max=100,
)
_SQL_COLUMNS = {k: k for k in ("id", "created_at", "created_by", "name", "type")}
_IN_MEMORY = frozenset({"client_ids", "group_ids"})
_DATES = frozenset({"created_at"})

_COLUMNS = ", ".join(ROW_KEYS)
_UPSERT = (
    f"INSERT INTO schedules ({_COLUMNS}) VALUES ({', '.join(':' + k for k in ROW_KEYS)}) "
    "ON CONFLICT (id) DO UPDATE SET created_at = excluded.created_at, "
    "created_by = excluded.created_by, name = excluded.name, schedule = excluded.schedule, "
    "type = excluded.type, details = excluded.details"
)
_UPDATE = (
    "UPDATE schedules SET name = :name, schedule = :schedule, type = :type, "
    "details = :details WHERE id = :id"
)
# The newest run of each schedule that has jobs, with its job counts (storage.md §2).
_LAST_RUNS = """
WITH ranked AS (
    SELECT m.jid AS jid, m.schedule_id AS schedule_id, m.started_at AS started_at,
           ROW_NUMBER() OVER (
               PARTITION BY m.schedule_id
               ORDER BY julianday(m.started_at) DESC, m.jid DESC
           ) AS rn
    FROM multi_jobs m
    WHERE m.schedule_id IN ({ids})
      AND EXISTS (SELECT 1 FROM jobs x WHERE x.multi_job_id = m.jid)
)
SELECT r.schedule_id AS schedule_id, r.started_at AS started_at,
       COUNT(j.jid) AS client_count,
       SUM(CASE WHEN j.status = :successful THEN 1 ELSE 0 END) AS success_count,
       MIN(j.status) AS status, MIN(j.details) AS details
FROM ranked r JOIN jobs j ON j.multi_job_id = r.jid
WHERE r.rn = 1
GROUP BY r.jid
"""


class ScheduleWatcher(Protocol):
    """Told about every change of the stored schedules (after it is committed)."""

    def schedule_changed(self, schedule_id: str, spec: str | None) -> None:
        """``schedule_id`` now has expression ``spec`` (``None``: deleted)."""

    def schedules_replaced(self) -> None:
        """Every schedule may have changed (a replicated snapshot was restored)."""


def not_found(schedule_id: str) -> JobRequestError:
    return JobRequestError(404, f"Cannot find a schedule by the provided id: {schedule_id}")


class ScheduleStore:
    """The ``schedules`` table; a :class:`~rportd.store.changes.ReplicatedDataset`."""

    dataset = DATASET

    def __init__(self, db: Database) -> None:
        self.db = db
        self.changes: ChangeSink = NULL_SINK
        self.watchers: list[ScheduleWatcher] = []

    # --- reads -----------------------------------------------------------------------

    async def page(self, options: ListOptions) -> tuple[list[Schedule], int]:
        """A page of schedules (with their last execution) and the number matching."""
        in_memory = [f for f in options.filters if _IN_MEMORY.intersection(f.fields)]
        sql_filters = [f for f in options.filters if not _IN_MEMORY.intersection(f.fields)]
        where, params = sql_where(sql_filters, _SQL_COLUMNS, _DATES)
        order = sql_order(options.sorts, _SQL_COLUMNS)
        order = f"{order}, rowid" if order else "ORDER BY rowid"
        rows = await self.db.fetch_all(f"SELECT {_COLUMNS} FROM schedules {where} {order}", params)
        items = [Schedule.from_row(r) for r in rows]
        if in_memory:
            items = filter_items(items, in_memory, _value)
        page = paginate(items, options.pagination)
        await self._add_last_executions(page)
        return page, len(items)

    async def get(self, schedule_id: str, *, last_execution: bool = True) -> Schedule | None:
        """One schedule (with its last execution unless told otherwise)."""
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS} FROM schedules WHERE id = :id", {"id": schedule_id}
        )
        if row is None:
            return None
        schedule = Schedule.from_row(row)
        if last_execution:
            await self._add_last_executions([schedule])
        return schedule

    async def specs(self) -> list[tuple[str, str]]:
        """``(id, expression)`` of every schedule."""
        rows = await self.db.fetch_all("SELECT id, schedule FROM schedules ORDER BY rowid")
        return [(str(r["id"]), str(r["schedule"] or "")) for r in rows]

    async def _add_last_executions(self, schedules: list[Schedule]) -> None:
        if not schedules:
            return
        params: dict[str, Any] = {f"s{i}": s.id for i, s in enumerate(schedules)}
        marks = ", ".join(f":{k}" for k in params)
        params["successful"] = STATUS_SUCCESSFUL
        rows = await self.db.fetch_all(_LAST_RUNS.format(ids=marks), params)
        by_id = {str(r["schedule_id"]): r for r in rows}
        for schedule in schedules:
            row = by_id.get(schedule.id)
            if row is None:
                continue
            try:
                started_at = parse_time(str(row["started_at"] or ""))
            except ValueError:
                started_at = None
            schedule.last_execution = LastExecution.of(
                started_at,
                int(row["client_count"] or 0),
                int(row["success_count"] or 0),
                row["status"],
                row["details"],
            )

    async def unfinished_jobs(self, schedule_id: str, started_since: datetime) -> int:
        """Jobs of the schedule's runs that started since then and have not finished."""
        row = await self.db.fetch_one(
            "SELECT COUNT(*) AS n FROM jobs j JOIN multi_jobs m ON j.multi_job_id = m.jid "
            "WHERE m.schedule_id = :id AND j.finished_at IS NULL "
            "AND julianday(j.started_at) >= julianday(:since)",
            {"id": schedule_id, "since": format_db_time(started_since)},
        )
        return int(row["n"]) if row else 0

    # --- writes ------------------------------------------------------------------------

    async def create(self, schedule: Schedule, username: str) -> Schedule:
        """Validate and store a new schedule (id, creation time and creator are set here)."""
        self.changes.ensure_writable(self.dataset)
        await asyncio.to_thread(validate, schedule)
        schedule.id = str(uuid.uuid4())
        schedule.created_at = utcnow()
        schedule.created_by = username
        schedule.last_execution = None
        row = schedule.row()
        async with self.db.transaction() as tx:
            await tx.execute(_UPSERT, row)
            await self.changes.record(tx, self.dataset, schedule.id, row)
        self._changed(schedule.id, schedule.schedule)
        return schedule

    async def update(self, schedule_id: str, schedule: Schedule) -> Schedule:
        """Replace what a schedule runs and when (its creation time and creator stay)."""
        self.changes.ensure_writable(self.dataset)
        await asyncio.to_thread(validate, schedule)
        async with self.db.transaction() as tx:
            existing = await tx.fetch_one(
                f"SELECT {_COLUMNS} FROM schedules WHERE id = :id", {"id": schedule_id}
            )
            if existing is None:
                raise not_found(schedule_id)
            row = {**existing, **schedule.row(), "id": schedule_id}
            row["created_at"], row["created_by"] = existing["created_at"], existing["created_by"]
            await tx.execute(_UPDATE, row)
            await self.changes.record(tx, self.dataset, schedule_id, row)
        self._changed(schedule_id, schedule.schedule)
        updated = await self.get(schedule_id)
        if updated is None:  # deleted meanwhile
            raise not_found(schedule_id)
        return updated

    async def delete(self, schedule_id: str) -> None:
        """Delete a schedule and its runs; 404 if there is none."""
        self.changes.ensure_writable(self.dataset)
        async with self.db.transaction() as tx:
            if not await _delete(tx, schedule_id):
                raise JobRequestError(404, f"cannot find entry by id {schedule_id}")
            await self.changes.record(tx, self.dataset, schedule_id, None)
        self._changed(schedule_id, None)

    def _changed(self, schedule_id: str, spec: str | None) -> None:
        for watcher in self.watchers:
            watcher.schedule_changed(schedule_id, spec)

    # --- ReplicatedDataset ------------------------------------------------------------------

    async def snapshot(self) -> dict[str, Document]:
        rows = await self.db.fetch_all(f"SELECT {_COLUMNS} FROM schedules ORDER BY rowid")
        return {str(r["id"]): _document(r) for r in rows}

    async def apply(self, key: str, doc: Document | None) -> None:
        async with self.db.transaction() as tx:
            if doc is None:
                await _delete(tx, key)
            else:
                await tx.execute(_UPSERT, {**_document(doc), "id": key})
        self._changed(key, None if doc is None else str(doc.get("schedule") or ""))

    async def restore(self, docs: dict[str, Document]) -> None:
        async with self.db.transaction() as tx:
            rows = await tx.fetch_all("SELECT id FROM schedules")
            for row in rows:
                if str(row["id"]) not in docs:
                    await _delete(tx, str(row["id"]))
            for key, doc in docs.items():
                await tx.execute(_UPSERT, {**_document(doc), "id": key})
        for watcher in self.watchers:
            watcher.schedules_replaced()


async def _delete(tx: Transaction, schedule_id: str) -> bool:
    """Delete a schedule row with its runs; whether there was one."""
    deleted = await tx.execute("DELETE FROM schedules WHERE id = :id", {"id": schedule_id})
    params = {"id": schedule_id}
    await tx.execute(
        "DELETE FROM jobs WHERE multi_job_id IN "
        "(SELECT jid FROM multi_jobs WHERE schedule_id = :id)",
        params,
    )
    await tx.execute("DELETE FROM multi_jobs WHERE schedule_id = :id", params)
    return deleted > 0


def _document(row: dict[str, Any]) -> Document:
    return {key: row.get(key) for key in ROW_KEYS}


def _value(schedule: Schedule, name: str) -> object:
    """A schedule's API field for in-memory filters."""
    if name == "client_ids":
        return schedule.job.client_ids
    if name == "group_ids":
        return schedule.job.group_ids
    if name == "created_at":
        return schedule.created_at
    return getattr(schedule, name, None)
