"""``jobs.db``: every read and write of jobs and multi-client jobs.

All job writes go through :class:`JobRepository`; :meth:`JobRepository.upsert`
and :meth:`JobRepository.save_multi_job` are idempotent by ``jid``, so a
secondary syncing jobs back to the primary can replay them safely.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rportd.api.query import (
    FilterOption,
    ListOptions,
    SortOption,
    sql_limit,
    sql_order,
    sql_where,
)
from rportd.jobs.model import DETAIL_KEYS, STATUS_RUNNING, Job, MultiJob
from rportd.store.database import Database

MULTI_JOB_JOBS_LIMIT = 100

JOB_COLUMNS = {
    "jid": "jobs.jid",
    "status": "jobs.status",
    "started_at": "jobs.started_at",
    "finished_at": "jobs.finished_at",
    "created_by": "jobs.created_by",
    "client_id": "jobs.client_id",
    "multi_job_id": "jobs.multi_job_id",
    "schedule_id": "multi_jobs.schedule_id",
}
JOB_DATE_FIELDS = frozenset({"started_at", "finished_at"})
JOB_DEFAULT_SORT = (SortOption("finished_at", True), SortOption("jid", False))

MULTI_JOB_COLUMNS = {
    "jid": "jid",
    "started_at": "started_at",
    "created_by": "created_by",
    "schedule_id": "schedule_id",
}
MULTI_JOB_DEFAULT_SORT_SQL = "ORDER BY DATETIME(started_at) DESC, jid ASC"

_JOBS_FROM = "FROM jobs LEFT JOIN multi_jobs ON jobs.multi_job_id = multi_jobs.jid"
_ROW_COLUMNS = (
    "jobs.jid AS jid, jobs.status AS status, jobs.started_at AS started_at, "
    "jobs.finished_at AS finished_at, jobs.created_by AS created_by, "
    "jobs.client_id AS client_id, jobs.multi_job_id AS multi_job_id, "
    "multi_jobs.schedule_id AS schedule_id"
)
JOB_ROW_KEYS = (
    "jid",
    "status",
    "started_at",
    "finished_at",
    "created_by",
    "client_id",
    "multi_job_id",
    "details",
)
MULTI_JOB_ROW_KEYS = ("jid", "started_at", "created_by", "schedule_id", "details")
_INSERT = (
    "INTO jobs (jid, status, started_at, finished_at, created_by, client_id, multi_job_id, "
    "details) VALUES (:jid, :status, :started_at, :finished_at, :created_by, :client_id, "
    ":multi_job_id, :details)"
)
# A job that has ended is never replaced by a copy that still says "running".
_UPSERT = (
    "INSERT " + _INSERT + " ON CONFLICT (jid) DO UPDATE SET status = excluded.status, "
    "started_at = excluded.started_at, finished_at = excluded.finished_at, "
    "created_by = excluded.created_by, client_id = excluded.client_id, "
    "multi_job_id = excluded.multi_job_id, details = excluded.details "
    "WHERE jobs.status = 'running' OR excluded.status != 'running'"
)
_SAVE_MULTI_JOB = (
    "INSERT OR REPLACE INTO multi_jobs (jid, started_at, created_by, schedule_id, details) "
    "VALUES (:jid, :started_at, :created_by, :schedule_id, :details)"
)
KIND_JOBS = "jobs"
KIND_MULTI_JOBS = "multi_jobs"


def _detail_columns(fields: set[str], result_fields: set[str]) -> str:
    """Only the ``details`` values a list needs, read with ``json_extract``."""
    parts = [
        f"json_extract(jobs.details, '$.{key}') AS d_{key}"
        for key in DETAIL_KEYS
        if key in fields and key != "result"
    ]
    if result_fields:
        parts.append("json_type(jobs.details, '$.result') AS d_result_type")
        parts.extend(
            f"json_extract(jobs.details, '$.result.{k}') AS d_result_{k}"
            for k in sorted(result_fields)
        )
    return "".join(", " + p for p in parts)


class JobRepository:
    """Jobs and multi-client jobs in ``jobs.db`` (upstream's schema).

    ``write_listeners`` hear ``(kind, jid)`` after every write (HA sync back).
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        self.write_listeners: list[Callable[[str, str], None]] = []

    def _wrote(self, kind: str, jid: str) -> None:
        for listener in self.write_listeners:
            listener(kind, jid)

    # --- jobs: writes ---------------------------------------------------------------

    async def upsert(self, job: Job) -> None:
        """Create or update the job ``job.jid`` (an ended job never goes back to running)."""
        await self.upsert_rows([job.row()])

    async def create_if_absent(self, job: Job) -> bool:
        """Store a just-started job unless its result was stored already."""
        created = await self.db.execute("INSERT OR IGNORE " + _INSERT, job.row()) > 0
        if created:
            self._wrote(KIND_JOBS, job.jid)
        return created

    async def upsert_rows(self, rows: list[dict[str, Any]]) -> int:
        """Upsert ``jobs`` rows by jid (idempotent; also how synced jobs are stored)."""
        async with self.db.transaction() as tx:
            changed = await tx.execute_many(
                _UPSERT, ({k: row.get(k) for k in JOB_ROW_KEYS} for row in rows)
            )
        for row in rows:
            self._wrote(KIND_JOBS, str(row["jid"]))
        return changed

    async def job_rows(self, jids: list[str]) -> list[dict[str, Any]]:
        """The stored ``jobs`` rows of ``jids`` as they are (for sync back)."""
        params = {f"j{i}": jid for i, jid in enumerate(jids)}
        if not params:
            return []
        marks = ", ".join(f":{k}" for k in params)
        return await self.db.fetch_all(f"SELECT * FROM jobs WHERE jid IN ({marks})", params)

    # --- jobs: reads ----------------------------------------------------------------

    async def get(self, jid: str) -> Job | None:
        row = await self.db.fetch_one(
            f"SELECT {_ROW_COLUMNS}, jobs.details AS details {_JOBS_FROM} WHERE jobs.jid = :jid",
            {"jid": jid},
        )
        return Job.from_row(row) if row else None

    async def page(
        self,
        options: ListOptions,
        fields: list[str] | None = None,
        result_fields: list[str] | None = None,
    ) -> list[Job]:
        """Jobs matching ``options``; only the selected detail fields are read (None = all)."""
        where, params = sql_where(options.filters, JOB_COLUMNS, JOB_DATE_FIELDS)
        order = sql_order(options.sorts or list(JOB_DEFAULT_SORT), JOB_COLUMNS)
        limit, limit_params = sql_limit(options.pagination)
        if fields is None:
            details = ", jobs.details AS details"
        else:
            details = _detail_columns(set(fields), set(result_fields or ()))
        rows = await self.db.fetch_all(
            f"SELECT {_ROW_COLUMNS}{details} {_JOBS_FROM} {where} {order} {limit}",
            {**params, **limit_params},
        )
        return [Job.from_row(r) for r in rows]

    async def count(self, filters: list[FilterOption]) -> int:
        where, params = sql_where(filters, JOB_COLUMNS, JOB_DATE_FIELDS)
        row = await self.db.fetch_one(f"SELECT COUNT(*) AS n {_JOBS_FROM} {where}", params)
        return int(row["n"]) if row else 0

    async def running(self) -> list[Job]:
        """Jobs still waiting for their client's result."""
        rows = await self.db.fetch_all(
            f"SELECT {_ROW_COLUMNS}, jobs.details AS details {_JOBS_FROM} WHERE jobs.status = :s",
            {"s": STATUS_RUNNING},
        )
        return [Job.from_row(r) for r in rows]

    # --- multi-client jobs ----------------------------------------------------------------

    async def save_multi_job(self, multi: MultiJob) -> None:
        """Create or replace a multi-client job (without its child jobs)."""
        await self.save_multi_job_rows([multi.row()])

    async def save_multi_job_rows(self, rows: list[dict[str, Any]]) -> int:
        """Upsert ``multi_jobs`` rows by jid (idempotent)."""
        async with self.db.transaction() as tx:
            for row in rows:
                await tx.execute(_SAVE_MULTI_JOB, {k: row.get(k) for k in MULTI_JOB_ROW_KEYS})
        for row in rows:
            self._wrote(KIND_MULTI_JOBS, str(row["jid"]))
        return len(rows)

    async def multi_job_rows(self, jids: list[str]) -> list[dict[str, Any]]:
        params = {f"j{i}": jid for i, jid in enumerate(jids)}
        if not params:
            return []
        marks = ", ".join(f":{k}" for k in params)
        return await self.db.fetch_all(f"SELECT * FROM multi_jobs WHERE jid IN ({marks})", params)

    async def get_multi_job(self, jid: str) -> MultiJob | None:
        """A multi-client job with its newest child jobs."""
        row = await self.db.fetch_one("SELECT * FROM multi_jobs WHERE jid = :jid", {"jid": jid})
        if row is None:
            return None
        multi = MultiJob.from_row(row)
        rows = await self.db.fetch_all(
            f"SELECT {_ROW_COLUMNS}, jobs.details AS details {_JOBS_FROM} "
            "WHERE jobs.multi_job_id = :jid ORDER BY jobs.started_at DESC, jobs.jid ASC "
            f"LIMIT {MULTI_JOB_JOBS_LIMIT}",
            {"jid": jid},
        )
        multi.jobs = [Job.from_row(r) for r in rows]
        return multi

    async def list_multi_jobs(self, options: ListOptions) -> list[MultiJob]:
        where, params = sql_where(options.filters, MULTI_JOB_COLUMNS, frozenset({"started_at"}))
        order = (
            sql_order(options.sorts, MULTI_JOB_COLUMNS)
            if options.sorts
            else MULTI_JOB_DEFAULT_SORT_SQL
        )
        limit, limit_params = sql_limit(options.pagination)
        rows = await self.db.fetch_all(
            f"SELECT jid, started_at, created_by, schedule_id FROM multi_jobs "
            f"{where} {order} {limit}",
            {**params, **limit_params},
        )
        return [MultiJob.from_row(r) for r in rows]

    async def count_multi_jobs(self, filters: list[FilterOption]) -> int:
        where, params = sql_where(filters, MULTI_JOB_COLUMNS, frozenset({"started_at"}))
        row = await self.db.fetch_one(f"SELECT COUNT(*) AS n FROM multi_jobs {where}", params)
        return int(row["n"]) if row else 0

    # --- retention ---------------------------------------------------------------------

    async def cleanup(self, max_jobs: int) -> int:
        """Keep the newest ``max_jobs`` jobs; older multi-jobs go with all their jobs."""
        params = {"keep": max_jobs}
        async with self.db.transaction() as tx:
            await tx.execute(
                "DELETE FROM multi_jobs WHERE jid IN (SELECT multi_job_id FROM jobs "
                "ORDER BY started_at DESC LIMIT -1 OFFSET :keep)",
                params,
            )
            deleted = await tx.execute(
                "DELETE FROM jobs WHERE multi_job_id IN (SELECT multi_job_id FROM jobs "
                "ORDER BY started_at DESC LIMIT -1 OFFSET :keep) AND multi_job_id IS NOT NULL",
                params,
            )
            deleted += await tx.execute(
                "DELETE FROM jobs WHERE jid IN (SELECT jid FROM jobs "
                "ORDER BY started_at DESC LIMIT -1 OFFSET :keep) AND multi_job_id IS NULL",
                params,
            )
        return deleted
