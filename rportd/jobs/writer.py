"""Job writes off the request path: what arrives while one commit runs goes into the next.

A command round trip used to wait for two SQLite commits (the started job,
then its result), and a multi-job on 1,000 clients made 2,000 of them.
:class:`JobWriter` keeps the newest unstored version of each job in memory,
where reads find it at once, and stores everything queued in one transaction.
The newest single-client jobs stay in memory after they are stored, so a caller
polling for a result is answered without reading ``jobs.db``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict

from rportd.jobs.model import STATUS_RUNNING, Job
from rportd.jobs.repository import KIND_JOBS, JobRepository

log = logging.getLogger(__name__)

RECENT_JOBS = 1000


class JobWriter:
    """Stores jobs in batches, one transaction each, in the order they were queued."""

    def __init__(self, repo: JobRepository, recent: int = RECENT_JOBS) -> None:
        self.repo = repo
        self._queued: dict[str, Job] = {}
        self._writing: dict[str, Job] = {}
        # Single-client jobs as stored, newest last; any other write of a job
        # (HA sync back) drops its copy here.
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._recent_max = recent
        repo.write_listeners.append(self._written)
        self._stored: asyncio.Future[None] | None = None  # done when the queued batch is stored
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="job-writer")

    async def stop(self) -> None:
        """Store what is queued, then stop."""
        await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    def put(self, job: Job) -> asyncio.Future[None]:
        """Queue ``job`` for storing; the future is done once it is committed (or failed).

        A copy still ``running`` is dropped once an ended version is known (queued, being
        stored or kept): a client may report the result before it answers ``run_cmd``, and
        :meth:`JobRepository.upsert_rows` never goes back either. The future then waits for
        whatever is being stored.
        """
        known = self.latest(job.jid)
        if job.status != STATUS_RUNNING or known is None or known.status == STATUS_RUNNING:
            self._queued[job.jid] = job
        if self._stored is None:
            self._stored = asyncio.get_running_loop().create_future()
        self._wakeup.set()
        return self._stored

    def latest(self, jid: str) -> Job | None:
        """The newest version of ``jid`` if it is queued, being stored or recently stored."""
        return self._queued.get(jid) or self._writing.get(jid) or self._recent.get(jid)

    def forget_recent(self) -> None:
        """Drop the jobs kept in memory (after jobs were deleted)."""
        self._recent.clear()

    def _written(self, kind: str, jid: str) -> None:
        if kind == KIND_JOBS:
            self._recent.pop(jid, None)

    def _remember(self, jobs: dict[str, Job]) -> None:
        recent = self._recent
        for jid, job in jobs.items():
            if job.multi_job_id is not None:  # a child's schedule_id comes from a join
                continue
            recent[jid] = job
            recent.move_to_end(jid)
        while len(recent) > self._recent_max:
            recent.popitem(last=False)

    async def flush(self) -> None:
        """Wait until everything queued so far is committed."""
        if self._stored is not None:
            await asyncio.shield(self._stored)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._writing, self._queued = self._queued, {}
            stored, self._stored = self._stored, None
            try:
                await self.repo.upsert_rows([job.row() for job in self._writing.values()])
            except Exception:
                log.exception("cannot store %d jobs", len(self._writing))
            else:
                self._remember(self._writing)
            finally:
                self._writing = {}
                if stored is not None and not stored.done():
                    stored.set_result(None)
